"""A user's own preference pairs for dpo (`pairs=file`, `pairs_file=PATH`): JSON Lines, one pair a line,

    {"condition": 3, "chosen": [17, 4, ...], "rejected": "bad/0003.png"}

`condition` is a class index (class-conditional models) or a prompt (text models); `chosen` and
`rejected` are either the image's token ids (exactly `num_tokens` of them, each below
`codebook_size`) or the path of a PNG at the model's resolution (relative paths are read from the
file's folder), which the generator's frozen tokenizer encodes. An optional `"gap"` (the reward
difference) is logged as it is. Errors name the line.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from vapi_bench.errors import DataError, UsageError
from vapi_bench.imageio import load_png
from vapi_bench.interfaces import Condition, Generator

from .dpo_pairs import PairSet

ENCODE_BATCH = 16


def read_pair_file(path: str | Path, generator: Generator) -> PairSet:
    """The pairs of a JSONL file, as tokens of `generator`'s tokenizer."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"method 'dpo': pairs_file {str(path)!r} does not exist; give a JSONL file of "
                         '{"condition": ..., "chosen": ..., "rejected": ...} lines (pairs=file).')
    conditions: list[Condition] = []
    sides: dict[str, list[Any]] = {"chosen": [], "rejected": []}
    gaps: list[float] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc.msg}).") from None
        if not isinstance(record, dict) or not {"condition", "chosen", "rejected"} <= set(record):
            raise DataError(f"{where}: a pair needs the keys condition, chosen and rejected.")
        conditions.append(_condition(record["condition"], generator, where))
        for side in sides:
            sides[side].append(_side(record[side], generator, path.parent, where))
        gaps.append(float(record.get("gap", math.nan)))
    if not conditions:
        raise DataError(f"{path} holds no pairs.")
    chosen, rejected = (_tokens(sides[s], generator) for s in ("chosen", "rejected"))
    return PairSet(conditions, chosen, rejected, torch.ones(len(conditions)), torch.tensor(gaps))


def _condition(value: Any, generator: Generator, where: str) -> Condition:
    if generator.conditioning == "class":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < generator.num_classes:
            raise DataError(f"{where}: condition {value!r} is not a class index of '{generator.name}' "
                            f"(0..{generator.num_classes - 1}).")
        return value
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: condition {value!r} is not a prompt (text model '{generator.name}').")
    return value


def _side(value: Any, generator: Generator, folder: Path, where: str) -> torch.Tensor | Path:
    """Token ids as a tensor, or the path of an image still to encode."""
    if isinstance(value, str):
        image = Path(value) if Path(value).is_absolute() else folder / value
        if not image.is_file():
            raise DataError(f"{where}: image {str(image)!r} does not exist.")
        return image
    if (not isinstance(value, list) or len(value) != generator.num_tokens
            or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < generator.codebook_size
                       for t in value)):
        raise DataError(f"{where}: tokens must be a list of {generator.num_tokens} integers in "
                        f"0..{generator.codebook_size - 1}, or the path of an image.")
    return torch.tensor(value, dtype=torch.long)


def _tokens(items: list[torch.Tensor | Path], generator: Generator) -> torch.Tensor:
    """Stack token rows, encoding the images among them in batches."""
    rows: list[torch.Tensor | None] = [t if isinstance(t, torch.Tensor) else None for t in items]
    pending = [i for i, t in enumerate(items) if isinstance(t, Path)]
    for start in range(0, len(pending), ENCODE_BATCH):
        chunk = pending[start:start + ENCODE_BATCH]
        images = torch.stack([_image(items[i], generator) for i in chunk])  # type: ignore[arg-type]
        with torch.no_grad():
            encoded = generator.encode(images.to(generator.device)).long().cpu()
        for i, row in zip(chunk, encoded):
            rows[i] = row
    return torch.stack(rows)  # type: ignore[arg-type]


def _image(path: Path, generator: Generator) -> torch.Tensor:
    pixels = load_png(path)
    size = generator.image_size
    if pixels.shape[:2] != (size, size):
        raise DataError(f"image {path} is {pixels.shape[1]}x{pixels.shape[0]}; '{generator.name}' works at "
                        f"{size}x{size} (resize it first).")
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
