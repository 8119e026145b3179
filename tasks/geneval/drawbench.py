"""The `drawbench` task (alias `drawbench-clip`): DrawBench prompts scored by CLIP score and HPS.

The VA-π paper's DrawBench table reports CLIP score and HPS v2 side by side; `metrics` chooses the
columns (default both), each computed by the suite's scorer plugin of the same name, so a task's
metric and a method's reward are one implementation:
- `clip_score`: torchmetrics' `CLIPScore` convention, 100 x cos(image embedding, text embedding)
  clamped at 0, with open_clip ViT-L/14 (QuickGELU, OpenAI weights; torchmetrics' default is the
  same OpenAI ViT-L/14 through transformers). We clamp each image's score and average;
  torchmetrics clamps the average. The two agree whenever no cosine is negative.
- `hpsv2.1` (or `hpsv2` with hps_version=v2.0): 100 x the HPS cosine, the HPS benchmark tables'
  convention (docs/reference/peers.md §3.4); AR-GRPO's DrawBench evaluation uses v2.1, hence the default. The
  version is in the column name because v2.0 and v2.1 scores are not comparable.

DrawBench (Saharia et al., Imagen, 2022) is published as a Google sheet with columns "Prompts"
and "Category"; `DRAWBENCH_CSV_URL` is its CSV export, which `vapi-bench prepare` caches.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vapi_bench import __version__, load_scorer
from vapi_bench.errors import DataError, UsageError, decode_utf8
from vapi_bench.interfaces import Generator, SampleItem, StageContext, Task, TaskResult, iter_batches
from vapi_bench.params import Param
from vapi_bench.prepare import WeightRequirement
from vapi_bench.registry import get_registry
from vapi_bench.weights import sha256_file

from .clip_models import DEFAULT_CLIP_ARCH
from .task import MAX_IMAGES_PER_PROMPT
from .images import load_rgb, stack_pixels

DRAWBENCH_CSV_URL = (
    "https://docs.google.com/spreadsheets/d/1y7nAbmR4FREi6npB1u-Bo3GFdwdOPYJc617rBOxIRHY/gviz/tq?tqx=out:csv&sheet=Sheet1"
)

METRICS = ("clip", "hps")
HPS_VERSIONS = ("v2.0", "v2.1")
EVALUATORS = {"clip": "clip-score (torchmetrics convention, open_clip)", "hps": "HPS (100 x cosine, open_clip ViT-H-14)"}

DRAWBENCH_PARAMS: tuple[Param, ...] = (
    Param("prompts_file", str, "", f"DrawBench CSV (columns Prompts, Category); empty = cached copy of {DRAWBENCH_CSV_URL}"),
    Param("images_per_prompt", int, 1, "images generated and scored per prompt", minimum=1,
          maximum=MAX_IMAGES_PER_PROMPT),
    Param("metrics", str, "clip,hps", "comma-separated columns: clip (clip_score) and/or hps (hpsv2.1 or hpsv2)"),
    Param("clip_arch", str, DEFAULT_CLIP_ARCH, "open_clip architecture"),
    Param("clip_weights", str, "", "CLIP weights: local file, hf://repo/file, URL or 'random'; empty = OpenAI ViT-L/14"),
    Param("hps_version", str, "v2.1", "HPS version (the column is named after it)", choices=HPS_VERSIONS),
    Param("hps_weights", str, "", "HPS checkpoint: local file, hf://repo/file or URL; empty = the official release"),
    Param("batch_size", int, 16, "images per scoring forward pass", minimum=1),
)


def parse_metrics(text: str) -> tuple[str, ...]:
    """The metric names in `text` ("clip,hps"), validated, in the order given, without repeats."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise UsageError(f"drawbench: metrics={text!r} must name one or more of {list(METRICS)}.")
    return names


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
        text = decode_utf8(path.read_bytes(), path)
    except FileNotFoundError:
        raise DataError(f"DrawBench prompts file {path} does not exist.") from None
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
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


def clip_score_convention(cosines: torch.Tensor) -> torch.Tensor:
    """torchmetrics' CLIPScore per image: max(100 * cos, 0)."""
    return (100.0 * cosines).clamp(min=0)


