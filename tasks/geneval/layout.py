"""GenEval's sample-folder layout, so the official scripts can score our samples and vice versa.

    <dir>/<prompt_idx:05d>/metadata.jsonl        one JSON object: that prompt's metadata
    <dir>/<prompt_idx:05d>/samples/<img:04d>.png the images; only names matching \\d+.png count
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vapi_bench.errors import DataError
from vapi_bench.store import atomic_write_text


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
