"""Parity of `hf-mask2former-openmmlab` with mmdet's own Mask2Former (needs mmdet 3.3 + mmcv).

One command, where mmdet is installed:

    python -m vapi_bench.tasks.geneval.mmdet_parity --images 300                 # random weights
    python -m vapi_bench.tasks.geneval.mmdet_parity --checkpoint <mmdet 3.x .pth or URL> \
        --hf-weights release                                                      # the real weights

`--hf-weights same` (default) converts the tensors mmdet's model holds; `release` loads the
`hf-mask2former-openmmlab` backend's default file (GenEval's 2.x release, downloaded and converted
as `vapi-bench prepare` does); a path or URL loads that OpenMMLab file.

mmdet's model (its packaged Swin-S LSJ config) and the converted transformers model see the same
images through their own pipelines: mmdet's `inference_detector` (image transforms, data
preprocessor, MaskFormerFusionHead) against `mask2former.Mask2FormerDetector`. Two pipelines:
`mmdet3` is mmdet 3.3's own test pipeline; `mmdet2` is GenEval's mmdet 2.x pipeline (uint8 resize,
pad with grey 128 before normalising) expressed with mmdet 3.3 transforms. Per image it compares
the 100 detections (labels, scores, boxes, masks; within a class matched by mask overlap) and
the GenEval verdict of every image under the prompt it is paired with (a fixed mean-colour
classifier stands in for CLIP, identical on both sides, so verdicts test the detections only).

With `--checkpoint` omitted the mmdet model gets seeded random weights, with a sharpened class head
so that detections clear GenEval's 0.3 threshold and verdicts are not trivially "nothing found".
Prints a JSON summary; exits 1 when a tolerance is exceeded.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .mask2former import MMDET_TEST_SCALE, SIZE_DIVISOR, Mask2FormerDetector, swin_small_config
from .mmdet_backend import default_config_path, mmdet_checkpoint_requirement, result_to_detections
from .mmdet_convert import convert_state_dict, load_openmmlab_checkpoint
from .openmmlab_weights import load_openmmlab_mask2former
from .prompts import GENEVAL_COLOURS, coco_class_names, geneval_metadata
from .rules import Detections, GenEvalOptions, evaluate_image

#: tolerances. The networks agree to float rounding (class logits ~1e-6 relative on the same input),
#: but a mask pixel whose logit sits at 0 can flip, moving that detection's mean-sigmoid score by
#: ~1e-4, and the masked attention can pass such a flip on; near-equal detections of one class
#: are matched by mask overlap, not by score order
SCORE_ATOL = 3e-3
MASK_MISMATCH = 1e-3
CLASS_HEAD_SHARPENING = 40.0
_COLOUR_RGB = {
    "red": (220, 30, 30), "orange": (240, 140, 20), "yellow": (240, 230, 40), "green": (40, 170, 60),
    "blue": (40, 70, 220), "purple": (130, 50, 170), "pink": (240, 150, 190), "brown": (120, 70, 30),
    "black": (15, 15, 15), "white": (240, 240, 240),
}


def mean_colour_classifier(image: np.ndarray, mask: np.ndarray | None, bbox: np.ndarray, choices: list[str]) -> str:
    """Nearest named colour to the mean colour under the mask: a deterministic stand-in for CLIP."""
    pixels = image[mask] if mask is not None and mask.any() else image.reshape(-1, 3)
    mean = pixels.reshape(-1, 3).mean(0)
    return min(choices, key=lambda c: float(np.sum((mean - np.array(_COLOUR_RGB.get(c, (128, 128, 128)))) ** 2)))


def synthetic_images(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Images with a few flat-coloured rectangles and discs on a noisy background; every other one
    is 3:4 landscape (size x 3/4 high), so the keep-ratio resize and the padding are exercised."""
    rng = np.random.default_rng(seed)
    colours = np.array(list(_COLOUR_RGB.values()))
    images = []
    for index in range(count):
        height = size if index % 2 == 0 else size * 3 // 4
        ys, xs = np.mgrid[:height, :size]
        image = rng.normal(128, 30, (height, size, 3))
        for _ in range(rng.integers(1, 5)):
            colour = colours[rng.integers(len(colours))]
            cy, cx, r = int(rng.integers(0, height)), int(rng.integers(0, size)), int(rng.integers(size // 10, size // 3))
            region = (np.abs(ys - cy) < r) & (np.abs(xs - cx) < r) if rng.random() < 0.5 else (ys - cy) ** 2 + (xs - cx) ** 2 < r * r
            image[region] = colour
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


def _register_mmdet2_pad() -> str:
    """mmdet 2.x's Pad(size_divisor=32, pad_val=128) as an mmdet 3 transform that, like 2.x, keeps
    `img_shape` at the resized size (mmcv 2's Pad overwrites it with the padded size)."""
    import mmcv
    from mmcv.transforms import BaseTransform
    from mmdet.registry import TRANSFORMS

    name = "VapiMmdet2Pad"
    if TRANSFORMS.get(name) is None:

        @TRANSFORMS.register_module(name=name)
        class VapiMmdet2Pad(BaseTransform):
            def transform(self, results: dict) -> dict:
                results["img"] = mmcv.impad_to_multiple(results["img"], SIZE_DIVISOR, pad_val=(128, 128, 128))
                results["pad_shape"] = results["img"].shape
                return results

    return name


def mmdet_test_pipeline(pipeline: str, scale: tuple[int, int]) -> Any:
    """mmdet 3.3's test pipeline (`mmdet3`) or GenEval's mmdet 2.x one (`mmdet2`) for numpy images."""
    from mmcv.transforms import Compose

    meta_keys = ("img_id", "img_shape", "ori_shape", "scale_factor", "pad_shape")
    steps = [dict(type="mmdet.LoadImageFromNDArray", to_float32=pipeline == "mmdet3"),
             dict(type="mmdet.Resize", scale=scale, keep_ratio=True)]
    if pipeline == "mmdet2":
        steps.append(dict(type=_register_mmdet2_pad()))
    steps.append(dict(type="mmdet.PackDetInputs", meta_keys=meta_keys))
    return Compose(steps)


def build_mmdet_model(checkpoint: str | None, device: str = "cpu", seed: int = 0) -> Any:
    """mmdet's Mask2Former Swin-S from its packaged config: a checkpoint's weights (path or URL, loaded
    strictly, read weights-only), or seeded random ones."""
    from mmdet.apis import init_detector

    model = init_detector(str(default_config_path()), None, device=device).eval()
    if checkpoint is not None:
        path = mmdet_checkpoint_requirement(checkpoint).resolve()
        model.load_state_dict(load_openmmlab_checkpoint(path), strict=True)
    else:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, parameter in sorted(model.named_parameters()):
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=gen).to(parameter))
            model.panoptic_head.cls_embed.weight.mul_(CLASS_HEAD_SHARPENING)
    return model


