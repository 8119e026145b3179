"""Preference pairs for `dpo`: K samples per condition, scored, best (or every better one) vs worst.

The pairing rule is flow_grpo's DPO mode (yifan123/flow_grpo @ ac4c86e, flow_grpo/stat_tracking.py
L38-51: per prompt, the sample of highest reward is chosen and the one of lowest reward rejected).
Where every sample of a group has the same reward flow_grpo still forms a pair (samples 1 vs 0);
here such a group carries no preference, so it yields no pair (offline) or a pair of weight 0
(online, so that every rank keeps its share of the batch).

A pair set is also what the engine trains on: `PairDataset` lets the engine draw pair indices as
it draws dataset indices (a pure function of (seed, step), the same on any number of ranks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from vapi_bench.interfaces import Condition, Generator, SamplingRecipe

PAIRINGS = ("best-vs-worst", "all-vs-worst")


@dataclass(frozen=True)
class PairSet:
    """Preference pairs: row i prefers `chosen[i]` over `rejected[i]` under `conditions[i]`;
    `weight[i]` is 0 for a group without preference (online ties), else 1; `gap[i]` is the
    scorer's reward difference (NaN when a user's file gives no rewards)."""

    conditions: list[Condition]
    chosen: torch.Tensor  # [P, T] int64
    rejected: torch.Tensor  # [P, T] int64
    weight: torch.Tensor  # [P] float
    gap: torch.Tensor  # [P] float

    def __len__(self) -> int:
        return len(self.conditions)

    def rows(self, indices: Sequence[int]) -> "PairSet":
        """The pairs at `indices`, in that order."""
        at = torch.as_tensor(list(indices), dtype=torch.long)
        return PairSet([self.conditions[i] for i in indices], self.chosen[at], self.rejected[at], self.weight[at],
                       self.gap[at])

    def to(self, device: torch.device) -> "PairSet":
        return PairSet(self.conditions, self.chosen.to(device), self.rejected.to(device), self.weight.to(device),
                       self.gap.to(device))

    def as_dict(self) -> dict[str, object]:
        """What `torch.save` stores (weights_only-loadable: tensors, lists of int / str)."""
        return {"conditions": self.conditions, "chosen": self.chosen.cpu(), "rejected": self.rejected.cpu(),
                "weight": self.weight.cpu(), "gap": self.gap.cpu()}


def select_pairs(rewards: torch.Tensor, pairing: str) -> list[tuple[int, int, int]]:
    """(group, chosen k, rejected k) per pair of `rewards` [G, K]: the first best vs the first
    worst of each group ("best-vs-worst"), or every sample rewarded above the worst vs the worst
    ("all-vs-worst"); groups whose rewards are all equal give none."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; known: {', '.join(PAIRINGS)}")
    out = []
    for g, row in enumerate(rewards.tolist()):
        low, high = min(row), max(row)
        if not high > low:
            continue
        worst = row.index(low)
        winners = [row.index(high)] if pairing == "best-vs-worst" else [k for k, r in enumerate(row) if r > low]
        out.extend((g, k, worst) for k in winners)
    return out


@torch.no_grad()
def draw_groups(generator: Generator, conditions: Sequence[Condition], group_size: int, seeds: Sequence[int],
                recipe: SamplingRecipe, rewards: nn.Module, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K = `group_size` samples of each condition (row g·K + k seeded by `seeds[g·K + k]`) through
    the generator's index-seeded sampler, decoded and scored `chunk` rows at a time.
    Returns (tokens [G·K, T], rewards [G, K])."""
    conds = [c for c in conditions for _ in range(group_size)]
    if len(seeds) != len(conds):
        raise ValueError(f"{len(seeds)} seeds for {len(conds)} samples")
    tokens, scores = [], []
    for start in range(0, len(conds), chunk):
        part = conds[start:start + chunk]
        drawn = generator.sample(part, seeds=list(seeds[start:start + chunk]), recipe=recipe)
        total, _ = rewards(generator.decode(drawn).float(), part)
        tokens.append(drawn.long())
        scores.append(total.float().cpu())
    return torch.cat(tokens), torch.cat(scores).view(len(conditions), group_size)


def pairs_from_groups(conditions: Sequence[Condition], tokens: torch.Tensor, rewards: torch.Tensor,
                      pairing: str) -> PairSet:
    """The pair set of scored groups (`draw_groups`' output), without the groups that have no preference."""
    k = rewards.shape[1]
    picks = select_pairs(rewards, pairing)
    chosen = torch.stack([tokens[g * k + w] for g, w, _ in picks]) if picks else tokens[:0]
    rejected = torch.stack([tokens[g * k + lo] for g, _, lo in picks]) if picks else tokens[:0]
    gap = torch.tensor([float(rewards[g, w] - rewards[g, lo]) for g, w, lo in picks])
    return PairSet([conditions[g] for g, _, _ in picks], chosen.cpu(), rejected.cpu(), torch.ones(len(picks)), gap)


def best_vs_worst_rows(conditions: Sequence[Condition], tokens: torch.Tensor, rewards: torch.Tensor) -> PairSet:
    """One pair per group, in group order (online: a group without preference gets weight 0, so
    every rank keeps its share of the batch)."""
    k = rewards.shape[1]
    best, worst = rewards.argmax(dim=1), rewards.argmin(dim=1)
    rows = torch.arange(len(conditions))
    index_w, index_l = (rows * k + best).to(tokens.device), (rows * k + worst).to(tokens.device)
    high, low = rewards.max(dim=1).values, rewards.min(dim=1).values
    return PairSet(list(conditions), tokens[index_w], tokens[index_l], (high > low).float(), high - low)


class PairDataset(torch.utils.data.Dataset):
    """A pair set as the engine's dataset: item i = (a blank image, pair i's condition). The engine
    draws item indices per step from (seed, step) and loads them; the step function reads the
    pairs' tokens at `batch.indices` (the image slot only satisfies the engine's data contract)."""

    def __init__(self, pairs: PairSet, image_size: int) -> None:
        self.pairs = pairs
        self.blank = torch.zeros(3, image_size, image_size)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Condition]:
        return self.blank, self.pairs.conditions[index]
