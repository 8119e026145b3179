"""Pixel distances per image: mean over channels and pixels (images in [-1, 1])."""
from __future__ import annotations

import torch

from vapi_bench.interfaces import Scorer


class MSEScorer(Scorer):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)


class L1Scorer(Scorer):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred.float() - target.float()).abs().flatten(1).mean(dim=1)