def hf_detector_from_mmdet(
    model: Any, pipeline: str, scale: tuple[int, int], hf_weights: str = "same"
) -> Mask2FormerDetector:
    """The converted transformers model: of mmdet's own tensors (`same`), of the backend's default
    release (`release`), or of an OpenMMLab file (path or URL)."""
    from transformers import Mask2FormerForUniversalSegmentation

    device = next(model.parameters()).device
    if hf_weights == "same":
        config = swin_small_config()
        hf = Mask2FormerForUniversalSegmentation(config)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        hf.load_state_dict(convert_state_dict(state, config), strict=True)
    else:
        hf = load_openmmlab_mask2former("" if hf_weights == "release" else hf_weights, "cpu")
    return Mask2FormerDetector(hf.to(device), scale=scale, pipeline=pipeline, name="hf-mask2former-openmmlab")


@dataclass
class ParityReport:
    pipeline: str
    images: int = 0
    label_mismatches: int = 0
    max_score_diff: float = 0.0
    scores_within_1e5: int = 0
    max_box_diff: float = 0.0
    boxes_identical: int = 0
    boxes_total: int = 0
    max_mask_mismatch: float = 0.0
    verdicts_identical: int = 0
    records_identical: int = 0
    images_with_kept_detections: int = 0
    correct_mmdet: int = 0
    failures: list[str] = field(default_factory=list)

    def within_tolerance(self) -> bool:
        return (self.label_mismatches == 0 and self.max_score_diff <= SCORE_ATOL
                and self.max_mask_mismatch <= MASK_MISMATCH and self.verdicts_identical == self.images)


Row = tuple[float, np.ndarray, np.ndarray]  # score, box [4], mask


