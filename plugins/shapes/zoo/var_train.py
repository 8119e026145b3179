"""Training loops of `shapes-var`: VAR's multi-scale VQ-VAE and the VAR transformer, from scratch.

The VQ-VAE trains on VAR's own quantizer loss (plugins/var/vae_training.py: quant.py:52-104, the
codebook + β commitment terms summed over scales, straight-through f̂) plus a reconstruction term.
The VAR paper trains its tokenizer with VQGAN's compound loss (ℓ2, LPIPS, patch GAN); as for the
zoo's LlamaGen tokenizer (train.train_vq), an edge-weighted ℓ2 stands in for the perceptual and GAN
terms, and dead codes are restarted from the residuals they failed to explain (a few hundred
steps leave most of a codebook unused otherwise).

The transformer follows VAR's trainer (trainer.py:118-124): teacher-forced logits of every scale
in one pass, cross-entropy averaged over all tokens (`loss_weight = 1 / L`), class dropout to the
null class inside the model (cond_drop_rate 0.1); with the zoo's optimiser (AdamW 0.9 / 0.95, a
short warm-up and cosine decay: train.lr_at) at VAR's gradient clip 2.0 (utils/arg_util.py tclip).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vapi_bench.seeding import torch_generator

from ...var.model import VAR
from ...var.vae_training import reconstruct_for_training
from ...var.vqvae import VQVAE
from .train import (OptimConfig, StepCallback, check_finite, edge_weights, images_to_float, make_adamw,
                    optimiser_step)


def train_var_vae(
    vae: VQVAE,
    images: torch.Tensor,
    cfg: OptimConfig,
    seed: int,
    *,
    restart_every: int = 20,
    edge_boost: float = 0.0,
    bf16: bool = False,
    on_step: StepCallback | None = None,
) -> dict[str, float]:
    """Train the multi-scale VQ-VAE on uint8 images [N, 3, H, W]; returns the mean losses over the
    last 10% of steps (loss, recon_mse, vq_loss, codebook_usage). bf16 autocasts the encoder and
    decoder convolutions (1.6x faster on a CPU with native bf16); the quantizer and the losses stay
    fp32, as the official quantizer disables autocast (quant.py:61)."""
    picker = torch_generator(seed)
    optimiser = make_adamw(vae, cfg)
    codebook = vae.quantize.embedding.weight
    usage = torch.zeros(codebook.shape[0], dtype=torch.long)
    autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16)
    vae.train()
    tail: list[dict[str, float]] = []
    for step in range(cfg.steps):
        batch = images_to_float(images[torch.randint(len(images), (cfg.batch_size,), generator=picker)])
        with autocast:
            recon, out = reconstruct_for_training(vae, batch)
        recon = recon.float()
        weights = edge_weights(batch, edge_boost)
        rec = torch.mean(weights * (recon - batch) ** 2) / weights.mean()
        loss = rec + out.vq_loss
        check_finite(loss, "var-vae", step)
        optimiser_step(vae, optimiser, loss, cfg, step)
        used = torch.cat(out.indices, dim=1).flatten()
        usage += torch.bincount(used, minlength=usage.numel())
        if restart_every and (step + 1) % restart_every == 0 and step + 1 < cfg.steps:
            restart_dead_codes(codebook, usage == 0, torch.cat(out.residuals), picker)
            usage.zero_()
        record = {"loss": loss.item(), "recon_mse": rec.item(), "vq_loss": out.vq_loss.item(),
                  "codebook_usage": used.unique().numel() / usage.numel()}
        if step >= cfg.steps - max(cfg.steps // 10, 1):
            tail.append(record)
        if on_step is not None:
            on_step(step, record)
    vae.eval()
    return {key: sum(r[key] for r in tail) / len(tail) for key in tail[0]} if tail else {}


@torch.no_grad()
def restart_dead_codes(codebook: torch.Tensor, dead: torch.Tensor, residuals: torch.Tensor,
                       picker: torch.Generator) -> int:
    """Move the dead codebook rows onto randomly chosen residual rows [N, C] of the last batch (any
    scale): codes then sit where the quantizer has something left to explain (Jukebox's random
    restarts, Dhariwal et al. 2020 §3; unlike train.train_vq's l2-normalised codes, VAR's are raw)."""
    count = int(dead.sum())
    if count:
        codebook[dead] = residuals[torch.randint(len(residuals), (count,), generator=picker)].to(codebook.dtype)
    return count


@torch.no_grad()
def round_to_half(module: torch.nn.Module) -> torch.nn.Module:
    """Round every floating-point parameter to fp16 precision (kept in fp32): what a module saved
    with `files.save_module(..., half=True)` loads back as, so the tokens the transformer trains on
    are the ones the shipped VQ-VAE produces."""
    for p in module.parameters():
        p.copy_(p.half().float())
    return module


@torch.no_grad()
def teacher_forcing_set(vae: VQVAE, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [N, T] of uint8 images and the transformer's inputs [N, T - pn_0², C] (f̂ of the coarser
    scales, area-downsampled: quant.py idxBl_to_var_input), computed once for the frozen VQ-VAE."""
    vae.eval()
    tokens, inputs = [], []
    for start in range(0, len(images), batch_size):
        ids = vae.encode_indices(images_to_float(images[start : start + batch_size]))
        tokens.append(ids)
        inputs.append(vae.quantize.teacher_forcing_inputs(vae.layout.split(ids)))
    return torch.cat(tokens), torch.cat(inputs)


def train_var(
    var: VAR,
    tokens: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    cfg: OptimConfig,
    seed: int,
    *,
    on_step: StepCallback | None = None,
) -> dict[str, float]:
    """Teacher-forced CE of the VAR transformer on tokens [N, T] with their inputs and class labels
    [N]; returns the mean CE over the last 10% of steps."""
    picker = torch_generator(seed)
    optimiser = make_adamw(var, cfg)
    var.train()
    tail: list[float] = []
    for step in range(cfg.steps):
        rows = torch.randint(len(tokens), (cfg.batch_size,), generator=picker)
        logits = var(labels[rows], inputs[rows])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[rows].reshape(-1))
        check_finite(loss, "var", step)
        norm = optimiser_step(var, optimiser, loss, cfg, step)
        if step >= cfg.steps - max(cfg.steps // 10, 1):
            tail.append(loss.item())
        if on_step is not None:
            on_step(step, {"loss": loss.item(), "grad_norm": norm})
    var.eval()
    return {"ce": sum(tail) / len(tail)} if tail else {}
