"""The zoo on disk: file names, the manifest, verification, and rebuilding modules from it.

A zoo directory holds vq.safetensors, c2i.safetensors, t2i.safetensors, c2i-small(-ls).safetensors
(the under-capacity c2i base), featnet.safetensors (the evaluation network), rewardnet.safetensors
(the perceptual reward's network), var-vae.safetensors and var.safetensors (`shapes-var`: VAR's
multi-scale VQ-VAE and transformer, parameters stored in fp16) and manifest.json. The manifest is the single source of the model configs, so the weights can never
be paired with the wrong architecture, and it records each file's sha256, which is checked on
every load: a stale or half-copied zoo fails with a message saying which file and what to do.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vapi_bench.checkpoints import load_checkpoint_file, load_strict
from vapi_bench.errors import CheckpointError
from vapi_bench.store import atomic_write
from vapi_bench.weights import sha256_file

from ...llamagen.gpt import GPT, GPTConfig
from ...llamagen.vq import VQConfig, VQModel
from ...var.model import VAR, VARConfig
from ...var.vqvae import VQVAE, VQVAEConfig
from ..words import ShapesWordEncoder

#: the zoo shipped inside the package (written by `vapi-bench zoo build`)
PACKAGED_ZOO = Path(__file__).resolve().parent  # the weights ship beside this package's modules
MANIFEST = "manifest.json"
FORMAT = "vapi-bench-shapes-zoo/1"
FILES: dict[str, str] = {
    "vq": "vq.safetensors",
    "c2i": "c2i.safetensors",
    "t2i": "t2i.safetensors",
    "featnet": "featnet.safetensors",
    "c2i-small": "c2i-small.safetensors",
    "c2i-small-ls": "c2i-small-ls.safetensors",
    "t2i-ls": "t2i-ls.safetensors",
    "rewardnet": "rewardnet.safetensors",
    "var-vae": "var-vae.safetensors",
    "var": "var.safetensors",
}
#: the repository ships the zoo; it must stay small
MAX_TOTAL_BYTES = 20 * 1024 * 1024
GPT_KINDS = ("c2i", "t2i", "c2i-small", "c2i-small-ls", "t2i-ls")


def zoo_dir_or_default(zoo_dir: str | Path | None) -> Path:
    return Path(zoo_dir).expanduser() if zoo_dir else PACKAGED_ZOO


def save_module(path: Path, module: nn.Module, *, half: bool = False) -> Path:
    """A module's state dict as safetensors (CPU, contiguous; byte-identical for equal weights).
    half stores the floating-point parameters in fp16 (buffers unchanged: VAR's attention mask
    holds the fp32 minimum); loading casts them back to the module's fp32."""
    from safetensors.torch import save_file

    params = {name for name, _ in module.named_parameters()}
    tensors = {k: (v.half() if half and k in params else v).detach().to("cpu").contiguous()
               for k, v in module.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def file_record(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def read_manifest(zoo_dir: str | Path | None = None, *, verify: bool = True) -> dict[str, Any]:
    """The manifest of a zoo directory; with verify, every listed file must match its sha256."""
    root = zoo_dir_or_default(zoo_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise CheckpointError(
            f"No shapes zoo at {root} (missing {MANIFEST}). Build one with `vapi-bench zoo build"
            f"{'' if root == PACKAGED_ZOO else f' --out {root}'}`."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"The shapes zoo manifest {path} is unreadable ({exc}); rebuild the zoo.") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}; rebuild the zoo."
        )
    if verify:
        for name, record in manifest.get("files", {}).items():
            verify_file(root / name, record)
    return manifest


def verify_file(path: Path, record: dict[str, Any]) -> None:
    """Raise CheckpointError unless `path` exists with the manifest's sha256."""
    if not path.is_file():
        raise CheckpointError(f"The shapes zoo file {path} is missing; rebuild with `vapi-bench zoo build`.")
    digest = sha256_file(path)
    if digest != record.get("sha256"):
        raise CheckpointError(
            f"The shapes zoo file {path} does not match its manifest (sha256 {digest[:12]}... != "
            f"{str(record.get('sha256'))[:12]}...): it was changed or half-copied. Rebuild the zoo."
        )


def vq_config(manifest: dict[str, Any]) -> VQConfig:
    cfg = dict(manifest["models"]["vq"]["config"])
    cfg["ch_mult"] = tuple(cfg["ch_mult"])
    return VQConfig(**cfg)


def gpt_config(manifest: dict[str, Any], kind: str) -> GPTConfig:
    if kind not in GPT_KINDS:
        raise ValueError(f"zoo GPT kind must be one of {GPT_KINDS}, got {kind!r}.")
    return GPTConfig(**manifest["models"][kind]["config"])


def word_encoder(manifest: dict[str, Any]) -> ShapesWordEncoder:
    """The caption encoder the t2i GPT was trained with (vocabulary and length from the manifest)."""
    spec = manifest["models"]["t2i"]["text_encoder"]
    return ShapesWordEncoder(max_words=spec["max_words"], vocabulary=spec["vocabulary"])


def load_module(module: nn.Module, path: Path, what: str) -> nn.Module:
    """Strictly load a state-dict file (safetensors or a LlamaGen-style .pt) into `module`."""
    load_strict(module, load_checkpoint_file(path), what)
    return module


def load_vq(root: Path, manifest: dict[str, Any]) -> VQModel:
    return load_module(VQModel(vq_config(manifest)), root / FILES["vq"], f"shapes zoo VQ ({root / FILES['vq']})").eval()


def var_configs(manifest: dict[str, Any]) -> tuple[VARConfig, VQVAEConfig]:
    """`shapes-var`'s transformer and VQ-VAE configs (JSON lists back to tuples)."""
    record = manifest["models"]["var"]
    var = {k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()}
    vae = {k: tuple(v) if isinstance(v, list) else v for k, v in record["vae_config"].items()}
    return VARConfig(**var), VQVAEConfig(**vae)


def load_var(root: Path, manifest: dict[str, Any], weights: str | Path | None = None) -> tuple[VAR, VQVAE]:
    """`shapes-var`'s transformer and VQ-VAE; `weights` replaces the zoo's transformer file."""
    var_cfg, vae_cfg = var_configs(manifest)
    path = Path(weights) if weights else root / FILES["var"]
    with torch.random.fork_rng(devices=[]):  # construction draws an init we overwrite at once
        var, vae = VAR(var_cfg), VQVAE(vae_cfg)
    load_module(vae, root / FILES["var-vae"], f"shapes zoo VAR VQ-VAE ({root / FILES['var-vae']})")
    return load_module(var, path, f"shapes zoo VAR ({path})").eval(), vae.eval()


def load_gpt(root: Path, manifest: dict[str, Any], kind: str, weights: str | Path | None = None) -> GPT:
    """The zoo's c2i or t2i GPT; `weights` replaces the zoo's file (e.g. a fine-tuned GPT)."""
    path = Path(weights) if weights else root / FILES[kind]
    with torch.random.fork_rng(devices=[]):  # construction draws an init we overwrite at once
        gpt = GPT(gpt_config(manifest, kind))
    return load_module(gpt, path, f"shapes zoo {kind} GPT ({path})").eval()
