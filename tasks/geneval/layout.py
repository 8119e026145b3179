"""GenEval's sample-folder layout, so the official scripts can score our samples and vice versa.

    <dir>/<prompt_idx:05d>/metadata.jsonl        one JSON object: that prompt's metadata
    <dir>/<prompt_idx:05d>/samples/<img:04d>.png the images; only names matching \\d+.png count
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from vapi_bench.errors import DataError
from vapi_bench.interfaces import SampleItem, Task
from vapi_bench.store import atomic_write_text

from .prompts import TAGS


def prompt_dir(root: Path, prompt_index: int) -> Path:
    return Path(root) / f"{prompt_index:05d}"


def image_path(root: Path, prompt_index: int, image_index: int) -> Path:
    return prompt_dir(root, prompt_index) / "samples" / f"{image_index:04d}.png"


def write_prompt_metadata(root: Path, prompt_index: int, metadata: dict[str, Any]) -> Path:
    """Write `<prompt_idx>/metadata.jsonl` as GenEval's generation script does (`json.dump`)."""
    return atomic_write_text(prompt_dir(root, prompt_index) / "metadata.jsonl", json.dumps(metadata) + "\n")


def read_prompt_metadata(root: Path, prompt_index: int) -> dict[str, Any]:
    path = prompt_dir(root, prompt_index) / "metadata.jsonl"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"GenEval layout: {path} is missing; re-run the sample stage.") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"GenEval layout: {path} is not valid JSON ({exc}).") from None


class GenEvalLayoutTask(Task):
    """A text task whose samples live in GenEval's folder layout, `images_per_prompt` per prompt.

    Subclasses set `self.metadata` (GenEval records) and `self.images_per_prompt`; the items,
    the image paths and the per-prompt metadata files then follow GenEval's conventions.
    """

    conditioning = "text"
    metadata: list[dict[str, Any]]
    images_per_prompt: int

    def prompt_items(self, limit: int | None = None) -> list[SampleItem]:
        items = [
            SampleItem(index=prompt_index * self.images_per_prompt + image_index, condition=record["prompt"],
                       meta={"prompt_index": prompt_index, "image_index": image_index, "tag": record["tag"],
                             "metadata": record})
            for prompt_index, record in enumerate(self.metadata)
            for image_index in range(self.images_per_prompt)
        ]
        return items if limit is None else items[:limit]

    def image_path(self, sample_dir: Path, item: SampleItem) -> Path:
        return image_path(sample_dir, item.meta["prompt_index"], item.meta["image_index"])

    def prompt_accuracy(self, per_sample: Iterable[dict[str, Any]]) -> np.ndarray:
        """Rows (tag index in TAGS, fraction of the prompt's images judged correct), one per prompt
        in prompt order, from a scored run's per-image records: the units a paired bootstrap
        resamples (row p is prompt p for every method and seed), stratified by the tag column."""
        per_sample = list(per_sample)
        correct = np.zeros(len(self.metadata))
        for record in per_sample:
            correct[record["prompt_index"]] += bool(record["correct"])
        if len(per_sample) != len(self.metadata) * self.images_per_prompt:
            raise DataError(f"GenEval: {len(per_sample)} scored images, expected {len(self.metadata)} prompts x "
                            f"{self.images_per_prompt}; the run was scored with other task settings.")
        tags = [TAGS.index(record["tag"]) for record in self.metadata]
        return np.column_stack([tags, correct / self.images_per_prompt])

    def write_layout(self, sample_dir: Path, items: Sequence[SampleItem]) -> None:
        written: set[int] = set()
        for item in items:
            prompt_index = item.meta["prompt_index"]
            if prompt_index not in written:
                write_prompt_metadata(sample_dir, prompt_index, item.meta["metadata"])
                written.add(prompt_index)
