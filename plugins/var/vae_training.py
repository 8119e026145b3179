"""The multi-scale VQ-VAE's training forward: `VectorQuantizer2.forward` and `VQVAE.forward`
(FoundationVision/VAR@78b9539, models/quant.py:52-104, models/vqvae.py:55-59), which vqvae.py
leaves out because inference never needs it.

Per scale k (coarse to fine) the residual is area-downsampled to pn_k, each cell takes its nearest
code (no gradient), the code map is upsampled and refined by φ_k and added to f̂, and the loss gains
`β |sg(f̂) - f|² + |f̂ - sg(f)|²` (quant.py:95): the commitment term pulls the encoder towards the
partial reconstruction, the codebook term pulls the codes and φ towards the encoder output. The
loss is averaged over the scales (quant.py:97) and the decoder reads f̂ through the straight-through
estimator `sg(f̂ - f) + f` (quant.py:98), so the reconstruction loss trains the encoder as well.

The official usage statistics (`ema_vocab_hit_SV`, distributed all-reduce) are left out; instead the
rows quantised at every scale are returned, for whichever codebook upkeep the caller runs (the
shapes zoo restarts dead codes from them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .vqvae import VQVAE, MultiScaleQuantizer

#: the commitment weight of every released VQ-VAE (vqvae.py:19, quant.py:18: "SD seems using 0.25")
BETA = 0.25


@dataclass
class QuantizerOutput:
    """What one training forward of the quantizer gives."""

    f_hat: torch.Tensor  # [B, C, h, w]: f̂'s values with f's gradient (straight-through)
    vq_loss: torch.Tensor  # scalar: the codebook + β commitment loss averaged over scales
    indices: list[torch.Tensor]  # per scale, the chosen codes [B, pn^2]
    residuals: list[torch.Tensor]  # per scale, the (detached) rows that were quantised [B pn^2, C]


def quantize_for_training(quantizer: MultiScaleQuantizer, f: torch.Tensor, beta: float = BETA) -> QuantizerOutput:
    """quant.py:52-104 for l2 nearest codes (using_znorm=False, every release); f: [B, C, h, w].
    Runs in fp32 with autocast off, as the official loop does (quant.py:61)."""
    with torch.autocast(f.device.type, enabled=False):
        return _quantize(quantizer, f.float(), beta)


def _quantize(quantizer: MultiScaleQuantizer, f: torch.Tensor, beta: float) -> QuantizerOutput:
    b, c, h, w = f.shape
    f_no_grad = f.detach()
    rest = f_no_grad.clone()
    f_hat = torch.zeros_like(rest)
    loss = f.new_zeros(())
    indices, residuals = [], []
    last = len(quantizer.patch_nums) - 1
    for k, pn in enumerate(quantizer.patch_nums):
        z = F.interpolate(rest, size=(pn, pn), mode="area") if k != last else rest
        rows = z.permute(0, 2, 3, 1).reshape(-1, c)
        with torch.no_grad():
            idx = quantizer.nearest(rows).view(b, pn * pn)
        h_map = quantizer.upsampled(quantizer.code_map(idx, pn), k)  # gradient to the codes and φ_k
        f_hat = f_hat + h_map
        rest = rest - h_map.detach()
        loss = loss + F.mse_loss(f_hat.detach(), f).mul(beta) + F.mse_loss(f_hat, f_no_grad)
        indices.append(idx)
        residuals.append(rows.detach())
    return QuantizerOutput((f_hat.detach() - f_no_grad).add(f), loss / len(quantizer.patch_nums), indices, residuals)


def reconstruct_for_training(vae: VQVAE, images: torch.Tensor, beta: float = BETA) -> tuple[torch.Tensor, QuantizerOutput]:
    """vqvae.py:55-59: images [B, 3, H, W] in [-1, 1] -> (unclamped reconstruction, quantizer output)."""
    out = quantize_for_training(vae.quantize, vae.quant_conv(vae.encoder(images)), beta)
    return vae.decoder(vae.post_quant_conv(out.f_hat)), out
