"""`vapi-bench doctor`: what is installed, which device is usable, which optional pieces are missing."""
from __future__ import annotations

import importlib.metadata
import importlib.util

import torch
from rich.console import Console
from rich.table import Table

from .hashing import environment_versions
from .registry import get_registry
from .weights import cache_dir, is_offline

#: optional backends: (import name, distribution, what it enables, how to get it)
OPTIONAL = [
    ("transformers", "transformers", "Janus-Pro, T5 text encoder, Mask2Former detector, FD_DINOv2, PickScore",
     "pip install 'vapi-bench[janus]'"),
    ("open_clip", "open-clip-torch", "GenEval colours, CLIP score, HPS v2", "pip install open-clip-torch"),
    ("lpips", "lpips", "LPIPS rewards (VGG / AlexNet)", "pip install lpips"),
    ("torch_fidelity", "torch-fidelity", "Inception features for FID/IS", "pip install torch-fidelity"),
    ("cleanfid", "clean-fid", "clean-fid metric", "pip install clean-fid"),
    ("mmdet", "mmdet", "mmdet reference for the GenEval detector (optional)", "see docs/tasks-geneval.md (patched mmcv build)"),
]


def report(console: Console) -> None:
    versions = environment_versions()
    table = Table(title="environment", title_justify="left")
    table.add_column("item")
    table.add_column("value")
    for k, v in versions.items():
        table.add_row(k, v)
    cuda = torch.cuda.is_available()
    table.add_row("device", f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu only (no CUDA device)")
    table.add_row("torch threads", str(torch.get_num_threads()))
    table.add_row("weights cache", str(cache_dir()))
    table.add_row("offline mode", "on" if is_offline() else "off")
    console.print(table)

    backends = Table(title="optional backends", title_justify="left")
    for col in ("package", "status", "enables", "to get it"):
        backends.add_column(col)
    for module, dist, enables, how in OPTIONAL:
        if importlib.util.find_spec(module) is None:
            backends.add_row(dist, "[red]missing[/red]", enables, how)
        else:
            backends.add_row(dist, importlib.metadata.version(dist), enables, "")
    console.print(backends)

    cached = sorted(p for p in cache_dir().glob("*/*") if p.is_file()) if cache_dir().exists() else []
    weights = Table(title=f"cached weights ({len(cached)} files)", title_justify="left")
    weights.add_column("file")
    weights.add_column("MB", justify="right")
    for p in cached[:50]:
        weights.add_row(str(p.relative_to(cache_dir())), f"{p.stat().st_size / 1e6:.1f}")
    console.print(weights)

    reg = get_registry()
    console.print(f"plugins loaded: {', '.join(f'{k} {v}' for k, v in sorted(reg.plugins.items())) or 'none'}")
    console.print(f"plugins skipped: {', '.join(f.plugin for f in reg.failures) or 'none'}")
