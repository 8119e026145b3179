"""Optional mmdet backend: GenEval's own detector stack, for exact parity with published scores.

mmdet is imported only when this backend is selected. It runs mmdet 3.3 with the mmdet v3.0 copy of
GenEval's checkpoint (same training run as the 2.x release `..._20220504_001756-743b7d99.pth`
GenEval now documents, re-keyed for mmdet 3; GenEval's `download_models.sh` pointed at this copy
until djghosh13/geneval#9, which mmdet 2.x cannot load). mmdet 3.3 has the same instance
post-processing as 2.x; its image pipeline pads differently (see `mask2former.preprocess`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vapi_bench.errors import UsageError
from vapi_bench.prepare import WeightRequirement

from .rules import Detections, group_by_class

MMDET_CHECKPOINT_URL = (
    "https://download.openmmlab.com/mmdetection/v3.0/mask2former/"
    "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco/"
    "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco_20220504_001756-c9d0c4f2.pth"
)
MMDET3_CONFIG = ".mim/configs/mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py"
MMDET2_CONFIG = "../configs/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py"

MMDET_INSTALL_RECIPE = """\
mmdet needs mmcv with compiled ops; PyPI has only mmcv sources and they do not build unpatched
with torch >= 2.6. Working recipe (CPU or CUDA, Python 3.11, torch 2.14):
  pip install "setuptools<80" mmengine==0.10.7 ninja
  pip download --no-deps --no-binary :all: mmcv==2.1.0 && tar xzf mmcv-2.1.0.tar.gz
  sed -i 's/-std=c++17/-std=c++20/g; s#/std:c++17#/std:c++20#g' mmcv-2.1.0/setup.py
  MMCV_WITH_OPS=1 MAX_JOBS=2 pip install --no-build-isolation ./mmcv-2.1.0   # ~25 min on 2 cores
  pip install mmdet==3.3.0
(mmcv-lite does not work: mmdet.apis needs mmcv._ext.)"""


def mmdet_checkpoint_requirement(checkpoint: str) -> WeightRequirement:
    """The detector checkpoint: `checkpoint` (path or URL) or, if empty, the one GenEval uses."""
    return WeightRequirement(
        "mmdet", url=MMDET_CHECKPOINT_URL, spec=checkpoint or None, description="GenEval's Mask2Former Swin-S (mmdet)"
    )


def default_config_path() -> Path:
    """mmdet's own Mask2Former Swin-S LSJ config file (3.x: packaged under .mim; 2.x: a checkout)."""
    import mmdet

    root = Path(mmdet.__file__).parent
    relative = MMDET3_CONFIG if int(mmdet.__version__.split(".")[0]) >= 3 else MMDET2_CONFIG
    return (root / relative).resolve()


def result_to_detections(result: Any, num_classes: int) -> Detections:
    """mmdet 2.x `(bbox_results, segm_results)` pass through; mmdet 3.x DetDataSample is grouped by label."""
    if isinstance(result, tuple):
        bboxes = [np.asarray(b, dtype=np.float32).reshape(-1, 5) for b in result[0]]
        masks = [list(m) for m in result[1]] if len(result) > 1 and result[1] is not None else None
        return bboxes, masks
    if isinstance(result, list):
        return [np.asarray(b, dtype=np.float32).reshape(-1, 5) for b in result], None
    instances = result.pred_instances
    masks = instances.masks.cpu().numpy() if "masks" in instances else None
    return group_by_class(
        instances.labels.cpu().numpy(),
        instances.scores.cpu().numpy(),
        instances.bboxes.cpu().numpy(),
        masks,
        num_classes,
    )


class MMDetDetector:
    """`detectors.Detector` running mmdet's `inference_detector` on GenEval's config and checkpoint."""

    name = "mmdet"

    def __init__(self, *, config: str, checkpoint: str, device: str, num_classes: int = 80) -> None:
        try:
            from mmdet.apis import inference_detector, init_detector
        except ImportError as exc:
            raise UsageError(
                f"detector=mmdet needs mmdet with a compiled mmcv ({exc}).\n{MMDET_INSTALL_RECIPE}\n"
                "Or use the default detector=hf-mask2former-openmmlab (the same weights, no mmcv)."
            ) from None
        self._infer = inference_detector
        self.config = config or str(default_config_path())
        self.checkpoint = str(mmdet_checkpoint_requirement(checkpoint).resolve())
        self.model = init_detector(self.config, self.checkpoint, device=str(device))
        self.num_classes = num_classes

    def describe(self) -> dict[str, Any]:
        import mmdet

        return {"backend": self.name, "mmdet": mmdet.__version__, "config": self.config, "checkpoint": self.checkpoint}

    def detect(self, image: np.ndarray) -> Detections:
        # mmdet's pipelines expect BGR arrays (GenEval feeds files, which mmcv loads as BGR)
        result = self._infer(self.model, np.ascontiguousarray(image[..., ::-1]))
        return result_to_detections(result, self.num_classes)
