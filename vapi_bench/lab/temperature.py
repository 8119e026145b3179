"""Teacher-forced entropy and the temperature control: does a method do more than sharpen?

A fine-tuned policy can lower FID just by becoming more peaked, which sampling the base model at a
temperature below 1 does for free. The control finds the temperature at which the BASE model's
teacher-forced next-token entropy on held-out images equals the fine-tuned model's, and the lab
samples the base there: a method beats the control only if it does more than sharpen.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import UsageError
from ..interfaces import Generator
from ..training.losses import teacher_forced_ce


@dataclass(frozen=True)
class PolicyStats:
    """Teacher-forced statistics of a policy on held-out data (nats per token)."""

    heldout_ce: float
    entropy: float


def entropy_at(logits: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean entropy (nats) of softmax(logits / temperature) over every position of [..., V] logits."""
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    return float(-(logp.exp() * logp).sum(-1).mean())


@torch.no_grad()
def teacher_forced_logits(generator: Generator, images: torch.Tensor, conditions: Sequence[Any],
                          batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N,T,V] float32, true tokens [N,T]) of a generator teacher-forced on images in [-1, 1]."""
    generator.policy.eval()
    logits, tokens = [], []
    for start in range(0, len(images), batch_size):
        chunk = generator.encode(images[start:start + batch_size]).long()
        cond = generator.prepare_conditions(list(conditions[start:start + batch_size]))
        logits.append(generator.teacher_forced_logits(chunk, cond).float())
        tokens.append(chunk)
    return torch.cat(logits), torch.cat(tokens)


def policy_stats(generator: Generator, images: torch.Tensor, conditions: Sequence[Any]) -> PolicyStats:
    """Held-out cross-entropy of the true tokens and mean next-token entropy at temperature 1."""
    logits, tokens = teacher_forced_logits(generator, images, conditions)
    return PolicyStats(heldout_ce=float(teacher_forced_ce(logits, tokens)), entropy=entropy_at(logits))


def cached_policy_stats(stage_dir: Path, heldout_key: str, compute: Callable[[], PolicyStats]) -> PolicyStats:
    """A fine-tuned policy's PolicyStats, kept next to its weights in the finetune stage directory
    (policy-stats-<heldout_key>.json): the weights of a stage never change, so rebuilding a lab
    table does not teacher-force every policy again. heldout_key names the held-out set and the
    settings that computed the statistics; another key computes (and keeps) its own."""
    from ..store import atomic_write_json

    path = Path(stage_dir) / f"policy-stats-{heldout_key}.json"
    if path.exists():
        return PolicyStats(**json.loads(path.read_text()))
    stats = compute()
    atomic_write_json(path, asdict(stats))
    return stats


class TemperatureCurve:
    """The base policy's mean teacher-forced entropy as a function of the sampling temperature, and
    its inverse by bisection (the entropy of softmax(z / T) increases with T).

    A lab table matches one temperature per fine-tuned run against the same base logits; every
    bisection starts from the same bracket, so the targets near T = 1 share their first midpoints.
    The curve keeps the logits in float64 once and remembers every entropy it has evaluated, which
    makes the later matches a few passes each instead of ~18, with the very same result."""

    def __init__(self, base_logits: torch.Tensor, low: float = 0.05, high: float = 5.0, tol: float = 1e-4):
        self._logits = base_logits.double()
        self.low, self.high, self.tol = low, high, tol
        self._seen: dict[float, float] = {}

    def entropy(self, temperature: float) -> float:
        if temperature not in self._seen:
            self._seen[temperature] = entropy_at(self._logits, temperature)
        return self._seen[temperature]

    def temperature_for(self, target_entropy: float) -> float:
        """The temperature T at which the base's mean entropy equals target_entropy (to tol).
        Raises UsageError when the target lies outside the entropies reachable in [low, high]."""
        low, high = self.low, self.high
        lo_h, hi_h = self.entropy(low), self.entropy(high)
        if not lo_h <= target_entropy <= hi_h:
            raise UsageError(f"temperature control: entropy {target_entropy:.4f} is outside what the base reaches "
                             f"for T in [{low}, {high}] ({lo_h:.4f} .. {hi_h:.4f}).")
        while high - low > self.tol:
            mid = 0.5 * (low + high)
            if self.entropy(mid) < target_entropy:
                low = mid
            else:
                high = mid
        return 0.5 * (low + high)


def matching_temperature(base_logits: torch.Tensor, target_entropy: float, low: float = 0.05, high: float = 5.0,
                         tol: float = 1e-4) -> float:
    """The temperature T at which the base logits' mean entropy equals target_entropy (one match;
    a table of them uses one TemperatureCurve)."""
    return TemperatureCurve(base_logits, low, high, tol).temperature_for(target_entropy)


def heldout_set(dataset: Any, n: int) -> tuple[torch.Tensor, list[Any]]:
    """The first n (image, condition) items of a held-out dataset as a batch and a list."""
    if len(dataset) < n:
        raise UsageError(f"temperature control: the held-out set has {len(dataset)} items, {n} were asked for.")
    items = [dataset[i] for i in range(n)]
    return torch.stack([image for image, _ in items]), [cond for _, cond in items]
