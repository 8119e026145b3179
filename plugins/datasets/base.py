"""A map-style dataset of (image, condition) whose images may be corrupt.

Subclasses say how to open item i and how to name it in messages. A corrupt or unreadable image
either fails with DataError naming it (`on_corrupt="fail"`) or is skipped with a warning naming
it (`"skip"`): the item is replaced by the next readable one, deterministically, so the training
data order stays a function of (seed, step).
"""
from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from vapi_bench.errors import DataError

from .transforms import to_model_tensor

ON_CORRUPT = ("skip", "fail")


class CorruptImageWarning(UserWarning):
    """An image could not be read and was skipped."""


class ImageConditionDataset(Dataset):
    def __init__(self, image_size: int, crop: str, on_corrupt: str) -> None:
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
        self.image_size, self.crop, self.on_corrupt = image_size, crop, on_corrupt
        self._skipped: set[int] = set()

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def open_image(self, index: int) -> Image.Image:
        """The PIL image of item `index` (may raise on a corrupt file)."""

    @abstractmethod
    def condition(self, index: int) -> Any:
        """Class index or caption of item `index`."""

    @abstractmethod
    def describe(self, index: int) -> str:
        """Where item `index` comes from (a file path or a dataset row), for messages."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        for offset in range(len(self)):
            current = (index + offset) % len(self)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    image = self.open_image(current)
                    tensor = to_model_tensor(image, self.image_size, self.crop)
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... on bad files
                reason = f"{type(exc).__name__}: {exc}"
                if self.on_corrupt == "fail":
                    raise DataError(f"Corrupt or unreadable image {self.describe(current)} ({reason}). "
                                    "Fix or remove it, or set on_corrupt=skip.") from None
                if current not in self._skipped:
                    self._skipped.add(current)
                    warnings.warn(f"Skipping corrupt image {self.describe(current)} ({reason}).",
                                  CorruptImageWarning, stacklevel=2)
                continue
            return tensor, self.condition(current)
        raise DataError(f"No readable image in the dataset ({len(self)} items, all corrupt).")
