"""`shapes-perceptual`: an LPIPS-like distance computed with the shapes reward network.

LPIPS compares unit-normalised deep activations of two images. The shapes world has no
pretrained VGG/AlexNet, so this scorer uses the four conv stages of the zoo's reward network
(rewardnet.safetensors: a feature network trained separately from, and narrower than, the
evaluation network that shapes-fid scores with; a reward must not be the metric's features)
instead, with LPIPS's un-learned form ("lpips=False" in the official package): per layer,
normalise each spatial position's channel vector to unit length, take the squared difference,
sum over channels, average over space; then sum over layers. Differentiable in `pred`, so methods
can use it as a reward term exactly where the real models use LPIPS.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vapi_bench.interfaces import Entry, Scorer
from vapi_bench.params import Param

if TYPE_CHECKING:
    from .features import ShapesFeatureNet

EPS = 1e-10  # LPIPS's normalize_tensor epsilon


def unit_normalise(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Divide each spatial position's channel vector by its L2 norm (LPIPS normalize_tensor)."""
    return x / (torch.sqrt((x * x).sum(dim=1, keepdim=True)) + eps)


class ShapesPerceptual(Scorer):
    """Per-image perceptual distance [B] between pred and target images in [-1, 1]."""

    differentiable = True

    def __init__(self, net: "ShapesFeatureNet | None" = None, weights: str | Path | None = None) -> None:
        from .features import REWARD_WEIGHTS, load_feature_net  # torch-fidelity + torchvision: import on use

        super().__init__()
        self.net = net if net is not None else load_feature_net(weights or REWARD_WEIGHTS)
        self.net.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "ShapesPerceptual":
        """The feature network stays in eval mode whatever the caller asks (it is frozen)."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"shapes-perceptual: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                             "differ in shape.")
        total = pred.new_zeros(pred.shape[0], dtype=torch.float32)
        for a, b in zip(self.net.activations(pred), self.net.activations(target)):
            diff = (unit_normalise(a.float()) - unit_normalise(b.float())) ** 2
            total = total + diff.sum(dim=1).mean(dim=(1, 2))
        return total


def _build(weights: str = "") -> ShapesPerceptual:
    return ShapesPerceptual(weights=weights or None)


def register_scorers_impl(register) -> None:
    """Called by plugins/shapes/__init__.py's register_scorers hookimpl."""
    register(Entry(
        "shapes-perceptual",
        factory=_build,
        summary="LPIPS-like distance on the shapes reward network's activations (differentiable)",
        params=(Param("weights", str, "", "feature-net .safetensors (default: the zoo's reward network, "
                      "rewardnet.safetensors; never the evaluation network featnet)"),),
    ))
