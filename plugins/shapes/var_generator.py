"""`shapes-var`: the shapes world's VAR (next-scale prediction), the second autoregressive
paradigm beside the LlamaGen GPTs, so a comparison can put both kinds of base side by side offline.

A `VARGenerator` built from the zoo's var-vae / var files (trained by `vapi-bench zoo build --only
var`): sampling, teacher forcing, fine-tuning and checkpointing run through exactly the VAR
plugin's code that serves var-d16 ... var-d30; only the config (read from the zoo manifest) differs.
"""
from __future__ import annotations

from typing import Any

import torch

from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Entry
from vapi_bench.params import Param

from ..var.generator import PRECISIONS, VARGenerator
from .generators import CLASS_NAMES, CLASS_PROMPT, DEFAULT_RECIPES
from .zoo.files import FILES, load_var, read_manifest, zoo_dir_or_default

NAME = "shapes-var"
SUMMARY = ("tiny VAR (next-scale prediction, depth 4, width 64) + multi-scale VQ-VAE (scales 1-4 over a 4x4 "
           "latent) on the shapes world's 24 classes (zoo weights; `zoo build --only var` adds them)")

PARAMS: tuple[Param, ...] = (
    Param("zoo_dir", str, "", "zoo directory with manifest.json and the safetensors files (default: the shipped zoo)"),
    Param("precision", str, "fp32", "sampling precision (bf16 = autocast on the model's device)",
          choices=tuple(PRECISIONS)),
)


def build_shapes_var(*, checkpoint: str | None = None, device: torch.device | str = "cpu", zoo_dir: str = "",
                     precision: str = "fp32") -> VARGenerator:
    """`shapes-var` from a zoo; `checkpoint` replaces the zoo's transformer weights (the VQ-VAE stays)."""
    root = zoo_dir_or_default(zoo_dir)
    manifest = read_manifest(root)
    if "var" not in manifest["models"]:
        raise UsageError(f"model '{NAME}': the zoo at {root} has no {FILES['var']}; add it with "
                         "`vapi-bench zoo build --only var`.")
    var, vae = load_var(root, manifest, weights=checkpoint)
    extra: dict[str, Any] = {
        "zoo_dir": str(root),
        "zoo_seed": manifest["seed"],
        "zoo_files": {FILES[k]: manifest["files"][FILES[k]]["sha256"] for k in ("var-vae", "var")},
    }
    if checkpoint:
        extra["checkpoint"] = str(checkpoint)  # its digest is the core's (runner: checkpoint_sha256)
    generator = VARGenerator(
        var, vae, name=NAME, default_recipe=DEFAULT_RECIPES["var"], default_dataset="shapes-c2i", family=NAME,
        device=device, precision=precision, class_names=CLASS_NAMES, class_prompt=CLASS_PROMPT,
        describe_extra=extra,
    )
    # as the shapes GPTs: a tiny model's small batches are mostly per-call overhead (results do not depend on it)
    generator.sample_batch_size = 128
    return generator


def entry() -> Entry:
    """The registry entry of `shapes-var`."""

    def factory(*, checkpoint: str | None = None, device: torch.device | str = "cpu", **params: Any) -> VARGenerator:
        return build_shapes_var(checkpoint=checkpoint, device=device, **params)

    return Entry(NAME, factory=factory, summary=SUMMARY, params=PARAMS)
