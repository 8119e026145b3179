"""Policy-gradient and likelihood losses as pure tensor functions, shared by every method.

Each function is one line of an official training loop (VA-π's, AR-GRPO's; docs/reference/vapi.md
§8, docs/reference/peers.md §1), written so it can be tested against the formula on its own:
position-wise group sampling from one set of teacher-forced logits, group-normalised advantages,
the token-level PPO-clip surrogate, the k3 KL estimator and the next-token cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import NON_FINITE_PROBABILITIES


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then nucleus filtering over the last dim (LlamaGen's `top_k_top_p_filtering`):
    removed entries become -inf; at least one token always survives."""
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative > top_p
        drop_sorted[..., 1:] = drop_sorted[..., :-1].clone()
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw_group(
    logits: torch.Tensor,
    group_size: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """G sequences drawn position-wise from one image's teacher-forced logits [T, V].

    Every position is an independent categorical (no autoregressive feedback, no argmax), so the
    G rows are i.i.d. draws from a product of categoricals. Returns (tokens [G, T], old log-probs
    [G, T]) under the temperature-scaled, filtered distribution the tokens were drawn from.
    NaN / inf logits raise RuntimeError(NON_FINITE_PROBABILITIES) on every device.
    """
    logp = F.log_softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)
    probs = logp.exp()
    if not bool(torch.isfinite(probs).all()):  # on CUDA, multinomial would device-assert (ends the process)
        raise RuntimeError(NON_FINITE_PROBABILITIES)
    samples = torch.multinomial(probs, group_size, replacement=True, generator=generator)  # [T, G]
    old = logp.gather(-1, samples)
    return samples.T.contiguous(), old.T.contiguous()


def group_advantages(rewards: torch.Tensor, adv_clip: float, eps: float = 1e-8) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group (row of `rewards` [B, G]), unbiased std,
    clamped to ±adv_clip."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=True)
    return ((rewards - mean) / (std + eps)).clamp(-adv_clip, adv_clip)


def ppo_clip_loss(
    new_logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level PPO-clip surrogate, mean over tokens then rows (official L781-826).

    new_logp/old_logp: [R, T]; advantages: [R]. Returns (loss, fraction of tokens where the clip
    is active, i.e. the ratio left [1-ε, 1+ε] in the direction the advantage pushes it).
    """
    ratio = torch.exp(new_logp - old_logp)
    adv = advantages[:, None]
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps))
    clipped = ((ratio > 1.0 + clip_eps) & (adv > 0)) | ((ratio < 1.0 - clip_eps) & (adv < 0))
    return per_token.mean(dim=1).mean(), clipped.float().mean()


def k3_kl(ref_logp: torch.Tensor, new_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π_θ ‖ π_ref) on the sampled tokens: exp(d) - d - 1, d = ref - new;
    mean over tokens then rows."""
    delta = ref_logp - new_logp
    return (torch.exp(delta) - delta - 1.0).mean(dim=1).mean()


def teacher_forced_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """β's term: next-token cross-entropy of logits [R, T, V] (no temperature, fp32) on [R, T]."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
