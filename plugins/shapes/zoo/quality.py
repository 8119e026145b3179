"""Quality figures of a zoo, measured the way the tasks measure them.

- reconstruction: the exact detector must recover the true objects of held-out images after an
  encode/decode round trip through the VQ (class and caption sets);
- c2i: samples are classified by the shapes feature network as the class they were drawn for
  (shapes-fid's `class_accuracy`); the detector's verdict is recorded alongside;
- t2i: GenEval's rules on shapes-geneval prompts, scored by the exact detector (per tag).

Samples are index-seeded (`derive_seed(seed, i, stream)`), so the figures are reproducible.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from vapi_bench.imageio import to_uint8
from vapi_bench.interfaces import Generator, SamplingRecipe, iter_batches
from vapi_bench.seeding import derive_seed

from ...llamagen.vq import VQModel
from ...var.vqvae import VQVAE
from ..data import ShapesDataset, caption_dataset, class_dataset
from ..detector import ShapesDetector, recovers_objects
from ..features import ShapesFeatureNet, load_feature_net
from ..generators import DEFAULT_RECIPES, build_shapes_generator
from ..vocab import NUM_CLASSES, class_attributes
from .config import ZooConfig
from .files import FILES
from .train import images_to_float

BATCH = 64
Advance = Callable[[int], None]


def _stack(dataset: ShapesDataset, n: int) -> tuple[torch.Tensor, list]:
    scenes = [dataset.scene(i) for i in range(min(n, len(dataset)))]
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
    return images, scenes


@torch.no_grad()
def reconstruction_recovery(vq: VQModel | VQVAE, dataset: ShapesDataset, n: int, advance: Advance | None = None) -> float:
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


#: the CFG scales of the quality sweep
CFG_SWEEP = (1.0, 2.0, 3.0, 4.0)


def measure_quality(zoo: Path, cfg: ZooConfig, seed: int, stages: Any) -> dict[str, Any]:
    """Gate figures and a CFG sweep, through the registered generators built from `zoo`."""
    c2i = build_shapes_generator("shapes-c2i", zoo_dir=str(zoo))
    t2i = build_shapes_generator("shapes-t2i", zoo_dir=str(zoo))
    featnet = load_feature_net(zoo / FILES["featnet"])
    quality: dict[str, Any] = {}
    with stages.stage("reconstructions", 2 * cfg.n_recon_eval) as step:
        recon = {
            "class": reconstruction_recovery(c2i.vq, class_dataset("test", cfg.n_recon_eval, cfg.image_size, seed),
                                             cfg.n_recon_eval, step),
            "captions": reconstruction_recovery(c2i.vq, caption_dataset("test", cfg.n_recon_eval, cfg.image_size, seed),
                                                cfg.n_recon_eval, step),
        }
    recon["all"] = (recon["class"] + recon["captions"]) / 2
    quality["reconstruction_recovery"] = recon

    c2i_per_scale = cfg.c2i_samples_per_class * NUM_CLASSES
    with stages.stage("c2i CFG sweep", c2i_per_scale * len(CFG_SWEEP)) as step:
        quality["c2i_sweep"] = {
            f"{scale:g}": c2i_accuracy(c2i, featnet, cfg.c2i_samples_per_class, seed,
                                       _recipe("c2i", scale), step)
            for scale in CFG_SWEEP
        }
    t2i_per_scale = t2i_sample_count(cfg.t2i_samples_per_prompt, cfg.n_t2i_prompts_per_tag)
    with stages.stage("t2i CFG sweep", t2i_per_scale * len(CFG_SWEEP)) as step:
        quality["t2i_sweep"] = {
            f"{scale:g}": t2i_geneval(t2i, cfg.t2i_samples_per_prompt, cfg.n_t2i_prompts_per_tag, seed,
                                      _recipe("t2i", scale), step)
            for scale in CFG_SWEEP
        }
    c2i_default = f"{DEFAULT_RECIPES['c2i'].cfg_scale:g}"
    t2i_default = f"{DEFAULT_RECIPES['t2i'].cfg_scale:g}"
    quality["gates"] = {
        "reconstruction_recovery": recon["all"],
        "c2i_class_accuracy": quality["c2i_sweep"][c2i_default]["class_accuracy"],
        "t2i_single_object": quality["t2i_sweep"][t2i_default]["single_object"],
        "recipes": {"c2i": DEFAULT_RECIPES["c2i"].as_dict(), "t2i": DEFAULT_RECIPES["t2i"].as_dict()},
    }
    return quality


def measure_var_quality(zoo: Path, cfg: ZooConfig, seed: int, stages: Any) -> dict[str, Any]:
    """`shapes-var`'s figures, through the registered generator built from `zoo`: held-out class
    reconstructions recovered by the detector, and the c2i CFG sweep (class accuracy by the
    feature network, as for `shapes-c2i`; the scale is VAR's, ramped over the scales)."""
    from ..var_generator import build_shapes_var

    var = build_shapes_var(zoo_dir=str(zoo))
    featnet = load_feature_net(zoo / FILES["featnet"])
    with stages.stage("VAR reconstructions", cfg.n_recon_eval) as step:
        recon = reconstruction_recovery(var.vae, class_dataset("test", cfg.n_recon_eval, cfg.image_size, seed),
                                        cfg.n_recon_eval, step)
    per_scale = cfg.c2i_samples_per_class * NUM_CLASSES
    with stages.stage("VAR CFG sweep", per_scale * len(CFG_SWEEP)) as step:
        sweep = {f"{scale:g}": c2i_accuracy(var, featnet, cfg.c2i_samples_per_class, seed, _recipe("var", scale), step)
                 for scale in CFG_SWEEP}
    default = DEFAULT_RECIPES["var"]
    return {"reconstruction_recovery": recon, "cfg_sweep": sweep,
            "gates": {"reconstruction_recovery": recon, "class_accuracy": sweep[f"{default.cfg_scale:g}"]["class_accuracy"],
                      "recipe": default.as_dict()}}


def _recipe(kind: str, scale: float) -> SamplingRecipe:
    return replace(DEFAULT_RECIPES[kind], cfg_scale=scale)
