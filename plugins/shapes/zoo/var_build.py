"""The `shapes-var` stage of `zoo build` (and `zoo build --only var`): render the class images,
train VAR's multi-scale VQ-VAE, tokenize, train the VAR transformer, store both in fp16.

Every random draw derives from the build seed (initialisations from `zoo/var-vae` / `zoo/var`,
batch orders and code restarts from their own streams), so the stage reproduces its files byte for
byte on the same machine and thread count, whether it runs in the full build or alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vapi_bench.precision import cpu_has_native_bf16
from vapi_bench.seeding import derive_seed

from ...var.model import VAR, VARConfig
from ...var.vqvae import VQVAE, VQVAEConfig
from ..vocab import NUM_CLASSES
from .config import ZooConfig
from .files import FILES, save_module
from .stages import Stages, finish_bar, loss_bar
from .training_sets import render_class_set
from .var_train import round_to_half, teacher_forcing_set, train_var, train_var_vae

#: how the weights are stored (manifest record): fp16 halves the pair's bytes (the zoo's size limit)
STORAGE = "fp16 parameters, fp32 buffers; loaded as fp32"


def train_shapes_var(cfg: ZooConfig, seed: int, stages: Stages, out: Path) -> dict[str, Any]:
    """Train the VQ-VAE and transformer into `out`; returns the manifest's models / losses entries."""
    with stages.stage("render VAR data", cfg.n_var_images) as step:
        images, labels, digest = render_class_set(cfg.n_var_images, cfg.image_size, seed, step)

    vae_cfg = VQVAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.var_vae.items()})
    torch.manual_seed(derive_seed(seed, 0, "zoo/var-vae"))
    vae = VQVAE(vae_cfg)
    with stages.stage("train VAR VQ-VAE", cfg.var_vae_optim.steps) as step:
        vae_losses = train_var_vae(vae, images, cfg.var_vae_optim, derive_seed(seed, 1, "zoo/var-vae"),
                                   restart_every=cfg.var_restart_every, edge_boost=cfg.vq_edge_boost,
                                   bf16=cfg.bf16 and cpu_has_native_bf16(), on_step=loss_bar(step))
        finish_bar(step, cfg.var_vae_optim)
    round_to_half(vae)  # the transformer learns the tokens of the VQ-VAE as shipped
    save_module(out / FILES["var-vae"], vae, half=True)

    with stages.stage("tokenize VAR data", 1):
        tokens, inputs = teacher_forcing_set(vae, images)
    var_cfg = VARConfig(**cfg.var, num_classes=NUM_CLASSES, vocab_size=vae_cfg.vocab_size,
                        z_channels=vae_cfg.z_channels, patch_nums=vae_cfg.patch_nums)
    torch.manual_seed(derive_seed(seed, 0, "zoo/var"))  # initialisation and class dropout draws
    var = VAR(var_cfg)
    var.init_weights()
    with stages.stage("train VAR", cfg.var_optim.steps) as step:
        var_losses = train_var(var, tokens, inputs, labels, cfg.var_optim, derive_seed(seed, 1, "zoo/var"),
                               on_step=loss_bar(step))
        finish_bar(step, cfg.var_optim)
    save_module(out / FILES["var"], var, half=True)
    record = {"config": var_cfg.as_dict(), "vae_config": vae_cfg.as_dict(), "storage": STORAGE,
              "bf16_autocast": cfg.bf16 and cpu_has_native_bf16(),
              "data": {"dataset": "shapes-c2i", "split": "train", "n": cfg.n_var_images, "seed": seed,
                       "size": cfg.image_size, "sha256": digest}}
    return {"models": {"var": record}, "losses": {"var-vae": vae_losses, "var": var_losses}}