class DrawBenchTask(Task):
    conditioning = "text"

    def __init__(
        self,
        *,
        prompts_file: str = "",
        images_per_prompt: int = 1,
        metrics: str = "clip,hps",
        clip_arch: str = DEFAULT_CLIP_ARCH,
        clip_weights: str = "",
        hps_version: str = "v2.1",
        hps_weights: str = "",
        batch_size: int = 16,
    ) -> None:
        if images_per_prompt < 1 or batch_size < 1:
            raise UsageError("drawbench: images_per_prompt and batch_size must be >= 1.")
        if hps_version not in HPS_VERSIONS:
            raise UsageError(f"drawbench: hps_version must be one of {list(HPS_VERSIONS)}, got {hps_version!r}.")
        self.prompts_file = prompts_file
        self.images_per_prompt = images_per_prompt
        self.metrics = parse_metrics(metrics)
        self.batch_size = batch_size
        self.scorer_params = {
            "clip": ("clip-score", {"arch": clip_arch, "weights": clip_weights}),
            "hps": ("hpsv2" if hps_version == "v2.0" else "hpsv2.1", {"weights": hps_weights}),
        }
        self._prompts: list[dict[str, str]] | None = None
        # both columns are scores where higher is better; named as score() names them
        self.key_metrics = tuple(("clip_score" if m == "clip" else self.scorer_params[m][0], "higher")
                                 for m in self.metrics)

    def requirements(self) -> list[WeightRequirement]:
        """Files `vapi-bench prepare` should fetch: the prompt CSV and each chosen scorer's weights."""
        found = [prompts_requirement(self.prompts_file)]
        for metric in self.metrics:
            name, params = self.scorer_params[metric]
            found += get_registry().get("scorers", name).requirements(**params)
        return found

    def prompts_path(self) -> Path:
        return prompts_requirement(self.prompts_file).resolve()

    def prompts(self) -> list[dict[str, str]]:
        if self._prompts is None:
            self._prompts = read_drawbench_prompts(self.prompts_path())
        return self._prompts

    def items(self, generator: Generator, limit: int | None = None) -> list[SampleItem]:
        if generator.conditioning != "text":
            raise UsageError(f"drawbench needs a text-conditional model; {generator.name} is class-conditional.")
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
            raise DataError("drawbench: no images to score.")
        scorers = {}
        for metric in self.metrics:
            name, params = self.scorer_params[metric]
            scorers[metric] = (name, load_scorer(name, **params).to(ctx.device).eval())
        columns = {metric: "clip_score" if metric == "clip" else name for metric, (name, _) in scorers.items()}
        per_sample: list[dict[str, Any]] = []
        for batch in iter_batches(list(items), self.batch_size):
            pixels = stack_pixels([load_rgb(self.image_path(sample_dir, item)) for item in batch], "drawbench")
            texts = [str(item.condition) for item in batch]
            values = {}
            for metric, (_, scorer) in scorers.items():
                cosines = scorer.score_pixels(pixels, texts)
                values[columns[metric]] = (clip_score_convention(cosines) if metric == "clip" else 100.0 * cosines)
            per_sample += [
                {"index": item.index, "prompt": item.condition, "category": item.meta["category"],
                 **{column: float(value[row]) for column, value in values.items()}}
                for row, item in enumerate(batch)
            ]
        metrics: dict[str, float] = {}
        categories = sorted({r["category"] for r in per_sample if r["category"]})
        for column in columns.values():
            metrics[column] = float(np.mean([r[column] for r in per_sample]))
            for category in categories:
                metrics[f"{column}/{category}"] = float(np.mean([r[column] for r in per_sample if r["category"] == category]))
        return TaskResult(
            metrics=metrics,
            per_sample=per_sample,
            evaluator=" + ".join(EVALUATORS[metric] for metric in self.metrics),
            evaluator_version=f"open_clip; vapi-bench {__version__}",
            extra={**{columns[m]: s.description for m, (_, s) in scorers.items()},
                   "prompts_sha256": sha256_file(self.prompts_path())},
        )
