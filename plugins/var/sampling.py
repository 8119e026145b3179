"""KV-cached next-scale sampling with VAR's guidance ramp and per-row pre-drawn uniforms.

Follows `VAR.autoregressive_infer_cfg` (FoundationVision/VAR@78b9539, models/var.py:126-190)
scale by scale: the batch is `[cond; null]` as halves, every scale is one cached forward, the
guided logits at scale k of S are `(1 + t) c - t u` with `t = cfg * k / (S - 1)` (var.py:161,
172-173), then top-k and VAR's top-p (helpers.py:6-15), and the drawn codes update f̂ and give the
next scale's input (quant.py:187-196). Two changes, both invisible at a fixed draw:

- guidance is spelled in the suite's convention, `u + s (c - u)`: VAR's `cfg` is `s - 1`, so the
  official FID setting cfg=1.5 is `cfg_scale=2.5`, and `cfg_scale=1` is guidance-free (CCA's
  VAR_sample.py --cfg=0); a temperature (1 in every official setting) divides the logits first;
- the draw: token j of row i is the inverse-CDF pick of `uniforms[i, j]` (j indexes the whole
  token sequence), pre-drawn from sample i's own seed, instead of `torch.multinomial` on a shared
  generator. Row i then depends only on its seed, whatever its batch, position or rank.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from vapi_bench.errors import NON_FINITE_PROBABILITIES
from vapi_bench.interfaces import SamplingRecipe
from vapi_bench.plugins.llamagen.sampling import inverse_cdf_draw

from .model import VAR, KVCache
from .vqvae import MultiScaleQuantizer


def guidance_at(cfg_scale: float, scale: int, num_scales: int) -> float:
    """VAR's `t` at `scale` (var.py:161, 172): (cfg_scale - 1) * scale / (num_scales - 1)."""
    return (cfg_scale - 1.0) * scale / max(num_scales - 1, 1)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """`sample_with_top_k_top_p_`'s filtering (helpers.py:6-15), out of place; removed logits are -inf.

    Top-k keeps every logit >= the k-th largest. Top-p (active below 1) removes the smallest
    tokens whose ascending cumulative probability stays <= 1 - top_p, never the largest one.
    """
    out = logits.clone()
    if top_k > 0:
        kth = out.topk(min(top_k, out.shape[-1]), dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
        out = out.masked_fill(out < kth, -torch.inf)
    if top_p < 1.0:
        ascending, order = out.sort(dim=-1, descending=False)
        remove = ascending.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        out = out.masked_fill(remove.scatter(-1, order, remove), -torch.inf)
    return out


def probabilities(logits: torch.Tensor, recipe: SamplingRecipe) -> torch.Tensor:
    """Temperature, filtering, softmax in fp32."""
    logits = logits.float() / max(recipe.temperature, 1e-5)
    return F.softmax(filter_logits(logits, recipe.top_k, recipe.top_p), dim=-1)


@torch.no_grad()
def generate(
    var: VAR,
    quantizer: MultiScaleQuantizer,
    labels: torch.Tensor,
    *,
    recipe: SamplingRecipe,
    uniforms: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Sample tokens [B, T] (the `TokenLayout` concatenation of every scale's codes).

    labels: LongTensor [B]; uniforms: [B, T] in [0, 1), row i from sample i's seed. The model
    runs in eval mode, restored afterwards. NaN / inf probabilities raise
    RuntimeError(NON_FINITE_PROBABILITIES).
    """
    batch, layout = len(labels), var.layout
    if tuple(uniforms.shape) != (batch, layout.num_tokens):
        raise ValueError(f"uniforms must be [{batch}, {layout.num_tokens}], got {tuple(uniforms.shape)}.")
    device = var.pos_1LC.device
    guided = recipe.cfg_scale != 1.0
    rows = labels.to(device)
    if guided:
        rows = torch.cat([rows, torch.full_like(rows, var.config.num_classes)])
    uniforms = uniforms.to(device)
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    tokens = torch.empty(batch, layout.num_tokens, dtype=torch.long, device=device)
    finite = torch.ones(batch, dtype=torch.bool, device=device)
    num_scales, bounds = len(layout.patch_nums), layout.bounds
    was_training = var.training
    var.eval()
    try:
        with autocast:
            cond = var.class_emb(rows)
            positions = var.level_positions()
            x = var.first_scale_input(cond) + positions[:, : var.first_l]
            cache, f_hat = KVCache(var.config.depth), quantizer.empty_fhat(labels)
            for k, (pn, (begin, end)) in enumerate(zip(layout.patch_nums, bounds)):
                logits = var.step(x, cond, cache)
                if guided:
                    t = guidance_at(recipe.cfg_scale, k, num_scales)
                    logits = (1 + t) * logits[:batch] - t * logits[batch:]
                probs = probabilities(logits, recipe)
                finite &= torch.isfinite(probs).flatten(1).all(dim=-1)
                codes = inverse_cdf_draw(probs.flatten(0, 1), uniforms[:, begin:end].flatten()).view(batch, -1)
                tokens[:, begin:end] = codes
                if k == num_scales - 1:
                    break
                f_hat = f_hat + quantizer.upsampled(quantizer.code_map(codes, pn), k)
                next_begin, next_end = bounds[k + 1]
                x = var.word_embed(quantizer.next_input(f_hat, k)) + positions[:, next_begin:next_end]
                if guided:
                    x = torch.cat([x, x])
    finally:
        var.train(was_training)
    if not bool(finite.all()):
        raise RuntimeError(NON_FINITE_PROBABILITIES)
    return tokens
