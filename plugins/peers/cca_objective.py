"""CCA's losses and its negatives as pure functions, as the official code computes them
(thu-ml/CCA @ 7d5a073, LlamaGen_finetune.py L226-296).

Per pair (image tokens x, condition c): c⁻ is a mismatched condition (the neighbour's, by a roll,
L234); with `uncond_ratio > 0` a random share of rows get the null condition in both c and c⁻
(L237-241) and, like rows whose rolled condition happens to equal their own, count their "negative"
as a positive (L276). The loss form depends on `uncond_ratio` (L273-283): the sigmoid form above 0,
a linear one at 0 (`cca_loss` and `cca_linear_loss`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from vapi_bench.interfaces import Condition


def rolled(conditions: Sequence[Condition], shift: int = -1) -> list[Condition]:
    """torch.roll(c, shifts=-1) on a list: row i gets row i+1's condition (the last gets the first)."""
    items = list(conditions)
    if not items:
        return items
    shift %= len(items)
    return items[-shift:] + items[:-shift] if shift else items


def sequence_logprob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Σ_t log softmax(logits[:, t])[tokens[:, t]] per row [R], fp32, temperature 1."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens[..., None]).squeeze(-1).sum(dim=-1)


def cca_loss(
    delta_pos: torch.Tensor, delta_neg: torch.Tensor, pos_as_neg: torch.Tensor, beta: float, lam: float
) -> torch.Tensor:
    """[−mean logσ(βΔ⁺) − mean(w · logσ(sβΔ⁻))] / max(λ, 1), with w = 1, s = +1 where the negative
    counts as a positive (null rows, or c⁻ == c), else w = λ, s = −1.

    Δ± = log π_θ(x|c±) − log π_ref(x|c±), sequence sums (L263-268). This is the official
    `loss_type="CCA"` with `uncond_ratio > 0` (thu-ml/CCA LlamaGen_finetune.py L274-281): the
    paper's −logσ(βΔ⁺) − λ·logσ(−βΔ⁻), divided by max(λ, 1).
    """
    weight = torch.where(pos_as_neg, torch.ones_like(delta_neg), torch.full_like(delta_neg, lam))
    sign = torch.where(pos_as_neg, torch.ones_like(delta_neg), -torch.ones_like(delta_neg))
    positive = -F.logsigmoid(beta * delta_pos).mean()
    negative = -(weight * F.logsigmoid(sign * beta * delta_neg)).mean()
    return (positive + negative) / max(lam, 1.0)


def cca_linear_loss(delta_pos: torch.Tensor, delta_neg: torch.Tensor, lam: float) -> torch.Tensor:
    """−mean Δ⁺ + λ·mean Δ⁻: the official `loss_type="CCA"` with `uncond_ratio = 0` (thu-ml/CCA
    LlamaGen_finetune.py L282-283, `loss = - img_logp_gap.mean() + args.lambda_ *
    negative_img_logp_gap.mean()`).

    No sigmoid, no β, no division by λ, and rows whose c⁻ equals c are not turned into positives.
    It is unbounded below (it keeps pushing log π_θ(x|c⁻) down), unlike the sigmoid form; the
    official VAR trainer (VAR_CCA_trainer.py L168-170) keeps the sigmoid at `uncond_ratio = 0`, but
    this plugin follows the LlamaGen script, whose recipe it implements.
    """
    return -delta_pos.mean() + lam * delta_neg.mean()
