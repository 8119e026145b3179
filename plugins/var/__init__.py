"""VAR generator plugin (Tian et al., NeurIPS 2024; FoundationVision/VAR): var-d16/-d20/-d24/-d30,
next-scale prediction over a multi-scale VQ-VAE's code pyramid.

Public modules: `model` (VAR, VARConfig), `vqvae` (VQVAE, VQVAEConfig, TokenLayout), `sampling`
(generate), `generator` (VARGenerator), `factory` (registered models and their parameters).
"""
from __future__ import annotations

from vapi_bench.hookspecs import hookimpl
from vapi_bench.interfaces import Family

from .generator import VARGenerator
from .model import VAR, VARConfig
from .sampling import generate
from .vqvae import VQVAE, TokenLayout, VQVAEConfig

__all__ = ["VAR", "VARConfig", "VARGenerator", "VQVAE", "VQVAEConfig", "TokenLayout", "generate"]


@hookimpl
def register_generators(register) -> None:
    from .factory import entries

    for entry in entries():
        register(entry)


#: the shared post-training budget of every method on VAR: the VA-π paper's class-to-image one
#: (the LlamaGen-C2I family's: constant lr 1e-6, 128 images per step, 100 steps, LPIPS-VGG); VA-π
#: was never run on VAR, so this is the suite's choice, not a published setting (docs/var.md)
FAMILIES = {"var": {"lr": 1e-6, "weight_decay": 1e-4, "batch_size": 128, "steps": 100, "perceptual": "lpips-vgg"}}


@hookimpl
def register_families(register) -> None:
    for name, defaults in FAMILIES.items():
        register(Family(name, defaults, summary="the VA-π paper's c2i budget, applied to VAR (docs/var.md)"))
