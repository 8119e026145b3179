"""Weighted sums of reward scorers: `rewards=name:w,name:w` (AR-GRPO's reward_funcs/weights).

AR-GRPO adds its reward functions with weights and `nansum` (reference/peers.md §1.4), so a NaN
from one scorer counts as 0 rather than poisoning the sum; the same here. Every named scorer must
be a reward (`higher_is_better`, scoring an image, usually against its condition, without a
reference image); it is called through `Scorer.score`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Condition


def parse_reward_spec(spec: str, where: str) -> list[tuple[str, float]]:
    """'a:1,b:0.5' -> [('a', 1.0), ('b', 0.5)]; a bare name has weight 1."""
    terms: list[tuple[str, float]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, weight = part.rpartition(":") if ":" in part else (part, "", "1")
        try:
            terms.append((name.strip(), float(weight)))
        except ValueError:
            raise UsageError(f"{where}: reward weight {weight!r} in {part!r} is not a number "
                             "(write rewards=name:weight,name:weight).") from None
    if not terms:
        raise UsageError(f"{where}: rewards is empty; name at least one reward scorer, e.g. rewards=shapes-class-prob:1.")
    names = [n for n, _ in terms]
    if len(set(names)) != len(names):
        raise UsageError(f"{where}: reward {sorted(n for n in names if names.count(n) > 1)[0]!r} is named twice.")
    return terms


class RewardMix(nn.Module):
    """Σ_k w_k · r_k(images, conditions), per image, with the parts kept for logging."""

    def __init__(self, spec: str, device: torch.device, where: str) -> None:
        super().__init__()
        from vapi_bench import load_scorer

        self.terms = parse_reward_spec(spec, where)
        self.scorers = nn.ModuleList()  # in the order of `terms` (names may hold dots: hpsv2.1)
        for name, _ in self.terms:
            scorer = load_scorer(name)
            if not scorer.higher_is_better or scorer.needs_reference:
                raise UsageError(f"{where}: scorer {name!r} is a distance to a reference image, not a reward "
                                 "(a reward is higher_is_better and needs no reference).")
            self.scorers.append(scorer.to(device).eval().requires_grad_(False))

    @torch.no_grad()
    def forward(self, images: torch.Tensor, conditions: Sequence[Condition]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: scorer.score(images, conditions=conditions).float()
                 for (name, _), scorer in zip(self.terms, self.scorers)}
        weighted = torch.stack([weight * parts[name] for name, weight in self.terms])
        return torch.nansum(weighted, dim=0), parts
