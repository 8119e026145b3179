"""Quality figures of a zoo, measured the way the tasks measure them.

- reconstruction: the exact detector must recover the true objects of held-out images after an
  encode/decode round trip through the VQ (class and caption sets);
- c2i: samples are classified by the shapes feature network as the class they were drawn for
  (shapes-fid's `class_accuracy`); the detector's verdict is recorded alongside;
- t2i: GenEval's rules on shapes-geneval prompts, scored by the exact detector (per tag).

Samples are index-seeded (`derive_seed(seed, i, stream)`), so the figures are reproducible.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from vapi_bench.imageio import to_uint8
from vapi_bench.interfaces import Generator, SamplingRecipe, iter_batches
from vapi_bench.seeding import derive_seed

from ..llamagen.vq import VQModel
from .data import _ShapesBase
from .detector import ShapesDetector, recovers_objects
from .features import ShapesFeatureNet
from .vocab import NUM_CLASSES, class_attributes
from .zoo_train import images_to_float

BATCH = 64
Advance = Callable[[int], None]


def _stack(dataset: _ShapesBase, n: int) -> tuple[torch.Tensor, list]:
    scenes = [dataset.scene(i) for i in range(min(n, len(dataset)))]
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
    return images, scenes


@torch.no_grad()
def reconstruction_recovery(vq: VQModel, dataset: _ShapesBase, n: int, advance: Advance | None = None) -> float:
    """Fraction of the first n held-out scenes whose VQ round trip the detector reads exactly."""
    images, scenes = _stack(dataset, n)
    detector = ShapesDetector()
    hits = 0
    for start in range(0, len(scenes), BATCH):
        batch = images_to_float(images[start : start + BATCH])
        pixels = to_uint8(vq.decode_indices(vq.encode_indices(batch)))
        for offset, image in enumerate(pixels):
            hits += recovers_objects(detector(image), scenes[start + offset].objects, dataset.size)
        if advance is not None:
            advance(len(pixels))
    return hits / len(scenes)


@torch.no_grad()
def sample_images(generator: Generator, conditions: Sequence, seed: int, stream: str,
                  recipe: SamplingRecipe, advance: Advance | None = None) -> np.ndarray:
    """uint8 NHWC samples, sample i seeded by derive_seed(seed, i, stream)."""
    out = []
    indices = list(range(len(conditions)))
    for batch in iter_batches(indices, BATCH):
        seeds = [derive_seed(seed, i, stream) for i in batch]
        tokens = generator.sample([conditions[i] for i in batch], seeds=seeds, recipe=recipe)
        out.append(to_uint8(generator.decode(tokens)))
        if advance is not None:
            advance(len(batch))
    return np.concatenate(out)


@torch.no_grad()
def c2i_accuracy(generator: Generator, featnet: ShapesFeatureNet, per_class: int, seed: int,
                 recipe: SamplingRecipe, advance: Advance | None = None) -> dict[str, float]:
    """Class accuracy of class-balanced samples: by the feature network and by the detector."""
    labels = [i % NUM_CLASSES for i in range(per_class * NUM_CLASSES)]
    images = sample_images(generator, labels, seed, "zoo/c2i", recipe, advance)
    predicted = featnet.logits(torch.from_numpy(images).permute(0, 3, 1, 2)).argmax(dim=1).tolist()
    detector = ShapesDetector()
    detected = 0
    for image, label in zip(images, labels):
        found = detector(image)
        shape, colour = class_attributes(label)
        detected += len(found) == 1 and found[0].shape == shape and found[0].colour == colour
    return {
        "class_accuracy": float(np.mean([p == q for p, q in zip(predicted, labels)])),
        "detector_accuracy": detected / len(labels),
    }


@torch.no_grad()
def t2i_geneval(generator: Generator, per_prompt: int, prompts_per_tag: int, seed: int,
                recipe: SamplingRecipe, advance: Advance | None = None) -> dict[str, float]:
    """shapes-geneval accuracy per tag (and overall) on a small prompt set."""
    from vapi_bench.tasks.geneval.rules import summarize
    from vapi_bench.tasks.shapes.geneval_task import ShapesGenEvalTask

    task = ShapesGenEvalTask(images_per_prompt=per_prompt, prompts_per_tag=prompts_per_tag)
    records = [record for record in task.metadata for _ in range(per_prompt)]
    images = sample_images(generator, [r["prompt"] for r in records], seed, "zoo/t2i", recipe, advance)
    verdicts = [task.score_image(image, record) for image, record in zip(images, records)]
    return {k: float(v) for k, v in summarize(verdicts).items()}


def t2i_sample_count(per_prompt: int, prompts_per_tag: int) -> int:
    """How many images `t2i_geneval` draws (for progress bars)."""
    from vapi_bench.tasks.shapes.geneval_task import shapes_metadata

    return per_prompt * len(shapes_metadata(n=prompts_per_tag))
