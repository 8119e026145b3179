"""`vapi-bench doctor`: what is installed, which device is usable, which optional pieces are missing.

Every optional piece is named with the commands that need it, so a missing one is found before a
command fails on it; hard dependencies (pip installed them with vapi-bench) are not listed.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .hashing import environment_versions
from .report.browser import CANDIDATES
from .registry import get_registry
from .weights import cache_dir, is_offline

@dataclass(frozen=True)
class OptionalPiece:
    """A piece vapi-bench runs without, and what needs it. `module` is a Python import name, or
    None for a program found on PATH (`programs`)."""

    name: str
    module: str | None
    needed_by: str  # the commands and options that need it
    how: str
    programs: tuple[str, ...] = ()


#: every optional piece (the hard dependencies in pyproject.toml are not listed: pip installed them)
OPTIONAL = [
    OptionalPiece("tensorboard", "tensorboard", "run / finetune / lab with --set logger=tensorboard",
             "pip install 'vapi-bench[tensorboard]'"),
    OptionalPiece("wandb", "wandb", "run / finetune / lab with --set logger=wandb", "pip install 'vapi-bench[wandb]'"),
    OptionalPiece("datasets", "datasets", "--set dataset=imagenet on a Hugging Face `load_from_disk` folder",
             "pip install 'vapi-bench[hf]'"),
    OptionalPiece("transformers", "transformers", "-m janus-pro*, -m llamagen-t2i-xl (T5), -t geneval (Mask2Former), "
             "-t imagenet-fid's fd_dinov2, -s pickscore", "pip install 'vapi-bench[janus]'"),
    OptionalPiece("Chromium", None, "the browser test of `vapi-bench report` (tests/test_report.py), "
             "scripts/readme_screenshot.sh", "apt-get install -y chromium", programs=CANDIDATES),
    OptionalPiece("mmdet", "mmdet", "-t geneval --set detector=mmdet (the reference detector)",
             "see docs/tasks-geneval.md (patched mmcv build)"),
]


def installed(piece: OptionalPiece) -> str | None:
    """The version (or path, for a program) of an optional piece, None when it is missing."""
    if piece.module is None:
        return next((path for path in map(shutil.which, piece.programs) if path), None)
    if importlib.util.find_spec(piece.module) is None:
        return None
    try:
        return importlib.metadata.version(piece.module)
    except importlib.metadata.PackageNotFoundError:
        return "installed"


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

    backends = Table(title="optional pieces (vapi-bench runs without them)", title_justify="left")
    for col in ("piece", "status", "needed by", "to get it"):
        backends.add_column(col)
    for piece in OPTIONAL:
        found = installed(piece)
        backends.add_row(piece.name, "[yellow]missing[/yellow]" if found is None else escape(found),
                         escape(piece.needed_by), "" if found else escape(piece.how))  # [extras] are not markup
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
