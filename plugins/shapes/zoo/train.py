"""Training loops of the shapes zoo: the VQ tokenizer and the LlamaGen GPTs, from scratch.

Both loops follow the official LlamaGen recipes at a tiny scale (AdamW with betas (0.9, 0.95),
weight decay on matrices only, grad-norm clip 1.0, CE over all image tokens, class / caption
dropout for CFG) with a short warm-up and cosine decay, because a few hundred steps is all the
CPU budget allows. Every random draw (initialisation, batch order, dropout) comes from seeds, so a
build is a pure function of its seed on a given machine and thread count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vapi_bench.errors import TrainingDiverged
from vapi_bench.seeding import torch_generator

from ...llamagen.gpt import GPT
from ...llamagen.vq import VQModel

#: on_step(step, {"loss": ..., ...}) after every optimiser step (progress bars, logs)
StepCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser schedule of one training stage."""

    steps: int
    batch_size: int
    lr: float
    warmup: int = 20
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    grad_clip: float = 1.0


def lr_at(step: int, cfg: OptimConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * min_lr_ratio at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def final_lr(cfg: OptimConfig) -> float:
    """The learning rate the schedule ends at (the cosine floor): where pre-training left the
    model, and hence the reference for post-training learning rates (shapes/families.py)."""
    return cfg.lr * cfg.min_lr_ratio


def make_adamw(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW (0.9, 0.95) with weight decay on >= 2-D parameters only (LlamaGen's grouping)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def check_finite(loss: torch.Tensor, stage: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"zoo {stage}: the loss became {loss.item()} at step {step}; lower its lr.")


def optimiser_step(model: nn.Module, optimiser: torch.optim.Optimizer, loss: torch.Tensor, cfg: OptimConfig, step: int) -> float:
    for group in optimiser.param_groups:
        group["lr"] = lr_at(step, cfg)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimiser.step()
    return float(norm)


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float [-1, 1] (the suite's pixel convention)."""
    return images.float().div(127.5).sub(1.0)


def train_vq(
    vq: VQModel,
    images: torch.Tensor,
    cfg: OptimConfig,
    seed: int,
    *,
    restart_every: int = 20,
    edge_boost: float = 0.0,
    on_step: StepCallback | None = None,
) -> dict[str, float]:
    """Train the tokenizer on uint8 images [N,3,H,W]: L2 reconstruction + codebook + commitment.

    LlamaGen's tokenizer adds LPIPS and a patch GAN at ImageNet scale to keep edges sharp; here
    the L2 term weighs pixels next to an object edge (1 + edge_boost) times more (see
    `edge_weights`), which buys the sharp corners the exact detector needs (squares, crosses) at
    a fraction of the CPU cost. A few hundred steps are too few for the codebook to spread out
    by itself (it collapses onto a few dozen codes), so every `restart_every` steps the codes no
    batch used since the last check are moved onto randomly chosen current encoder outputs
    (dead-code restart). Returns the mean losses over the last 10% of steps.
    """
    picker = torch_generator(seed)
    optimiser = make_adamw(vq, cfg)
    codebook = vq.quantize.embedding.weight
    usage = torch.zeros(codebook.shape[0], dtype=torch.long)
    vq.train()
    tail: list[dict[str, float]] = []
    for step in range(cfg.steps):
        batch = images_to_float(images[torch.randint(len(images), (cfg.batch_size,), generator=picker)])
        z = vq.quant_conv(vq.encoder(batch))
        z_q, losses, indices = vq.quantize(z)
        recon = vq.decoder(vq.post_quant_conv(z_q))
        weights = edge_weights(batch, edge_boost)
        rec = torch.mean(weights * (recon - batch) ** 2) / weights.mean()
        loss = rec + losses["vq_loss"] + losses["commit_loss"] + losses["entropy_loss"]
        check_finite(loss, "vq", step)
        optimiser_step(vq, optimiser, loss, cfg, step)
        usage += torch.bincount(indices.cpu(), minlength=usage.numel())
        if restart_every and (step + 1) % restart_every == 0 and step + 1 < cfg.steps:
            _restart_dead_codes(codebook, usage == 0, z.detach(), picker)
            usage.zero_()
        record = {
            "loss": loss.item(),
            "recon_mse": rec.item(),
            "vq_loss": losses["vq_loss"].item(),
            "codebook_usage": losses["codebook_usage"].item(),
        }
        if step >= cfg.steps - max(cfg.steps // 10, 1):
            tail.append(record)
        if on_step is not None:
            on_step(step, record)
    vq.eval()
    return {key: sum(r[key] for r in tail) / len(tail) for key in tail[0]} if tail else {}


@torch.no_grad()
def edge_weights(images: torch.Tensor, boost: float, contrast: float = 0.3) -> torch.Tensor:
    """Per-pixel loss weights [B,1,H,W]: 1 + boost where the 3x3 neighbourhood's colour range
    exceeds `contrast` (object edges; the noisy grey background stays well below it)."""
    if boost == 0:
        return torch.ones_like(images[:, :1])
    high = F.max_pool2d(images, 3, stride=1, padding=1)
    low = -F.max_pool2d(-images, 3, stride=1, padding=1)
    edges = (high - low).amax(dim=1, keepdim=True) > contrast
    return 1.0 + boost * edges.to(images.dtype)


@torch.no_grad()
def _restart_dead_codes(codebook: torch.Tensor, dead: torch.Tensor, z: torch.Tensor, picker: torch.Generator) -> int:
    """Copy randomly chosen encoder outputs z [B, D, h, w] into the dead codebook rows."""
    count = int(dead.sum())
    if count == 0:
        return 0
    vectors = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    chosen = vectors[torch.randint(len(vectors), (count,), generator=picker).to(vectors.device)]
    codebook[dead.to(codebook.device)] = F.normalize(chosen, dim=-1).to(codebook.dtype)
    return count


@torch.no_grad()
def encode_dataset(vq: VQModel, images: torch.Tensor, batch_size: int = 256,
                   on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Token ids [N, T] of uint8 images [N,3,H,W] with the frozen tokenizer."""
    vq.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        out.append(vq.encode_indices(images_to_float(chunk)))
        if on_batch is not None:
            on_batch(len(chunk))
    return torch.cat(out)


def train_gpt(
    gpt: GPT,
    tokens: torch.Tensor,
    conditions: Callable[[torch.Tensor], object],
    cfg: OptimConfig,
    seed: int,
    *,
    bf16: bool = True,
    label_smoothing: float = 0.0,
    on_step: StepCallback | None = None,
) -> dict[str, float]:
    """Next-token CE training of a LlamaGen GPT on token ids [N, T].

    conditions(indices) returns the GPT condition of those rows (labels [B], or left-padded
    caption features and mask). bf16 autocast runs the matmuls (about 4x faster on our CPUs);
    logits and the loss stay fp32. Attention runs on SDPA's plain math kernel: for sequences of
    ~100 tokens its backward is faster on CPU than the flash kernel (~20% of a step here).
    label_smoothing > 0 trains on targets mixed with the uniform distribution (MaskGIT's 0.1): the
    model learns that mixture, so it samples too many off-mode tokens at temperature 1.
    Returns the mean loss over the last 10% of steps.
    """
    picker = torch_generator(seed)
    optimiser = make_adamw(gpt, cfg)
    gpt.train()
    autocast = torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=bf16)
    tail: list[float] = []
    for step in range(cfg.steps):
        rows = torch.randint(len(tokens), (cfg.batch_size,), generator=picker)
        batch = tokens[rows]
        with autocast, sdpa_kernel(SDPBackend.MATH):
            logits = gpt(conditions(rows), batch)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch.reshape(-1),
                               label_smoothing=label_smoothing)
        check_finite(loss, "gpt", step)
        norm = optimiser_step(gpt, optimiser, loss, cfg, step)
        if step >= cfg.steps - max(cfg.steps // 10, 1):
            tail.append(loss.item())
        if on_step is not None:
            on_step(step, {"loss": loss.item(), "grad_norm": norm, "lr": lr_at(step, cfg)})
    gpt.eval()
    return {"ce": sum(tail) / len(tail)} if tail else {}
