"""The ADM-compatible Inception: one forward pass gives every feature FID, sFID, IS and P/R need.

torch-fidelity's `FeatureExtractorInceptionV3` is a faithful port of the TF "inception-2015-12-05"
graph the ADM evaluator runs (same weights, TF1 bilinear resize to 299, `(x - 128) / 128`). From
one pass we take:
- `pool`: pool_3, 2048-d (FID, precision/recall, KID);
- `logits`: pool_3 @ fc.weight.T without bias, 1008-d (IS; ADM's `softmax/logits/MatMul`);
- `spatial`: ADM's `mixed_6/conv` = `Mixed_6d.branch1x1` output (after BN + ReLU), first 7
  channels, flattened in TF's NHWC order (17 * 17 * 7 = 2023-d) so that our statistics are
  directly comparable with the `mu_s`/`sigma_s` stored in ADM reference batches (sFID).
The network always runs in float32, with autocast disabled even inside a caller's bf16 autocast
region, so the features match the reference implementation on every device and precision setting.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, DataError
from ..prepare import WeightRequirement

#: torch-fidelity's converted TF weights; the file name carries the sha256 prefix (torch hub rule)
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_SHA256_PREFIX = "6726825d"
SPATIAL_CHANNELS = 7


@dataclass
class InceptionFeatures:
    """Features of N images, float64: pool [N, 2048], logits [N, 1008], spatial [N, 2023]."""

    pool: np.ndarray
    logits: np.ndarray
    spatial: np.ndarray

    def __len__(self) -> int:
        return len(self.pool)


class InceptionExtractor(nn.Module):
    """torch-fidelity's Inception plus a hook capturing the sFID spatial features."""

    def __init__(self, weights_path: Path | str, device: torch.device | str = "cpu") -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights_path)
            )
        except (RuntimeError, OSError, EOFError, KeyError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"Inception weights {weights_path} could not be loaded into torch-fidelity's "
                f"FeatureExtractorInceptionV3 ({first_line}). Expected the state dict of "
                f"{INCEPTION_URL.rsplit('/', 1)[-1]}."
            ) from None
        self._spatial: torch.Tensor | None = None
        self.net.Mixed_6d.branch1x1.register_forward_hook(self._capture_spatial)
        self.to(device)
        self.device = torch.device(device)

    def _capture_spatial(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._spatial = output[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1).float()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 images [B, 3, H, W] (any H, W) -> {'pool', 'logits', 'spatial'} float32 tensors."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise DataError(
                f"Inception expects uint8 images [B, 3, H, W], got {images.dtype} {tuple(images.shape)}."
            )
        with torch.autocast(self.device.type, enabled=False):  # features must not depend on a caller's autocast
            pool, logits = self.net(images.to(self.device))
        spatial, self._spatial = self._spatial, None
        return {"pool": pool, "logits": logits, "spatial": spatial}

    def extract(
        self, batches: Iterable[np.ndarray], progress: Callable[[int], None] | None = None
    ) -> InceptionFeatures:
        """Features of uint8 NHWC batches (PNG / ADM npz layout), concatenated in order, float64."""
        parts: dict[str, list[np.ndarray]] = {"pool": [], "logits": [], "spatial": []}
        for batch in batches:
            array = np.asarray(batch)
            if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
                raise DataError(f"Inception batches must be uint8 [B, H, W, 3], got {array.dtype} {array.shape}.")
            out = self(torch.from_numpy(np.require(array, requirements=["C", "W"])).permute(0, 3, 1, 2))
            for key, value in out.items():
                parts[key].append(value.cpu().numpy().astype(np.float64))
            if progress is not None:
                progress(len(array))
        if not parts["pool"]:
            raise DataError("Inception feature extraction received no images.")
        return InceptionFeatures(**{key: np.concatenate(value) for key, value in parts.items()})


def inception_requirement(weights: str | None = None) -> WeightRequirement:
    """The Inception weights file: `weights` (path, URL or hf://) or torch-fidelity's release file."""
    return WeightRequirement(
        "inception", url=INCEPTION_URL, spec=weights or None, sha256=INCEPTION_SHA256_PREFIX,
        description="ADM-compatible Inception (torch-fidelity's port of TF inception-2015-12-05)",
    )


def load_inception(weights: str | None = None, device: torch.device | str = "cpu") -> InceptionExtractor:
    """The ADM-compatible Inception on `device`, from a local file or torch-fidelity's URL (cached)."""
    return InceptionExtractor(inception_requirement(weights).resolve(), device=device)
