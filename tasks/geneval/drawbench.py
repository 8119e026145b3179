"""The `drawbench-clip` task: CLIP score of generated images on the 200 DrawBench prompts.

CLIP score follows torchmetrics' `CLIPScore` convention, 100 x cos(image embedding, text
embedding) clamped at 0, with open_clip ViT-L/14 (QuickGELU, OpenAI weights; torchmetrics'
default is the same OpenAI ViT-L/14 through transformers). We clamp each image's score and
average; torchmetrics clamps the average. The two agree whenever no cosine is negative.

DrawBench (Saharia et al., Imagen, 2022) is published as a Google sheet with columns "Prompts"
and "Category"; `DRAWBENCH_CSV_URL` is its CSV export, which `vapi-bench prepare` caches.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from vapi_bench import __version__
from vapi_bench.errors import DataError, UsageError
from vapi_bench.interfaces import Generator, SampleItem, StageContext, Task, TaskResult, iter_batches
from vapi_bench.params import Param
from vapi_bench.prepare import WeightRequirement
from vapi_bench.weights import sha256_file

from .clip_models import DEFAULT_CLIP_ARCH, ClipBundle, clip_requirement, load_clip
from .images import load_rgb

DRAWBENCH_CSV_URL = (
    "https://docs.google.com/spreadsheets/d/1y7nAbmR4FREi6npB1u-Bo3GFdwdOPYJc617rBOxIRHY/gviz/tq?tqx=out:csv&sheet=Sheet1"
)

DRAWBENCH_PARAMS: tuple[Param, ...] = (
    Param("prompts_file", str, "", f"DrawBench CSV (columns Prompts, Category); empty = cached copy of {DRAWBENCH_CSV_URL}"),
    Param("images_per_prompt", int, 1, "images generated and scored per prompt"),
    Param("clip_arch", str, DEFAULT_CLIP_ARCH, "open_clip architecture"),
    Param("clip_weights", str, "", "CLIP weights: local file, hf://repo/file, URL or 'random'; empty = OpenAI ViT-L/14"),
    Param("batch_size", int, 16, "images per CLIP forward pass"),
)


def prompts_requirement(prompts_file: str = "") -> WeightRequirement:
    """The DrawBench CSV: `prompts_file` if given, else the sheet's export cached as drawbench.csv."""
    return WeightRequirement(
        "drawbench",
        url=DRAWBENCH_CSV_URL,
        spec=prompts_file or None,
        local_name="drawbench.csv",
        description="DrawBench prompts (Imagen, 2022), CSV export of the public sheet",
    )


def read_drawbench_prompts(path: Path | str) -> list[dict[str, str]]:
    """[{"prompt", "category"}] from a DrawBench CSV (header names matched case-insensitively)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DataError(f"DrawBench prompts file {path} does not exist.") from None
    if not rows:
        raise DataError(f"DrawBench prompts file {path} holds no rows.")
    columns = {name.strip().lower(): name for name in rows[0] if name}
    if "prompts" not in columns and "prompt" not in columns:
        raise DataError(f"{path}: expected a 'Prompts' column, found {list(rows[0])}.")
    prompt_key = columns.get("prompts", columns.get("prompt"))
    category_key = columns.get("category")
    prompts = [
        {"prompt": row[prompt_key].strip(), "category": (row.get(category_key) or "").strip() if category_key else ""}
        for row in rows
        if (row.get(prompt_key) or "").strip()
    ]
    if not prompts:
        raise DataError(f"{path}: every prompt cell is empty.")
    return prompts


@torch.no_grad()
def clip_scores(clip: ClipBundle, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
    """max(100 * cos(image, text), 0) for each (image, prompt) pair: [len(images)]."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts.")
    pixels = torch.stack([clip.preprocess(image) for image in images]).to(clip.device)
    tokens = clip.tokenizer(list(prompts)).to(clip.device)
    image_features = clip.model.encode_image(pixels, normalize=True).float()
    text_features = clip.model.encode_text(tokens, normalize=True).float()
    return (100.0 * (image_features * text_features).sum(dim=-1)).clamp(min=0)


class DrawBenchClipTask(Task):
    conditioning = "text"

    def __init__(
        self,
        *,
        prompts_file: str = "",
        images_per_prompt: int = 1,
        clip_arch: str = DEFAULT_CLIP_ARCH,
        clip_weights: str = "",
        batch_size: int = 16,
    ) -> None:
        if images_per_prompt < 1 or batch_size < 1:
            raise UsageError("drawbench-clip: images_per_prompt and batch_size must be >= 1.")
        self.prompts_file = prompts_file
        self.images_per_prompt = images_per_prompt
        self.clip_arch = clip_arch
        self.clip_weights = clip_weights
        self.batch_size = batch_size
        self._prompts: list[dict[str, str]] | None = None

    def requirements(self) -> list[WeightRequirement]:
        """Files `vapi-bench prepare` should fetch: the prompt CSV and the CLIP weights."""
        clip = clip_requirement(self.clip_arch, self.clip_weights)
        return [prompts_requirement(self.prompts_file)] + ([clip] if clip else [])

    def prompts_path(self) -> Path:
        return prompts_requirement(self.prompts_file).resolve()

    def prompts(self) -> list[dict[str, str]]:
        if self._prompts is None:
            self._prompts = read_drawbench_prompts(self.prompts_path())
        return self._prompts

    def items(self, generator: Generator, limit: int | None = None) -> list[SampleItem]:
        if generator.conditioning != "text":
            raise UsageError(f"drawbench-clip needs a text-conditional model; {generator.name} is class-conditional.")
        items = [
            SampleItem(
                index=prompt_index * self.images_per_prompt + image_index,
                condition=row["prompt"],
                meta={"prompt_index": prompt_index, "image_index": image_index, "category": row["category"]},
            )
            for prompt_index, row in enumerate(self.prompts())
            for image_index in range(self.images_per_prompt)
        ]
        return items if limit is None else items[:limit]

    def score(self, sample_dir: Path, items: Sequence[SampleItem], ctx: StageContext) -> TaskResult:
        if not items:
            raise DataError("drawbench-clip: no images to score.")
        clip = load_clip(self.clip_arch, self.clip_weights, ctx.device)
        per_sample: list[dict[str, Any]] = []
        for batch in iter_batches(list(items), self.batch_size):
            images = [Image.fromarray(load_rgb(self.image_path(sample_dir, item))) for item in batch]
            scores = clip_scores(clip, images, [str(item.condition) for item in batch]).cpu().tolist()
            per_sample += [
                {"index": item.index, "prompt": item.condition, "category": item.meta["category"], "clip_score": score}
                for item, score in zip(batch, scores)
            ]
        metrics = {"clip_score": float(np.mean([r["clip_score"] for r in per_sample]))}
        for category in sorted({r["category"] for r in per_sample if r["category"]}):
            values = [r["clip_score"] for r in per_sample if r["category"] == category]
            metrics[f"clip_score/{category}"] = float(np.mean(values))
        return TaskResult(
            metrics=metrics,
            per_sample=per_sample,
            evaluator="clip-score (torchmetrics convention, open_clip)",
            evaluator_version=f"open_clip; vapi-bench {__version__}",
            extra={"clip": clip.description, "prompts_sha256": sha256_file(self.prompts_path())},
        )
