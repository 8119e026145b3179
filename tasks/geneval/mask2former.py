"""Pure-PyTorch GenEval detector: transformers' Mask2Former Swin-S with mmdet's inference recipe.

GenEval scores with mmdet's Mask2Former Swin-S (COCO instance). transformers ships the same
68.7 M-parameter architecture, but its `post_process_instance_segmentation` resizes mask logits to
384x384 first, so scores and masks differ from mmdet's. Here the mmdet pipeline is reproduced:

- image (`preprocess`): keep-ratio resize into (1333, 800) (mmcv's rescale rule, bilinear),
  ImageNet mean/std on RGB, padding right/bottom to a multiple of 32. The two mmdet majors differ:
  `mmdet2` (GenEval's: mmdet 2.x `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py`) resizes the
  uint8 image to uint8 (OpenCV's fixed-point bilinear, reproduced bit-exactly by
  `resize_uint8_like_opencv`) and pads with grey 128 *before* normalising; `mmdet3` (mmdet 3.3's
  config, `LoadImageFromFile(to_float32=True)` + `DetDataPreprocessor`) resizes in float32 and pads
  with 0 *after* normalising. The pixel decoder has no padding mask, so the padding reaches the scores;
- masks: logits upsampled bilinearly to the padded input, the padding cropped off, then resized
  bilinearly to the original image size;
- `instance_postprocess` (MaskFormerFusionHead, same formula in mmdet 2.28 and 3.3): softmax over
  the 81 classes, drop "no object", top-100 over (query x class), binary mask = logit > 0,
  score = class prob x mean sigmoid inside the mask, box = tight box of the mask (x2 = last + 1).

Only the selected queries are upsampled: upsampling is per query, so this equals mmdet's
upsample-all-then-select and saves memory at full resolution.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.prepare import WeightRequirement

from .rules import Detections, group_by_class

COCO_INSTANCE_HF_ID = "facebook/mask2former-swin-small-coco-instance"
RANDOM_WEIGHTS = "random"
#: what `from_pretrained` needs from a hub checkpoint (the 2022 uploads ship PyTorch .bin weights)
HF_CHECKPOINT_FILES = ("config.json", "pytorch_model.bin")
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
MMDET_TEST_SCALE = (1333, 800)
SIZE_DIVISOR = 32
MAX_PER_IMAGE = 100
#: image pipelines: GenEval's mmdet 2.x config, mmdet 3.3's config (see the module docstring)
PIPELINES = ("mmdet2", "mmdet3")
#: mmdet 2.x instance config: Pad(size_divisor=32, pad_val=dict(img=(128, 128, 128))) before Normalize
MMDET2_PAD_VALUE = 128.0


def swin_small_config(num_labels: int = 80, num_queries: int = 100) -> Any:
    """The Mask2Former Swin-S (patch 4, window 7) configuration of GenEval's detector."""
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=96,
        depths=[2, 2, 18, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(backbone_config=backbone, num_labels=num_labels, num_queries=num_queries)


def checkpoint_requirements(weights: str) -> list[WeightRequirement]:
    """The files of a hub checkpoint (`owner/name`) that `load_mask2former` reads from the cache;
    none for a local folder or "random"."""
    if weights == RANDOM_WEIGHTS or Path(weights).expanduser().is_dir():
        return []
    if weights.count("/") != 1 or not all(weights.split("/")):
        raise UsageError(
            f"detector_weights {weights!r} is neither a local folder, a Hugging Face id (owner/name) nor 'random'."
        )
    return [
        WeightRequirement(
            f"detector-{weights.replace('/', '--')}",
            url=f"hf://{weights}/{name}",
            description=f"Mask2Former checkpoint {weights} ({name})",
        )
        for name in HF_CHECKPOINT_FILES
    ]


def load_mask2former(weights: str, device: torch.device | str, num_labels: int = 80) -> torch.nn.Module:
    """Mask2FormerForUniversalSegmentation from a local HF folder, a hub id (downloaded into the
    vapi-bench cache, or read from it offline), or "random" (GenEval's Swin-S configuration)."""
    from transformers import Mask2FormerForUniversalSegmentation

    if weights == RANDOM_WEIGHTS:
        model = Mask2FormerForUniversalSegmentation(swin_small_config(num_labels))
    else:
        files = [req.resolve() for req in checkpoint_requirements(weights)]
        folder = files[0].parent if files else Path(weights).expanduser()
        try:
            model = Mask2FormerForUniversalSegmentation.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load Mask2Former weights from {folder}: {exc}") from None
    if model.config.num_labels != num_labels:
        raise CheckpointError(
            f"Mask2Former weights {weights!r} have {model.config.num_labels} classes; GenEval needs the "
            f"{num_labels} COCO thing classes in COCO order (a *-coco-instance checkpoint)."
        )
    return model.to(device).eval()


def keep_ratio_size(height: int, width: int, scale: tuple[int, int] = MMDET_TEST_SCALE) -> tuple[int, int]:
    """(new_height, new_width) by mmcv's `rescale_size`: the largest size whose long edge fits
    max(scale) and short edge fits min(scale), rounded half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


#: OpenCV's fixed-point bilinear weights for 8-bit images (INTER_RESIZE_COEF_BITS)
OPENCV_COEF_BITS = 11


def _opencv_linear_taps(src_len: int, dst_len: int, clamp_fraction: bool) -> tuple[torch.Tensor, ...]:
    """Source indices and 11-bit weights of cv2.resize(INTER_LINEAR) along one axis.

    OpenCV computes the source position in float32, rounds each weight to 1/2048 on its own, and at
    the borders clamps the horizontal fraction to 0 but only the row indices vertically.
    """
    scale = 1.0 / (dst_len / src_len)
    position = ((np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    if clamp_fraction:
        outside = (first < 0) | (first >= src_len - 1)
        fraction[outside] = 0
        first = np.where(first < 0, 0, np.where(first >= src_len - 1, src_len - 1, first))
    one = np.float32(1 << OPENCV_COEF_BITS)
    weight0 = np.rint((np.float32(1) - fraction) * one).astype(np.int64)
    weight1 = np.rint(fraction * one).astype(np.int64)
    taps = (np.clip(first, 0, src_len - 1), np.clip(first + 1, 0, src_len - 1), weight0, weight1)
    return tuple(torch.from_numpy(t) for t in taps)


def resize_uint8_like_opencv(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    """cv2.resize(image, (width, height), INTER_LINEAR) of a uint8 HxWxC image, bit-exact, in torch.

    mmcv resizes uint8 images with OpenCV, whose 8-bit bilinear path is fixed-point: 11-bit weights,
    an exact horizontal pass, and a vertical pass that (in its SIMD kernel) shifts rows right by 4,
    takes the high 16 bits of each product and rounds by 2 bits. A float bilinear resize rounded to
    uint8 differs by one grey level on ~13% of pixels. Returns [C, height, width] float32 values.
    """
    source = torch.from_numpy(np.array(image, dtype=np.int64))  # a copy: PIL arrays are read-only
    x0, x1, a0, a1 = _opencv_linear_taps(image.shape[1], width, clamp_fraction=True)
    y0, y1, b0, b1 = _opencv_linear_taps(image.shape[0], height, clamp_fraction=False)
    rows = source[:, x0] * a0[None, :, None] + source[:, x1] * a1[None, :, None]
    top, bottom = rows[y0] >> 4, rows[y1] >> 4
    out = (((top * b0[:, None, None]) >> 16) + ((bottom * b1[:, None, None]) >> 16) + 2) >> 2
    return out.clamp(0, 255).permute(2, 0, 1).float()


def preprocess(
    image: np.ndarray,
    scale: tuple[int, int] = MMDET_TEST_SCALE,
    size_divisor: int = SIZE_DIVISOR,
    pipeline: str = "mmdet2",
) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 HxWx3 RGB -> (normalised, padded pixel values [1, 3, Hp, Wp], resized (h, w)), following
    mmdet 2.x's (`mmdet2`, GenEval's) or mmdet 3.3's (`mmdet3`) test pipeline."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}.")
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown detector pipeline {pipeline!r}; choose one of {list(PIPELINES)}.")
    height, width = keep_ratio_size(image.shape[0], image.shape[1], scale)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    padding = (0, -width % size_divisor, 0, -height % size_divisor)
    if pipeline == "mmdet2":  # mmcv resizes the uint8 image with OpenCV and returns uint8
        pixels = F.pad(resize_uint8_like_opencv(image, height, width)[None], padding, value=MMDET2_PAD_VALUE)
        return (pixels - mean) / std, (height, width)
    # mmdet 3.3 resizes a float32 copy: OpenCV's float bilinear is the plain half-pixel formula
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()  # copy: PIL arrays are read-only
    pixels = F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False)
    return F.pad((pixels - mean) / std, padding, value=0.0), (height, width)


def select_instances(class_logits: torch.Tensor, max_per_image: int = MAX_PER_IMAGE) -> tuple[torch.Tensor, ...]:
    """Top (query, class) pairs: (query indices [k], labels [k], class probabilities [k]).

    class_logits [Q, C + 1], the last column being "no object". Sorted by probability.
    """
    num_classes = class_logits.shape[1] - 1
    probs = F.softmax(class_logits.float(), dim=-1)[:, :-1].flatten()
    top_probs, top = probs.topk(min(max_per_image, probs.numel()))
    return top // num_classes, top % num_classes, top_probs


def score_masks(class_probs: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(scores [k], binary masks [k, H, W], boxes [k, 4]) from full-resolution mask logits [k, H, W]."""
    mask_logits = mask_logits.float()
    binary = mask_logits > 0
    inside = binary.flatten(1).float()
    mask_scores = (mask_logits.sigmoid().flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)
    return class_probs * mask_scores, binary, masks_to_boxes(binary)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes [k, 4] (x1, y1, last x + 1, last y + 1) of bool masks [k, H, W]; empty -> zeros."""
    boxes = torch.zeros(masks.shape[0], 4, dtype=torch.float32, device=masks.device)
    if masks.shape[0] == 0:
        return boxes
    cols = masks.any(dim=1)  # [k, W]
    rows = masks.any(dim=2)  # [k, H]
    nonempty = cols.any(dim=1)
    xs = torch.arange(masks.shape[2], device=masks.device)
    ys = torch.arange(masks.shape[1], device=masks.device)
    big = masks.shape[1] + masks.shape[2]
    boxes[:, 0] = torch.where(cols, xs, big).amin(dim=1).float()
    boxes[:, 1] = torch.where(rows, ys, big).amin(dim=1).float()
    boxes[:, 2] = torch.where(cols, xs, -1).amax(dim=1).float() + 1
    boxes[:, 3] = torch.where(rows, ys, -1).amax(dim=1).float() + 1
    boxes[~nonempty] = 0
    return boxes


def instance_postprocess(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, max_per_image: int = MAX_PER_IMAGE
) -> tuple[torch.Tensor, ...]:
    """mmdet's instance post-processing on full-resolution logits: (labels, scores, boxes, masks)."""
    queries, labels, class_probs = select_instances(class_logits, max_per_image)
    scores, masks, boxes = score_masks(class_probs, mask_logits[queries])
    return labels, scores, boxes, masks


def masks_to_image(
    mask_logits: torch.Tensor, padded_size: tuple[int, int], resized_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """Low-resolution mask logits [k, h, w] -> logits at the original image size [k, H, W]."""
    logits = F.interpolate(mask_logits[:, None].float(), size=padded_size, mode="bilinear", align_corners=False)
    logits = logits[:, :, : resized_size[0], : resized_size[1]]
    return F.interpolate(logits, size=original_size, mode="bilinear", align_corners=False)[:, 0]


class Mask2FormerDetector:
    """`detectors.Detector` backed by transformers' Mask2FormerForUniversalSegmentation (facebook's
    weights as `hf-mask2former`, GenEval's converted OpenMMLab weights as `hf-mask2former-openmmlab`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        scale: tuple[int, int] = MMDET_TEST_SCALE,
        max_per_image: int = MAX_PER_IMAGE,
        autocast_dtype: torch.dtype | None = None,
        weights: str = "",
        pipeline: str = "mmdet2",
        name: str = "hf-mask2former",
    ) -> None:
        if pipeline not in PIPELINES:
            raise UsageError(f"unknown detector pipeline {pipeline!r}; choose one of {list(PIPELINES)}.")
        self.name = name
        self.pipeline = pipeline
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.scale = tuple(scale)
        self.max_per_image = max_per_image
        self.autocast_dtype = autocast_dtype
        self.weights = weights
        self.num_classes = int(model.config.num_labels)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "weights": self.weights,
            "test_scale": list(self.scale),
            "pipeline": self.pipeline,
            "max_per_image": self.max_per_image,
            "autocast": str(self.autocast_dtype) if self.autocast_dtype else "fp32",
        }

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> Detections:
        pixels, resized = preprocess(image, self.scale, pipeline=self.pipeline)
        pixels = pixels.to(self.device)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype
            else contextlib.nullcontext()
        )
        with autocast:
            out = self.model(pixel_values=pixels)
        queries, labels, class_probs = select_instances(out.class_queries_logits[0], self.max_per_image)
        logits = masks_to_image(out.masks_queries_logits[0][queries], tuple(pixels.shape[-2:]), resized, image.shape[:2])
        scores, masks, boxes = score_masks(class_probs, logits)
        return group_by_class(
            labels.cpu().numpy(), scores.cpu().numpy(), boxes.cpu().numpy(), masks.cpu().numpy(), self.num_classes
        )
