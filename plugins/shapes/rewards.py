"""Verifiable rewards of the shapes world (scorer plugins, `higher_is_better`, no download).

- `shapes-class-prob` (c2i): a feature network's softmax probability of the requested class.
  Its network is a parameter; the default is `REWARD_NETWORK`, the zoo's reward network
  (rewardnet.safetensors: its own architecture widths, seed and training images), never the
  featnet that computes shapes-fid's features and class accuracy: a method is not trained on the
  network it is scored with.
- `shapes-geneval` (t2i): the exact shapes detector's GenEval verdict on the image for its prompt,
  1.0 if correct else 0.0, by the shapes-geneval task's own `score_image` (the same detector, the
  same GenEval rules, the same options), so the reward is exactly the task's per-image correctness.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from vapi_bench.errors import UsageError
from vapi_bench.imageio import to_uint8
from vapi_bench.interfaces import Condition, Entry, Scorer
from vapi_bench.params import Param

from .features import REWARD_WEIGHTS, load_feature_net
from .vocab import NUM_CLASSES

#: The c2i reward's network weights when none is given.
REWARD_NETWORK: Path = REWARD_WEIGHTS


def _conditions(conditions: Sequence[Condition] | None, count: int, kind: type, name: str) -> list:
    if conditions is None or len(conditions) != count:
        got = "none" if conditions is None else len(conditions)
        raise UsageError(f"{name}: needs the condition of each of the {count} images, got {got}.")
    bad = [c for c in conditions if isinstance(c, bool) or not isinstance(c, kind)]
    if bad:
        raise UsageError(f"{name}: conditions must be {kind.__name__}s, got {bad[:3]}.")
    return list(conditions)


class ShapesClassProbability(Scorer):
    """p(requested class | image) under a shapes feature network's class head."""

    differentiable = True
    higher_is_better = True
    needs_reference = False
    needs_conditions = True

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.net = load_feature_net(weights or REWARD_NETWORK)

    def train(self, mode: bool = True) -> "ShapesClassProbability":
        """The network stays frozen in eval mode whatever the caller asks."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, pred: torch.Tensor, conditions: Sequence[Condition] | None = None,
                reference: torch.Tensor | None = None) -> torch.Tensor:
        labels = _conditions(conditions, pred.shape[0], int, "shapes-class-prob")
        if any(not 0 <= c < NUM_CLASSES for c in labels):
            raise UsageError(f"shapes-class-prob: class ids must lie in [0, {NUM_CLASSES}), got {labels[:8]}.")
        probs = self.net.logits(pred.float()).softmax(dim=-1)
        index = torch.tensor(labels, device=probs.device)[:, None]
        return probs.gather(1, index).squeeze(1)


class ShapesGenEvalReward(Scorer):
    """1.0 where the exact detector finds the prompt's GenEval record satisfied, else 0.0."""

    differentiable = False
    higher_is_better = True
    needs_reference = False
    needs_conditions = True

    def __init__(self) -> None:
        super().__init__()
        from vapi_bench.tasks.shapes.geneval_task import ShapesGenEvalTask

        self.task = ShapesGenEvalTask(prompts_per_tag=1)  # only its scorer is used

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, conditions: Sequence[Condition] | None = None,
                reference: torch.Tensor | None = None) -> torch.Tensor:
        from .caption_records import record_for_prompt

        prompts = _conditions(conditions, pred.shape[0], str, "shapes-geneval")
        pixels = to_uint8(pred)
        verdicts = [self.task.score_image(image, record_for_prompt(prompt))["correct"]
                    for image, prompt in zip(pixels, prompts)]
        return torch.tensor(verdicts, dtype=torch.float32, device=pred.device)


def reward_entries() -> list[Entry]:
    """Registry entries of the two verifiable rewards."""
    return [
        Entry("shapes-class-prob", factory=lambda weights="": ShapesClassProbability(weights or None),
              params=(Param("weights", str, "", "feature-network .safetensors (default: REWARD_NETWORK, "
                            "the zoo's reward network, not the evaluation featnet)"),),
              summary="reward: a shapes feature network's probability of the requested class (c2i)"),
        Entry("shapes-geneval", factory=ShapesGenEvalReward,
              summary="reward: the exact shapes detector's GenEval correctness of the image for its prompt "
                      "(t2i, 0 or 1)"),
    ]
