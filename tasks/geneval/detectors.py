"""The small detector interface GenEval's rules consume, and the backend switch.

A detector turns an HxWx3 uint8 RGB image into mmdet-2.x result form (`rules.Detections`) over
the 80 COCO classes in COCO order. Backends:
- `hf-mask2former-openmmlab` (default): GenEval's own OpenMMLab checkpoint converted to
  transformers' Mask2Former Swin-S, with mmdet's pre/post-processing (no mmcv needed);
- `hf-mask2former`: the same network with facebook's Detectron2-trained weights (another run);
- `mmdet`: mmdet's own stack (optional install), the reference the converted backend is checked against.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from vapi_bench.errors import UsageError
from vapi_bench.prepare import WeightRequirement

from .rules import Detections

DETECTOR_BACKENDS = ("hf-mask2former-openmmlab", "hf-mask2former", "mmdet")
DEFAULT_DETECTOR = "hf-mask2former-openmmlab"


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> Detections:
        """Detections of one HxWx3 uint8 RGB image, per class in COCO order."""

    def describe(self) -> dict[str, Any]:
        """What produced the detections (backend, weights, settings), recorded with the scores."""


def build_detector(
    backend: str,
    *,
    weights: str,
    device: torch.device,
    scale: tuple[int, int],
    autocast_dtype: torch.dtype | None = None,
    mmdet_config: str = "",
    pipeline: str = "mmdet2",
) -> Detector:
    """Instantiate a backend. `weights` (empty = the backend's default): for hf-mask2former-openmmlab
    an OpenMMLab .pth (path or URL; default GenEval's mmdet 2.x release), a converted .safetensors or
    "random"; for hf-mask2former a local HF folder, a hub id (default
    facebook/mask2former-swin-small-coco-instance) or "random"; for mmdet the .pth checkpoint, a path
    or URL (default: the mmdet 3.x copy). `pipeline` is the hf backends' image pipeline (mmdet2|mmdet3)."""
    if backend == "hf-mask2former-openmmlab":
        from .mask2former import Mask2FormerDetector
        from .openmmlab_weights import MMDET2_CHECKPOINT_URL, load_openmmlab_mask2former

        return Mask2FormerDetector(
            load_openmmlab_mask2former(weights, device), scale=scale, autocast_dtype=autocast_dtype,
            weights=weights or MMDET2_CHECKPOINT_URL, pipeline=pipeline, name=backend,
        )
    if backend == "hf-mask2former":
        from .mask2former import COCO_INSTANCE_HF_ID, Mask2FormerDetector, load_mask2former

        weights = weights or COCO_INSTANCE_HF_ID
        return Mask2FormerDetector(
            load_mask2former(weights, device), scale=scale, autocast_dtype=autocast_dtype, weights=weights,
            pipeline=pipeline,
        )
    if backend == "mmdet":
        from .mmdet_backend import MMDetDetector

        return MMDetDetector(config=mmdet_config, checkpoint=weights, device=str(device))
    raise UsageError(f"unknown GenEval detector {backend!r}; choose one of {list(DETECTOR_BACKENDS)}.")


def detector_requirements(backend: str, weights: str) -> list[WeightRequirement]:
    """Files `vapi-bench prepare` fetches for a backend (none for local folders or random weights)."""
    if backend == "hf-mask2former-openmmlab":
        from .openmmlab_weights import requirements

        return requirements(weights)
    if backend == "hf-mask2former":
        from .mask2former import COCO_INSTANCE_HF_ID, checkpoint_requirements

        return checkpoint_requirements(weights or COCO_INSTANCE_HF_ID)
    if backend == "mmdet":
        from .mmdet_backend import mmdet_checkpoint_requirement

        return [mmdet_checkpoint_requirement(weights)]
    raise UsageError(f"unknown GenEval detector {backend!r}; choose one of {list(DETECTOR_BACKENDS)}.")
