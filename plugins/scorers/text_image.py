"""What every text-image scorer (hpsv2, clip-score, pickscore) shares: conditions -> texts, and
images -> the uint8 pixels the scoring networks read.

Pixels: generated images in [-1, 1] are converted with the core's own rule
(`vapi_bench.imageio.to_uint8`: clamp(127.5 x + 128) truncated, which is round-to-nearest of
(x + 1) * 127.5). That is exactly how the sample stage writes PNGs, so a scorer used as a reward on
tensors gives the same value as the same scorer used as a metric on the saved files. AR-GRPO
instead truncates (x + 1) / 2 * 255 (`to_pil_image`; docs/reference/peers.md §1.3), which is up to one grey level
darker.

Texts: a str condition is the prompt itself; an int condition (a class-conditional generator)
becomes `class_prompt.format(name)` with the class's name read from `class_names` (one name per
line, line i = class i), as AR-GRPO's C2I reward does with "a photo of {WordNet name}".
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import torch

from vapi_bench.errors import DataError, UsageError
from vapi_bench.imageio import to_uint8
from vapi_bench.interfaces import Condition, Scorer

DEFAULT_CLASS_PROMPT = "a photo of {}"


def read_class_names(path: Path | str) -> list[str]:
    """Class names from a text file, one per line (line i names class i); blank lines are errors."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"class names file {path} cannot be read ({exc.strerror or exc}).") from None
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [i for i, line in enumerate(lines) if not line.strip()]
    if not lines or blank:
        raise DataError(f"class names file {path}: expected one name per line; "
                        f"{'it is empty' if not lines else f'line {blank[0] + 1} is blank'}.")
    return [line.strip() for line in lines]


def check_class_prompt(prompt: str) -> None:
    """A class prompt needs exactly the place where the name goes."""
    if "{}" not in prompt:
        raise UsageError(f"class_prompt {prompt!r} must contain '{{}}' where the class name goes.")


def condition_texts(conditions: Sequence[Condition], class_names: Sequence[str] | None,
                    class_prompt: str = DEFAULT_CLASS_PROMPT) -> list[str]:
    """The text each condition is scored against (see the module docstring)."""
    texts = []
    for condition in conditions:
        if isinstance(condition, str):
            texts.append(condition)
            continue
        index = int(condition)
        if class_names is None:
            raise UsageError(f"class condition {index} has no text: give the scorer class_names=<file with one "
                             "class name per line> to score class-conditional images.")
        if not 0 <= index < len(class_names):
            raise UsageError(f"class condition {index} is outside the {len(class_names)} names in class_names.")
        texts.append(class_prompt.format(class_names[index]))
    return texts


def images_to_pixels(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] floats in [-1, 1] -> uint8 [B, 3, H, W] on the same device (the PNG rule)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise DataError(f"text-image scorers expect images [B, 3, H, W], got {tuple(images.shape)}.")
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).to(images.device)


class TextImageScorer(Scorer):
    """A scorer of images against their conditions' texts; higher is better, not differentiable.

    Subclasses implement `score_pixels(pixels uint8 [B, 3, H, W], texts) -> [B]` and hold their
    frozen network as `self.model`; tasks that read PNGs call `score_pixels` directly, methods call
    `forward` / `score` on decoded images.
    """

    differentiable = False
    higher_is_better = True
    needs_reference = False
    needs_conditions = True

    def __init__(self, class_names: str = "", class_prompt: str = DEFAULT_CLASS_PROMPT) -> None:
        super().__init__()
        check_class_prompt(class_prompt)
        self.class_names_file = class_names
        self.class_prompt = class_prompt

    def train(self, mode: bool = True) -> "TextImageScorer":
        """The scoring network is frozen: it stays in eval mode whatever the caller asks."""
        super().train(mode)
        self.model.eval()
        return self

    @cached_property
    def class_names(self) -> list[str] | None:
        return read_class_names(self.class_names_file) if self.class_names_file else None

    def name_classes(self, names: Sequence[str] | None = None, prompt: str | None = None) -> None:
        """Use these class names and / or this prompt for int conditions instead of the scorer's
        own parameters: a method scoring a class-conditional generator passes the generator's
        vocabulary (reward scorers are built by name, without their own class_names file)."""
        if names is not None:
            self.class_names = list(names)  # shadows the cached_property
        if prompt is not None:
            check_class_prompt(prompt)
            self.class_prompt = prompt

    def texts(self, conditions: Sequence[Condition]) -> list[str]:
        return condition_texts(conditions, self.class_names, self.class_prompt)

    def forward(self, images: torch.Tensor, conditions: Sequence[Condition] | None = None,
                reference: torch.Tensor | None = None) -> torch.Tensor:
        if conditions is None:
            raise UsageError(f"{type(self).__name__} scores images against their conditions; pass conditions=.")
        if len(conditions) != len(images):
            raise UsageError(f"{type(self).__name__}: {len(images)} images but {len(conditions)} conditions.")
        return self.score_pixels(images_to_pixels(images), self.texts(conditions))

    def score_pixels(self, pixels: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Per-image scores [B] of uint8 pixels [B, 3, H, W] against texts; each scorer defines it."""
        raise NotImplementedError(f"{type(self).__name__} must implement score_pixels")
