"""GenEval's colour check: CLIP zero-shot colour classification of one detected object.

The object is isolated the way GenEval's `ImageCrops` does it: the image is composited over a
flat background (#999 grey) through the instance mask, then cropped to the detection box (PIL
rounds the float box). The crop goes through CLIP's own validation transform and is classified
against 10 colours x 3 templates that name the object class; the text classifier is GenEval's
(clip_benchmark) construction, which open_clip's `build_zero_shot_classifier` reproduces exactly:
L2-normalise each template embedding, average over templates, re-normalise.
"""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .clip_models import ClipBundle
from .rules import ColourClassifier


def geneval_colour_templates(class_name: str) -> list[Callable[[str], str]]:
    """GenEval's three colour prompts for one object class (article 'a' even before vowels, as there)."""
    return [
        lambda colour: f"a photo of a {colour} {class_name}",
        lambda colour: f"a photo of a {colour}-colored {class_name}",
        lambda colour: f"a photo of a {colour} object",
    ]


def isolate_object(
    image: np.ndarray, mask: np.ndarray | None, bbox: Sequence[float], *, bgcolor: str = "#999", crop: bool = True
) -> Image.Image:
    """The object's crop: image shown through `mask` over `bgcolor` ("original" keeps the image),
    cropped to bbox[:4] when `crop`. A missing mask leaves the image unmasked."""
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (picture.height, picture.width):
            raise ValueError(f"mask shape {mask.shape} does not match image size {(picture.height, picture.width)}.")
        background = picture.copy() if bgcolor == "original" else Image.new("RGB", picture.size, color=bgcolor)
        picture = Image.composite(picture, background, Image.fromarray(mask))
    if crop:
        picture = picture.crop(tuple(float(v) for v in bbox[:4]))
    return picture


class ClipColourClassifier:
    """GenEval's CLIP colour classifier; implements `rules.ClassAwareColourClassifier`.

    Text classifiers are built once per (class, colour list) and cached. On CUDA the forward
    passes run under fp16 autocast, as clip_benchmark's `amp=True` default does in GenEval;
    elsewhere they run in fp32.
    """

    def __init__(self, clip: ClipBundle, *, bgcolor: str = "#999", crop: bool = True) -> None:
        self.clip = clip
        self.bgcolor = bgcolor
        self.crop = crop
        self._text_weights: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.clip.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def text_weights(self, class_name: str, colours: Sequence[str]) -> torch.Tensor:
        """Zero-shot weights [embed_dim, len(colours)] for `class_name`."""
        from open_clip import build_zero_shot_classifier

        key = (class_name, tuple(colours))
        if key not in self._text_weights:
            with self._autocast():
                self._text_weights[key] = build_zero_shot_classifier(
                    self.clip.model,
                    self.clip.tokenizer,
                    list(colours),
                    geneval_colour_templates(class_name),
                    num_classes_per_batch=None,
                    device=self.clip.device,
                )
        return self._text_weights[key]

    @torch.no_grad()
    def logits(self, crops: Sequence[Image.Image], class_name: str, colours: Sequence[str]) -> torch.Tensor:
        """100 * cos(image, colour prototype) for each crop: [len(crops), len(colours)]."""
        batch = torch.stack([self.clip.preprocess(crop) for crop in crops]).to(self.clip.device)
        weights = self.text_weights(class_name, colours)
        with self._autocast():
            features = self.clip.model.encode_image(batch, normalize=True)
            return (100.0 * features @ weights).float()

    def classify(
        self, image: np.ndarray, mask: np.ndarray | None, bbox: np.ndarray, colours: list[str], *, class_name: str
    ) -> str:
        crop = isolate_object(image, mask, bbox, bgcolor=self.bgcolor, crop=self.crop)
        return colours[int(self.logits([crop], class_name, colours).argmax(dim=1)[0])]

    def for_class(self, class_name: str) -> ColourClassifier:
        return partial(self.classify, class_name=class_name)
