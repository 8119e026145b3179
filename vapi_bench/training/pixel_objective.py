"""The pixel objective shared by VA-π (as a reward) and the PT/STE baselines (as a loss).

d(Î, I) = w_mse · MSE(Î, I) + w_p · perceptual(Î, I) per image; VA-π's reward is -d
(docs/reference/vapi.md §1.2: decoded fp32, unclamped, against the original image).
`PIXEL_PARAMS` are the parameters `build_pixel_objective` and `decoded_distances` read.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..interfaces import Generator
from ..params import Param

PIXEL_PARAMS: tuple[Param, ...] = (
    Param("w_mse", float, 1.0, "weight of the pixel MSE term (images in [-1, 1])", minimum=0.0),
    Param("w_perceptual", float, 1.0, "weight of the perceptual term (0 = no perceptual scorer is built)", minimum=0.0),
    Param("perceptual", str, None, "perceptual scorer (registered scorer name); None = the recipe's", from_recipe=True),
    Param("perceptual_weights", str, None, "the perceptual scorer's network weights (its `weights` parameter: "
          "local path, or URL / hf:// for LPIPS); None = the scorer's default"),
    Param("decode_chunk", int, None, "images decoded (and scored) per batch; None = the recipe's (engine default 8)",
          from_recipe=True, minimum=1),
)


class PixelObjective(nn.Module):
    """Per-image distance [B] plus its components (for logging)."""

    def __init__(self, w_mse: float, w_perceptual: float, perceptual: nn.Module | None) -> None:
        super().__init__()
        if w_perceptual and perceptual is None:
            raise ValueError("w_perceptual > 0 needs a perceptual scorer")
        self.w_mse, self.w_perceptual = w_mse, w_perceptual
        self.perceptual = perceptual if w_perceptual else None

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred, target = pred.float(), target.float()
        mse = (pred - target).pow(2).flatten(1).mean(dim=1)
        parts = {"mse": mse}
        total = self.w_mse * mse
        if self.perceptual is not None:
            perc = self.perceptual(pred, target)
            parts["perceptual"] = perc
            total = total + self.w_perceptual * perc
        return total, parts


def build_pixel_objective(values: Mapping[str, Any], device: torch.device) -> PixelObjective:
    """Build the objective from resolved method params; the scorer is loaded (frozen, eval) only
    when its weight is non-zero."""
    scorer = None
    if values["w_perceptual"]:
        from .. import load_scorer

        extra = {"weights": values["perceptual_weights"]} if values.get("perceptual_weights") else {}
        scorer = load_scorer(values["perceptual"], **extra).to(device).eval()
        scorer.requires_grad_(False)
    return PixelObjective(values["w_mse"], values["w_perceptual"], scorer)


@torch.no_grad()
def decoded_distances(
    generator: Generator,
    tokens: torch.Tensor,
    images: torch.Tensor,
    group_size: int,
    objective: PixelObjective,
    chunk: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Decode token rows [B·G, T] (groups contiguous) in chunks and score each against its
    original image images[row // G]; fp32, no autocast, no clamping. Returns d [B·G] and parts."""
    totals, parts_all = [], {}
    owner = torch.arange(tokens.shape[0], device=tokens.device) // group_size
    with torch.autocast(device_type=images.device.type, enabled=False):
        for start in range(0, tokens.shape[0], chunk):
            rows = slice(start, start + chunk)
            decoded = generator.decode(tokens[rows]).float()
            total, parts = objective(decoded, images[owner[rows]])
            totals.append(total)
            for name, value in parts.items():
                parts_all.setdefault(name, []).append(value)
    return torch.cat(totals), {k: torch.cat(v) for k, v in parts_all.items()}
