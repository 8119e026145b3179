"""The `geneval` task: GenEval's 553 prompts x 4 images, its folder layout and its scoring rules.

Sampling writes GenEval's layout (see `layout.py`), so a sample folder can also be scored by the
official `evaluate_images.py`. Scoring runs a detector backend (default: GenEval's OpenMMLab
Mask2Former weights converted to transformers, with mmdet's pre/post-processing) and GenEval's
CLIP colour classifier, applies `rules.py`, and reports per-tag accuracy plus "overall" (unweighted mean of the six tag accuracies). Per-image
results are appended to a JSONL file as they are produced, so an interrupted scoring run resumes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from vapi_bench import __version__
from vapi_bench.errors import DataError, UsageError, decode_utf8
from vapi_bench.interfaces import Generator, SampleItem, StageContext, TaskResult
from vapi_bench.params import Param
from vapi_bench.prepare import WeightRequirement
from vapi_bench.store import append_jsonl, read_jsonl

from . import layout
from .clip_models import DEFAULT_CLIP_ARCH, clip_requirement, load_clip
from .colour import ClipColourClassifier
from .detectors import DEFAULT_DETECTOR, DETECTOR_BACKENDS, build_detector, detector_requirements
from .images import load_rgb
from .mask2former import PIPELINES
from .prompts import coco_class_names, geneval_metadata
from .rules import GenEvalOptions, evaluate_image, summarize

GENEVAL_REVISION = "djghosh13/geneval@af4902f"

#: images per prompt beyond which the item list alone would not fit in memory (a typo: 4e6 for 4)
MAX_IMAGES_PER_PROMPT = 1000

GENEVAL_PARAMS: tuple[Param, ...] = (
    Param("images_per_prompt", int, 4, "images generated and scored per prompt (GenEval: 4)", minimum=1,
          maximum=MAX_IMAGES_PER_PROMPT),
    Param("metadata_file", str, "", "a GenEval-format evaluation_metadata.jsonl; empty = the 553 official prompts"),
    Param("detector", str, DEFAULT_DETECTOR, "detector backend", choices=DETECTOR_BACKENDS),
    Param("detector_weights", str, "", "hf-mask2former-openmmlab: OpenMMLab .pth path/URL, converted .safetensors "
          "or 'random'; hf-mask2former: HF folder, hub id or 'random'; mmdet: .pth path or URL; "
          "empty = the backend's default"),
    Param("detector_scale", tuple, (1333, 800), "keep-ratio test resize of the hf-mask2former* backends (mmdet's)",
          minimum=1, length=2),
    Param("detector_pipeline", str, "mmdet2", "image pipeline of the hf-mask2former* backends: mmdet2 (GenEval's "
          "mmdet 2.x config: uint8 resize, pad 128 before normalising) or mmdet3 (mmdet 3.3's)", choices=PIPELINES),
    Param("mmdet_config", str, "", "mmdet config file; empty = mmdet's Mask2Former Swin-S LSJ COCO config"),
    Param("clip_arch", str, DEFAULT_CLIP_ARCH, "open_clip architecture of the colour classifier"),
    Param("clip_weights", str, "", "CLIP weights: local file, hf://repo/file, URL or 'random'; empty = OpenAI ViT-L/14"),
    Param("threshold", float, 0.3, "detection score threshold", minimum=0.0, maximum=1.0),
    Param("counting_threshold", float, 0.9, "detection score threshold for counting prompts", minimum=0.0, maximum=1.0),
    Param("max_objects", int, 16, "detections kept per class", minimum=1),
    Param("max_overlap", float, 1.0, "NMS IoU threshold (1.0 = no NMS, GenEval's default)", minimum=0.0, maximum=1.0),
    Param("position_threshold", float, 0.1, "relative-position dead zone, as a fraction of the object sizes",
          minimum=0.0),
    Param("bgcolor", str, "#999", "background behind masked colour crops ('original' keeps the image)"),
    Param("crop", bool, True, "crop colour crops to the detection box"),
)


class GenEvalTask(layout.GenEvalLayoutTask):
    conditioning = "text"
    key_metrics = (("overall", "higher"), ("correct_images", "higher"))

    def __init__(
        self,
        *,
        images_per_prompt: int = 4,
        metadata_file: str = "",
        detector: str = DEFAULT_DETECTOR,
        detector_weights: str = "",
        detector_scale: tuple[int, ...] = (1333, 800),
        detector_pipeline: str = "mmdet2",
        mmdet_config: str = "",
        clip_arch: str = DEFAULT_CLIP_ARCH,
        clip_weights: str = "",
        threshold: float = 0.3,
        counting_threshold: float = 0.9,
        max_objects: int = 16,
        max_overlap: float = 1.0,
        position_threshold: float = 0.1,
        bgcolor: str = "#999",
        crop: bool = True,
    ) -> None:
        if images_per_prompt < 1:
            raise UsageError(f"geneval: images_per_prompt must be >= 1, got {images_per_prompt}.")
        if len(detector_scale) != 2:
            raise UsageError(f"geneval: detector_scale needs two sizes (long, short), got {detector_scale}.")
        self.images_per_prompt = images_per_prompt
        self.metadata = _load_metadata(metadata_file) if metadata_file else geneval_metadata()
        self.metadata_source = metadata_file or "built-in (regenerated GenEval prompts)"
        self.detector_backend = detector
        self.detector_weights = detector_weights
        self.detector_scale = (int(detector_scale[0]), int(detector_scale[1]))
        self.detector_pipeline = detector_pipeline
        self.mmdet_config = mmdet_config
        self.clip_arch = clip_arch
        self.clip_weights = clip_weights
        self.options = GenEvalOptions(
            threshold=threshold,
            counting_threshold=counting_threshold,
            max_objects=max_objects,
            max_overlap=max_overlap,
            position_threshold=position_threshold,
            bgcolor=bgcolor,
            crop=crop,
        )
        self.class_names = coco_class_names()
        _check_classes(self.metadata, self.class_names, self.metadata_source)

    # ---- sampling --------------------------------------------------------------------------
    def items(self, generator: Generator, limit: int | None = None) -> list[SampleItem]:
        if generator.conditioning != "text":
            raise UsageError(f"geneval needs a text-conditional model; {generator.name} is class-conditional.")
        return self.prompt_items(limit)

    def requirements(self) -> list[WeightRequirement]:
        """Files `vapi-bench prepare` should fetch: detector and CLIP weights."""
        clip = clip_requirement(self.clip_arch, self.clip_weights)
        return detector_requirements(self.detector_backend, self.detector_weights) + ([clip] if clip else [])

    # ---- scoring ---------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Everything that changes a score, recorded with it and fingerprinting the resume file."""
        return {
            "geneval": GENEVAL_REVISION,
            "detector": self.detector_backend,
            "detector_weights": self.detector_weights,
            "detector_scale": list(self.detector_scale),
            "detector_pipeline": self.detector_pipeline,
            "mmdet_config": self.mmdet_config,
            "clip_arch": self.clip_arch,
            "clip_weights": self.clip_weights,
            "options": asdict(self.options),
        }

    def score(self, sample_dir: Path, items: Sequence[SampleItem], ctx: StageContext) -> TaskResult:
        settings = self.settings()
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        records_path = Path(ctx.out_dir) / f"geneval-records-{fingerprint}.jsonl"
        done = {record["index"]: record for record in read_jsonl(records_path)}
        pending = [item for item in items if item.index not in done]

        extra: dict[str, Any] = {"settings": settings, "metadata_source": self.metadata_source}
        if pending:
            autocast = torch.bfloat16 if ctx.precision == "bf16" else None
            detector = build_detector(
                self.detector_backend,
                weights=self.detector_weights,
                device=ctx.device,
                scale=self.detector_scale,
                autocast_dtype=autocast,
                mmdet_config=self.mmdet_config,
                pipeline=self.detector_pipeline,
            )
            extra["detector"] = detector.describe()
            colour = None
            if any("color" in clause for item in pending for clause in item.meta["metadata"].get("include", [])):
                clip = load_clip(self.clip_arch, self.clip_weights, ctx.device)
                colour = ClipColourClassifier(clip, bgcolor=self.options.bgcolor, crop=self.options.crop)
                extra["clip"] = clip.description
            for item in pending:
                record = self._score_one(sample_dir, item, detector, colour)
                append_jsonl(records_path, record)
                done[item.index] = record

        per_sample = [done[item.index] for item in items]
        return TaskResult(
            metrics=summarize(per_sample),
            per_sample=per_sample,
            evaluator=f"geneval-rules+{self.detector_backend}",
            evaluator_version=f"{GENEVAL_REVISION}; vapi-bench {__version__}",
            extra=extra,
        )

    def _score_one(self, sample_dir: Path, item: SampleItem, detector: Any, colour: Any) -> dict[str, Any]:
        prompt_index, image_index = item.meta["prompt_index"], item.meta["image_index"]
        metadata = layout.read_prompt_metadata(sample_dir, prompt_index)
        image = load_rgb(self.image_path(sample_dir, item))
        result = evaluate_image(
            metadata,
            detector.detect(image),
            image,
            class_names=self.class_names,
            colour_classifier=colour,
            options=self.options,
        )
        return {"index": item.index, "prompt_index": prompt_index, "image_index": image_index, **result}


def _check_classes(metadata: list[dict[str, Any]], class_names: list[str], source: str) -> None:
    """Every clause must name a detector class, else it could never be satisfied."""
    known = set(class_names)
    for number, record in enumerate(metadata, start=1):
        for clause in record.get("include", []) + record.get("exclude", []):
            if clause.get("class") not in known:
                raise DataError(f"{source}: prompt {number} names class {clause.get('class')!r}, not a COCO class.")


def _load_metadata(path: str) -> list[dict[str, Any]]:
    """Read a GenEval-format evaluation_metadata.jsonl, naming the line of any broken record."""
    records = []
    try:
        lines = decode_utf8(Path(path).read_bytes(), path).splitlines()
    except FileNotFoundError:
        raise DataError(f"geneval metadata_file {path} does not exist.") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc}).") from None
        if not isinstance(record, dict) or not {"tag", "prompt", "include"} <= set(record):
            raise DataError(f"{path}:{number}: a GenEval record needs 'tag', 'prompt' and 'include'.")
        records.append(record)
    if not records:
        raise DataError(f"geneval metadata_file {path} holds no prompts.")
    return records