def _match(want: list[Row], got: list[Row]) -> list[tuple[Row, Row]]:
    """Pair one class's detections: greedily by mask agreement, then by score closeness."""
    pairs, free = [], list(got)
    for row in want:
        best = min(free, key=lambda other: (float((row[2] != other[2]).mean()), abs(row[0] - other[0])))
        free.remove(best)
        pairs.append((row, best))
    return pairs


def compare_detections(reference: Detections, converted: Detections, report: ParityReport, index: int) -> None:
    """Fold one image's differences into the report (detections of each class matched by mask)."""
    def rows(boxes: np.ndarray, masks: list[np.ndarray]) -> list[Row]:
        return [(float(box[4]), np.asarray(box[:4]), np.asarray(mask, bool)) for box, mask in zip(boxes, masks)]

    per_class = [(rows(*ref), rows(*ours)) for ref, ours in zip(zip(*reference), zip(*converted))]
    if any(len(want) != len(got) for want, got in per_class):
        report.label_mismatches += 1
        report.failures.append(f"image {index}: class counts differ")
        return
    for want, got in per_class:
        for (s1, b1, m1), (s2, b2, m2) in _match(want, got):
            report.max_score_diff = max(report.max_score_diff, abs(s1 - s2))
            report.scores_within_1e5 += abs(s1 - s2) <= 1e-5
            box_diff = float(np.abs(b1 - b2).max())
            report.max_box_diff = max(report.max_box_diff, box_diff)
            report.boxes_identical += box_diff == 0
            report.boxes_total += 1
            report.max_mask_mismatch = max(report.max_mask_mismatch, float((m1 != m2).mean()))


def run_parity(
    model: Any,
    images: Sequence[np.ndarray],
    pipeline: str,
    scale: tuple[int, int] = MMDET_TEST_SCALE,
    options: GenEvalOptions = GenEvalOptions(),
    hf_weights: str = "same",
) -> ParityReport:
    """Compare mmdet's inference with the converted detector on `images` under `pipeline`."""
    from mmdet.apis import inference_detector

    converted = hf_detector_from_mmdet(model, pipeline, scale, hf_weights)
    test_pipeline = mmdet_test_pipeline(pipeline, scale)
    metadata = geneval_metadata()
    names = coco_class_names()
    report = ParityReport(pipeline)
    for index, image in enumerate(images):
        result = inference_detector(model, np.ascontiguousarray(image[..., ::-1]), test_pipeline=test_pipeline)
        reference = result_to_detections(result, len(names))
        ours = converted.detect(image)
        compare_detections(reference, ours, report, index)
        prompt = metadata[index % len(metadata)]
        verdicts = [evaluate_image(prompt, d, image, class_names=names, colour_classifier=mean_colour_classifier,
                                   options=options) for d in (reference, ours)]
        report.images += 1
        report.verdicts_identical += verdicts[0]["correct"] == verdicts[1]["correct"]
        report.records_identical += verdicts[0]["reason"] == verdicts[1]["reason"] and (
            verdicts[0]["detections"].keys() == verdicts[1]["detections"].keys())
        report.images_with_kept_detections += any(verdicts[0]["detections"].values())
        report.correct_mmdet += verdicts[0]["correct"]
        if (index + 1) % 25 == 0:
            print(f"{pipeline}: {index + 1}/{len(images)} images", file=sys.stderr, flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="mmdet 3.x .pth path or URL (default: seeded random weights)")
    parser.add_argument("--hf-weights", default="same", help="same | release | an OpenMMLab .pth path or URL")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="side of the synthetic square images")
    parser.add_argument("--scale", type=int, nargs=2, default=list(MMDET_TEST_SCALE))
    parser.add_argument("--pipeline", choices=("mmdet2", "mmdet3", "both"), default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = build_mmdet_model(args.checkpoint, args.device, args.seed)
    images = synthetic_images(args.images, args.size, args.seed)
    pipelines = ("mmdet3", "mmdet2") if args.pipeline == "both" else (args.pipeline,)
    reports = [run_parity(model, images, p, tuple(args.scale), hf_weights=args.hf_weights) for p in pipelines]
    summary = {"checkpoint": args.checkpoint or f"random (seed {args.seed})", "hf_weights": args.hf_weights,
               "images": args.images, "size": args.size,
               "scale": args.scale, "device": args.device,
               "reports": [{**vars(r), "within_tolerance": r.within_tolerance()} for r in reports]}
    print(json.dumps(summary, indent=2))
    return 0 if all(r.within_tolerance() for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
