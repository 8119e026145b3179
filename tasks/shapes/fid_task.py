"""`shapes-fid`: FID, IS, KID, precision/recall and class accuracy of class-conditional samples.

The shapes feature network stands in for Inception: its 128-d features give FID (against the
reference set's Gaussian statistics), KID and ADM-style precision/recall (k=3), its class logits
give the Inception Score (consecutive splits, no shuffle) and `class_accuracy`, the fraction of
samples the network classifies as the class they were generated for. Samples are class-balanced
(sample i gets class i mod 24) and scored without and with CFG as separate rows. The reference
set is n held-out images of the 'ref' split (the test reference) or, with reference_split=val, of the
disjoint 'val' split (the validation reference) at the samples' size (cached, see reference.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vapi_bench import __version__
from vapi_bench.errors import DataError, UsageError
from vapi_bench.hashing import file_digest
from vapi_bench.imageio import load_png
from vapi_bench.interfaces import Generator, SampleItem, SamplingRecipe, StageContext, Task, TaskResult, Validation
from vapi_bench.metrics import (
    frechet_distance,
    gaussian_stats,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)
from vapi_bench.params import Param
from vapi_bench.progress import stage

from vapi_bench.plugins.shapes.data import SIZES
from vapi_bench.plugins.shapes.vocab import NUM_CLASSES

from .reference import load_reference

PR_NEIGHBOURHOOD = 3
EVALUATOR = "shapes-featnet (128-d features, 24-class logits)"

FID_PARAMS: tuple[Param, ...] = (
    Param("n", int, 1000, "number of samples (class-balanced; the embedded default run's size); at most a "
          "million, as scoring holds every image in memory", minimum=2, maximum=1_000_000),
    Param("reference_n", int, 5000, "number of held-out reference images ('ref' split)"),
    Param("reference_seed", int, 0, "data seed of the reference set"),
    Param("reference_split", str, "ref", "'ref': the test reference; 'val': the validation reference (disjoint "
          "draws), on which `lab tune` chooses settings", choices=("ref", "val")),
    Param("cfg", str, "both", "score without CFG, with the model's CFG, or both (two rows)",
          choices=("both", "with", "without")),
    Param("featnet", str, "", "feature-net .safetensors (default: the zoo's featnet)"),
    Param("split_size", int, 5000, "Inception Score split size (consecutive, no shuffle)"),
    Param("kid_subsets", int, 100, "KID: number of random subsets"),
    Param("kid_subset_size", int, 1000, "KID: subset size (capped at the smaller set)"),
    Param("batch_size", int, 256, "feature extraction batch size"),
)


class ShapesFIDTask(Task):
    conditioning = "class"
    #: `lab tune` chooses on the validation reference, without CFG, by the lowest FID
    validation = Validation(overrides={"task.reference_split": "val", "task.cfg": "without"}, metric="fid",
                            mode="min", variant="no-cfg")
    key_metrics = (("fid", "lower"), ("class_accuracy", "higher"), ("inception_score", "higher"))

    def __init__(self, n: int = 1000, reference_n: int = 5000, reference_seed: int = 0, reference_split: str = "ref",
                 cfg: str = "both", featnet: str = "", split_size: int = 5000, kid_subsets: int = 100,
                 kid_subset_size: int = 1000, batch_size: int = 256) -> None:
        if n < 2 or reference_n < 2:
            raise UsageError(f"shapes-fid: n and reference_n must be at least 2 (FID needs a covariance), "
                             f"got n={n}, reference_n={reference_n}.")
        if reference_split not in ("ref", "val"):
            raise UsageError(f"shapes-fid: reference_split must be ref or val, got {reference_split!r}.")
        self.reference_split = reference_split
        if cfg not in ("both", "with", "without"):
            raise UsageError(f"shapes-fid: cfg must be both, with or without, got {cfg!r}.")
        self.n, self.reference_n, self.reference_seed, self.cfg = n, reference_n, reference_seed, cfg
        from vapi_bench.plugins.shapes.features import DEFAULT_WEIGHTS  # torch-fidelity/torchvision: import on use

        self.featnet = Path(featnet) if featnet else DEFAULT_WEIGHTS
        self.split_size, self.kid_subsets, self.kid_subset_size = split_size, kid_subsets, kid_subset_size
        self.batch_size = batch_size

    # ---- what to sample --------------------------------------------------------------------
    def items(self, generator: Generator, limit: int | None = None) -> list[SampleItem]:
        if generator.conditioning != "class":
            raise UsageError(f"shapes-fid needs a class-conditional model; '{generator.name}' is text-conditioned.")
        if generator.num_classes != NUM_CLASSES:
            raise UsageError(f"shapes-fid scores the 24 shapes classes; '{generator.name}' has "
                             f"{generator.num_classes} classes.")
        count = self.n if limit is None else min(limit, self.n)
        return [SampleItem(index=i, condition=i % NUM_CLASSES, meta={"class": i % NUM_CLASSES}) for i in range(count)]

    def variants(self, generator: Generator) -> list[SamplingRecipe]:
        """Without CFG (scale 1.0) and with the generator's default recipe (one row if it has no CFG)."""
        return self.cfg_variants(generator, self.cfg)

    # ---- scoring ---------------------------------------------------------------------------
    def score(self, sample_dir: Path, items: Sequence[SampleItem], ctx: StageContext) -> TaskResult:
        if len(items) < 2:
            raise DataError(f"shapes-fid needs at least 2 samples to score, got {len(items)}.")
        images = _load_samples([self.image_path(sample_dir, item) for item in items])
        size = images.shape[1]
        from vapi_bench.plugins.shapes.features import extract, load_feature_net

        net = load_feature_net(self.featnet, ctx.device)
        digest = file_digest(self.featnet)
        with stage(ctx.progress, "reference statistics", self.reference_n) as step:
            reference = load_reference(net, digest, self.reference_n, size, self.reference_seed, self.batch_size, step,
                                       split=self.reference_split)
        with stage(ctx.progress, "features", len(images)) as step:
            features, logits = extract(net, images, self.batch_size, step)

        requested = np.array([int(item.condition) for item in items])
        predicted = logits.argmax(axis=1)
        metrics: dict[str, float] = {
            "fid": frechet_distance(*gaussian_stats(features), reference.mu, reference.sigma),
            "class_accuracy": float((predicted == requested).mean()),
        }
        metrics["inception_score"], metrics["inception_score_std"] = inception_score(logits, self.split_size)
        subset = min(self.kid_subset_size, len(features), len(reference.features))
        metrics["kid"], metrics["kid_std"] = kernel_inception_distance(
            reference.features, features, subsets=self.kid_subsets, subset_size=subset, device=ctx.device)
        notes = []
        if min(len(features), len(reference.features)) > PR_NEIGHBOURHOOD:
            metrics["precision"], metrics["recall"] = precision_recall(
                reference.features, features, k=PR_NEIGHBOURHOOD, device=ctx.device)
        else:
            notes.append(f"precision/recall skipped: needs more than {PR_NEIGHBOURHOOD} images per set")

        per_sample = [{"index": item.index, "class": int(item.condition), "predicted_class": int(p),
                       "class_correct": bool(p == item.condition)} for item, p in zip(items, predicted)]
        extra: dict[str, Any] = {
            "protocol": {"num_samples": len(items), "class_sampling": "balanced (i mod 24)", "image_size": size,
                         "is_split_size": self.split_size, "kid_subsets": self.kid_subsets, "kid_subset_size": subset,
                         "pr": f"ADM manifold k={PR_NEIGHBOURHOOD} on featnet features"},
            "reference": {"split": self.reference_split, "n": self.reference_n, "seed": self.reference_seed, "key": reference.key,
                          "cache": str(reference.path), "cached": reference.cached},
            "featnet": {"path": str(self.featnet), "sha256": digest},
            "notes": notes,
        }
        return TaskResult(metrics=metrics, per_sample=per_sample, evaluator=EVALUATOR,
                          evaluator_version=f"vapi-bench {__version__}; featnet {digest[:12]}", extra=extra)


    # ---- per-sample access for the lab's paired bootstrap (plugins/va_pi/significance.py) ---------
    def sample_features(self, sample_dir: Path, items: Sequence[SampleItem], device: Any = "cpu") -> np.ndarray:
        """Feature-net features [N, D] of the samples, row i = item i (paired across methods by index)."""
        from vapi_bench.plugins.shapes.features import extract, load_feature_net

        images = _load_samples([self.image_path(sample_dir, item) for item in items])
        return extract(load_feature_net(self.featnet, device), images, self.batch_size)[0]

    def reference_stats(self, size: int, device: Any = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of this task's reference set at the samples' size (the cached statistics)."""
        from vapi_bench.plugins.shapes.features import load_feature_net

        net = load_feature_net(self.featnet, device)
        ref = load_reference(net, file_digest(self.featnet), self.reference_n, size, self.reference_seed,
                             self.batch_size, split=self.reference_split)
        return ref.mu, ref.sigma


def _load_samples(paths: Sequence[Path]) -> np.ndarray:
    """NHWC uint8 stack of the samples; every image must be square, 32 or 64 px, like the first."""
    images = []
    for path in paths:
        image = load_png(path)
        h, w = image.shape[:2]
        if h != w or h not in SIZES or (images and image.shape != images[0].shape):
            raise DataError(f"shapes-fid expects square {' or '.join(map(str, SIZES))} px samples of one size; "
                            f"{path} is {h}x{w}.")
        images.append(image)
    return np.stack(images)
