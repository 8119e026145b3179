"""The zoo's training sets: rendered images with their labels and captions, and the t2i GPTs'
caption conditions (encoded once per distinct caption)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import caption_dataset, class_dataset
from ..vocab import class_attributes, with_article
from ..words import ShapesWordEncoder
from .config import ZooConfig


@dataclass
class TrainingSets:
    """Rendered training images (uint8 NCHW) with their labels / captions and a content hash."""

    class_images: torch.Tensor
    class_labels: torch.Tensor
    caption_images: torch.Tensor
    captions: list[str]
    sha256: str


def render_sets(cfg: ZooConfig, seed: int, step: Any) -> TrainingSets:
    """Render the train splits; `step(n)` advances a progress bar by n images."""

    def render(dataset) -> list[np.ndarray]:
        scenes = []
        for i in range(len(dataset)):
            scenes.append(dataset.scene(i))
            if i % 256 == 255 or i == len(dataset) - 1:
                step(i % 256 + 1)
        return scenes

    classes = render(class_dataset("train", cfg.n_class_images, cfg.image_size, seed))
    captioned = render(caption_dataset("train", cfg.n_caption_images, cfg.image_size, seed))
    class_images = np.stack([s.image for s in classes])
    caption_images = np.stack([s.image for s in captioned])
    captions = [str(s.caption) for s in captioned]
    digest = hashlib.sha256()
    for part in (class_images.tobytes(), caption_images.tobytes(), "\n".join(captions).encode()):
        digest.update(part)
    return TrainingSets(
        class_images=torch.from_numpy(class_images).permute(0, 3, 1, 2).contiguous(),
        class_labels=torch.tensor([int(s.label) for s in classes]),
        caption_images=torch.from_numpy(caption_images).permute(0, 3, 1, 2).contiguous(),
        captions=captions,
        sha256=digest.hexdigest(),
    )


def render_class_set(n: int, size: int, seed: int, step: Any) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first n class images of the train split (uint8 NCHW), their labels and a content hash;
    `step(n)` advances a progress bar by n images."""
    dataset = class_dataset("train", n, size, seed)
    scenes = []
    for i in range(len(dataset)):
        scenes.append(dataset.scene(i))
        if i % 256 == 255 or i == len(dataset) - 1:
            step(i % 256 + 1)
    images = np.stack([s.image for s in scenes])
    labels = torch.tensor([int(s.label) for s in scenes])
    digest = hashlib.sha256(images.tobytes() + labels.numpy().tobytes()).hexdigest()
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, digest


class CaptionConditions:
    """Left-padded word-encoder features of the training captions, encoded once per distinct caption."""

    def __init__(self, encoder: ShapesWordEncoder, captions: list[str]):
        distinct = sorted(set(captions))
        position = {c: i for i, c in enumerate(distinct)}
        self.features, self.mask = encoder.encode(distinct)
        self.index = torch.tensor([position[c] for c in captions])
        self.distinct = len(distinct)

    def __call__(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        which = self.index[rows]
        return self.features[which], self.mask[which]


def t2i_training_set(cfg: ZooConfig, encoder: ShapesWordEncoder, sets: TrainingSets, class_tokens: torch.Tensor,
                     caption_tokens: torch.Tensor) -> tuple[torch.Tensor, CaptionConditions]:
    """The t2i GPTs' tokens and captions: the caption set, plus the class images captioned
    (`class_captions`) when the config says so."""
    tokens, texts = caption_tokens, sets.captions
    if cfg.t2i_class_captions:
        tokens = torch.cat([caption_tokens, class_tokens])
        texts = sets.captions + class_captions(sets.class_labels.tolist())
    return tokens, CaptionConditions(encoder, texts)


def class_captions(labels: list[int]) -> list[str]:
    """Captions of class images in GenEval's grammar, alternating single_object ("a photo of a
    circle") and colors ("a photo of a red circle"): the caption set's one-object scenes use small
    radii (four objects must fit), so without these the t2i GPT never sees a large lone object."""
    out = []
    for index, label in enumerate(labels):
        shape, colour = class_attributes(label)
        out.append(f"a photo of {with_article(shape)}" if index % 2 == 0 else f"a photo of {with_article(colour)} {shape}")
    return out
