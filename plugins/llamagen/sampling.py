"""KV-cached LlamaGen sampling with batched CFG and per-row pre-drawn uniforms.

Follows `FoundationVision/LlamaGen: autoregressive/models/generate.py` step for step: the batch
is `[cond; uncond]` as halves, CFG (only when cfg_scale > 1) is `u + s (c - u)` at prefill and at
every step until `cfg_interval`, then `/ max(T, 1e-5)`, top-k, top-p (HF-v3.2 filtering) and a
softmax. The one change is the draw: instead of `torch.multinomial` on a shared generator, token t
of row i is the inverse-CDF pick of the pre-drawn `uniforms[i, t]`. Row i then depends only on its
own uniforms (its seed), never on the batch it shares, so samples are identical across batch
sizes, batch orders and ranks.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F

from vapi_bench.errors import NON_FINITE_PROBABILITIES
from vapi_bench.interfaces import SamplingRecipe

from .gpt import GPT, Condition


def cfg_combine(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + (cond - uncond) * scale."""
    return uncond_logits + (cond_logits - uncond_logits) * scale


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then nucleus filtering of logits [B, V] (HF v3.2 `top_k_top_p_filtering` semantics).

    Top-k keeps every logit >= the k-th largest (ties kept). Top-p keeps the smallest prefix of the
    descending order whose probability mass reaches top_p, always including the first token.
    Removed entries become -inf. Returns a new tensor.
    """
    out = logits.clone()
    vocab = out.shape[-1]
    if top_k > 0:
        kth = torch.topk(out, min(top_k, vocab), dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True, stable=True)
        cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove_sorted = cumulative > top_p
        # shift right: keep the first token that crosses the threshold, and always the top one
        remove_sorted = torch.cat([torch.zeros_like(remove_sorted[..., :1]), remove_sorted[..., :-1]], dim=-1)
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        out = out.masked_fill(remove, float("-inf"))
    return out


def logits_to_probs(logits: torch.Tensor, recipe: SamplingRecipe) -> torch.Tensor:
    """Temperature, filtering and softmax in fp32, in the official order."""
    logits = logits.float() / max(recipe.temperature, 1e-5)
    if recipe.top_k > 0 or recipe.top_p < 1.0:
        logits = filter_logits(logits, recipe.top_k, recipe.top_p)
    return F.softmax(logits, dim=-1)


def inverse_cdf_draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Token j of row i such that cdf[j-1] <= u_i * total < cdf[j]; zero-probability tokens never win.

    A NaN row would give id V (one past the vocabulary; the next embedding lookup then fails, on
    CUDA as a device-side assert that ends the process), so ids are clamped to V - 1: `generate`
    reports such rows itself."""
    cdf = torch.cumsum(probs.float(), dim=-1)
    total = cdf[:, -1:]
    target = uniforms.to(cdf.device, cdf.dtype)[:, None] * total
    target = torch.minimum(target, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_max(probs.shape[-1] - 1)


def condition_batch_size(cond: Condition) -> int:
    return int(cond.shape[0]) if isinstance(cond, torch.Tensor) else int(cond[0].shape[0])


def concat_conditions(first: Condition, second: Condition) -> Condition:
    """Stack two condition batches as halves [first; second]."""
    if isinstance(first, torch.Tensor):
        return torch.cat([first, second])
    (f1, m1), (f2, m2) = first, second
    if m1 is None and m2 is None:
        return torch.cat([f1, f2]), None
    m1 = torch.ones(f1.shape[:2], dtype=torch.bool, device=f1.device) if m1 is None else m1.bool()
    m2 = torch.ones(f2.shape[:2], dtype=torch.bool, device=f2.device) if m2 is None else m2.bool()
    return torch.cat([f1, f2]), torch.cat([m1, m2])


def uses_cfg_at(step: int, recipe: SamplingRecipe) -> bool:
    """Whether token `step` (0 = the prefill token) is guided; the official loop stops CFG after
    decode iteration `cfg_interval`, i.e. tokens up to cfg_interval + 1 are guided."""
    return recipe.cfg_scale > 1.0 and (recipe.cfg_interval < 0 or step <= recipe.cfg_interval + 1)


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@torch.no_grad()
def generate(
    gpt: GPT,
    cond: Condition,
    null_cond: Condition | None = None,
    *,
    num_tokens: int,
    recipe: SamplingRecipe,
    uniforms: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Sample token ids [B, num_tokens] (int64) with the KV cache.

    cond: labels [B] (c2i) or (features [B, L, D], mask [B, L]) (t2i, left-padded). null_cond
    defaults to `gpt.null_condition(cond)`. uniforms: [B, >= num_tokens] in [0, 1), row i drawn
    from sample i's own seed. autocast_dtype (e.g. torch.bfloat16) runs the network under autocast
    on the model's device type; the KV cache then uses that dtype. The model runs in eval mode and
    its mode is restored afterwards. NaN / inf logits raise RuntimeError(NON_FINITE_PROBABILITIES).
    """
    batch = condition_batch_size(cond)
    if not 1 <= num_tokens <= gpt.config.block_size:
        raise ValueError(f"num_tokens must lie in [1, {gpt.config.block_size}], got {num_tokens}.")
    if uniforms.ndim != 2 or uniforms.shape[0] != batch or uniforms.shape[1] < num_tokens:
        raise ValueError(f"uniforms must be [{batch}, >= {num_tokens}], got {tuple(uniforms.shape)}.")
    guided = recipe.cfg_scale > 1.0
    rows = cond
    if guided:
        rows = concat_conditions(cond, null_cond if null_cond is not None else gpt.null_condition(cond))
    device = gpt.tok_embeddings.weight.device
    uniforms = uniforms.to(device)
    cond_len = gpt.config.cls_token_num
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    tokens = torch.empty(batch, num_tokens, dtype=torch.long, device=device)
    finite = torch.ones(batch, dtype=torch.bool, device=device)  # checked once at the end: no sync per token
    with _eval_mode(gpt), autocast:
        gpt.setup_cache(2 * batch if guided else batch, cond_len + num_tokens - 1, dtype=autocast_dtype)
        logits = gpt.prefill(rows)
        for step in range(num_tokens):
            if step > 0:
                previous = tokens[:, step - 1]
                logits = gpt.decode_step(torch.cat([previous, previous]) if guided else previous, cond_len + step - 1)
            if guided:
                cond_logits, uncond_logits = logits.float().split(batch)
                step_logits = (
                    cfg_combine(cond_logits, uncond_logits, recipe.cfg_scale) if uses_cfg_at(step, recipe) else cond_logits
                )
            else:
                step_logits = logits
            probs = logits_to_probs(step_logits, recipe)
            finite &= torch.isfinite(probs).all(dim=-1)
            tokens[:, step] = inverse_cdf_draw(probs, uniforms[:, step])
    if not bool(finite.all()):
        raise RuntimeError(NON_FINITE_PROBABILITIES)
    return tokens
