"""`imagenet-fid`: class-conditional ImageNet 256 with the ADM evaluator's metrics.

Protocol (recorded in every result's `extra`):
- `n` samples (50,000 as published); classes `balanced` (sample i gets class i mod C, so 50 per
  class for 50k and any prefix taken by --limit stays balanced) or uniformly `random` from
  numpy's default_rng(label_seed) (the LlamaGen / VA-π scripts' protocol, which draws
  `torch.randint` labels; their exact labels cannot be reproduced);
- generated at the model's resolution, then converted by the core (`vapi_bench.imageio.to_uint8`)
  exactly as LlamaGen's `sample_c2i_ddp.py`: `F.interpolate(x, size=256, mode="bicubic",
  align_corners=False)` (no antialias) when the model's size differs, then
  `clamp(127.5 * x + 128, 0, 255).to(torch.uint8)` (truncation, not rounding), saved as PNG;
- scored without CFG and with the generator's CFG recipe as separate rows (`variants`).

Scoring: one pass of torch-fidelity's ADM-compatible Inception gives pool_3, bias-free logits and
the sFID spatial features; FID and sFID against the reference batch's stored statistics, IS over
consecutive 5,000-image splits (mean; std recorded), ADM precision/recall (k=3, pool_3, float16
distances with float32 fallback) against the reference images. The samples are exported as an
ADM-format `samples.npz` (arr_0 NHWC uint8, arr_1 labels) in the sample directory so the official
TF evaluator can be run on them. `fd_dinov2` (Fréchet distance on DINOv2 ViT-L/14 features against
the reference images; on by default, `fd_dinov2=false` skips it) and `clean_fid` (clean-fid's clean
mode; off by default) are separately named metrics computed from the same PNGs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from vapi_bench.errors import DataError, UsageError
from vapi_bench.imageio import CONVERSION, load_png
from vapi_bench.interfaces import Generator, SampleItem, SamplingRecipe, StageContext, Task, TaskResult, iter_batches
from vapi_bench.hashing import file_digest
from vapi_bench.metrics import (
    InceptionExtractor,
    InceptionFeatures,
    frechet_distance,
    gaussian_stats,
    inception_requirement,
    inception_score,
    precision_recall,
)
from vapi_bench.metrics.dinov2 import DinoV2Extractor, dinov2_requirements
from vapi_bench.prepare import WeightRequirement
from vapi_bench.progress import stage

from .adm_npz import AdmNpzWriter
from .clean_fid import CLEAN_FID_INCEPTION_URL, clean_mode_fid
from .fd_dinov2 import frechet_dinov2_distance
from .reference import ADM_REFERENCE_URL, ReferenceStats, load_reference_stats, validate_reference

PR_NEIGHBOURHOOD = 3
EVALUATOR = "adm-compatible (torch-fidelity inception-v3-compat, TF1 bilinear resize)"


def class_labels(n: int, num_classes: int, mode: str, seed: int = 0) -> np.ndarray:
    """Labels of samples 0..n-1: `balanced` (i mod C) or uniform `random` (default_rng(seed))."""
    if num_classes < 1:
        raise UsageError(f"imagenet-fid needs a class-conditional model; num_classes is {num_classes}.")
    if mode == "balanced":
        return np.arange(n, dtype=np.int64) % num_classes
    if mode == "random":
        return np.random.default_rng(seed).integers(0, num_classes, size=n, dtype=np.int64)
    raise UsageError(f"imagenet-fid: class_sampling must be 'balanced' or 'random', got {mode!r}.")


class ImageNetFIDTask(Task):
    """FID / sFID / IS / precision / recall on class-conditional samples (see module docstring)."""

    conditioning = "class"
    key_metrics = (("fid", "lower"), ("sfid", "lower"), ("inception_score", "higher"))

    def __init__(
        self,
        n: int = 50_000,
        class_sampling: str = "balanced",
        label_seed: int = 0,
        image_size: int = 256,
        cfg: str = "both",
        reference: str = ADM_REFERENCE_URL,
        inception_weights: str = "",
        batch_size: int = 50,
        split_size: int = 5000,
        export_npz: bool = True,
        clean_fid: bool = False,
        clean_fid_inception: str = "",
        fd_dinov2: bool = True,
        dinov2_weights: str = "",
    ) -> None:
        if n < 2:
            raise UsageError(f"imagenet-fid: n must be at least 2 (FID needs a covariance), got {n}.")
        self.n = n
        self.class_sampling = class_sampling
        self.label_seed = label_seed
        self.image_size = image_size
        self.cfg = cfg
        self.reference = reference
        self.inception_weights = inception_weights or None
        self.batch_size = batch_size
        self.split_size = split_size
        self.export_npz = export_npz
        self.clean_fid = clean_fid
        self.clean_fid_inception = clean_fid_inception or None
        self.fd_dinov2 = fd_dinov2
        self.dinov2_weights = dinov2_weights

    # ---- what to sample ------------------------------------------------------------------------
    def items(self, generator: Generator, limit: int | None = None) -> list[SampleItem]:
        if generator.conditioning != "class":
            raise UsageError(f"imagenet-fid needs a class-conditional model; '{generator.name}' is text-conditioned.")
        labels = class_labels(self.n, generator.num_classes, self.class_sampling, self.label_seed)
        count = self.n if limit is None else min(limit, self.n)
        return [SampleItem(index=i, condition=int(labels[i]), meta={"class": int(labels[i])}) for i in range(count)]

    def variants(self, generator: Generator) -> list[SamplingRecipe]:
        """Without CFG and with the generator's CFG (one row if the generator uses no CFG)."""
        return self.cfg_variants(generator, self.cfg)

    def output_size(self, generator: Generator) -> int:
        """256: the core resizes with LlamaGen's bicubic rule before the uint8 conversion."""
        return self.image_size

    def requirements(self) -> list[WeightRequirement]:
        """Files `vapi-bench prepare` should fetch for this task."""
        reqs = [self._inception, self._reference]
        if self.clean_fid:
            reqs.append(self._clean_inception)
        return reqs + (dinov2_requirements(self.dinov2_weights) if self.fd_dinov2 else [])

    @property
    def _inception(self) -> WeightRequirement:
        return inception_requirement(self.inception_weights)

    @property
    def _reference(self) -> WeightRequirement:
        return WeightRequirement("imagenet-reference", url=ADM_REFERENCE_URL, spec=self.reference,
                                 description="ADM ImageNet reference batch (10k images + statistics)")

    @property
    def _clean_inception(self) -> WeightRequirement:
        return WeightRequirement("clean-fid-inception", url=CLEAN_FID_INCEPTION_URL, spec=self.clean_fid_inception,
                                 description="clean-fid TorchScript Inception (inception-2015-12-05.pt)")

    # ---- scoring ---------------------------------------------------------------------------------
    def score(self, sample_dir: Path, items: Sequence[SampleItem], ctx: StageContext) -> TaskResult:
        if len(items) < 2:
            raise DataError(f"imagenet-fid needs at least 2 samples to score, got {len(items)}.")
        paths = [self.image_path(sample_dir, it) for it in items]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} of {len(paths)} samples are missing, e.g. {missing[0]}; sample first.")

        reference = self._reference.resolve()
        keys = validate_reference(reference)
        if self.clean_fid and "arr_0" not in keys:
            raise DataError(f"clean_fid needs reference images (arr_0); {reference} holds only statistics.")
        weights = self._inception.resolve()
        extractor = InceptionExtractor(weights, device=ctx.device)

        npz_path = sample_dir / "samples.npz"
        writer = AdmNpzWriter(npz_path, len(items), labels=[it.condition for it in items]) if self.export_npz else None
        try:
            with stage(ctx.progress, "inception features", len(paths)) as step:
                fake = extractor.extract(_teed(self._png_batches(paths), writer), progress=step)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.close()
        with stage(ctx.progress, "reference statistics", None) as step:
            ref = load_reference_stats(reference, extractor, weights, self.batch_size, progress=step)

        metrics, notes = self._adm_metrics(fake, ref, ctx)
        dinov2_sha256 = None
        if self.fd_dinov2 and "arr_0" not in keys:
            notes.append("fd_dinov2 skipped: the reference has no images (arr_0)")
        elif self.fd_dinov2:
            config, weights_file = (req.resolve() for req in dinov2_requirements(self.dinov2_weights))
            metrics["fd_dinov2"] = frechet_dinov2_distance(self._png_batches(paths), reference, DinoV2Extractor(
                config.parent, device=ctx.device), weights_file, self.batch_size)
            dinov2_sha256 = file_digest(weights_file)
        if self.clean_fid:
            metrics["clean_fid"] = clean_mode_fid(
                self._png_batches(paths), reference, self._clean_inception.resolve(), self.batch_size, ctx.device
            )
        extra: dict[str, Any] = {
            "protocol": {
                "num_samples": len(items),
                "class_sampling": self.class_sampling,
                "label_seed": self.label_seed if self.class_sampling == "random" else None,
                "image_size": self.image_size,
                "conversion": CONVERSION,
                "is_split_size": self.split_size,
                "pr": f"ADM manifold k={PR_NEIGHBOURHOOD} on pool_3, float16 distances (float32 fallback)",
            },
            "reference": {"source": self.reference, "sha256": file_digest(reference),
                          "stats": ref.stats_source, "images": None if ref.pool is None else len(ref.pool)},
            "inception_sha256": file_digest(weights),
            "dinov2_sha256": dinov2_sha256,
            "npz": str(npz_path) if writer is not None else None,
            "notes": notes,
        }
        return TaskResult(
            metrics=metrics, evaluator=EVALUATOR, evaluator_version=_torch_fidelity_version(), extra=extra
        )

    def _adm_metrics(
        self, fake: InceptionFeatures, ref: ReferenceStats, ctx: StageContext
    ) -> tuple[dict[str, float], list[str]]:
        """FID, sFID, IS, precision, recall; a metric the reference cannot support is noted, not faked."""
        metrics: dict[str, float] = {"fid": frechet_distance(*gaussian_stats(fake.pool), ref.mu, ref.sigma)}
        notes: list[str] = []
        if ref.mu_s is not None:
            metrics["sfid"] = frechet_distance(*gaussian_stats(fake.spatial), ref.mu_s, ref.sigma_s)
        else:
            notes.append("sfid skipped: the reference has neither mu_s/sigma_s nor images")
        metrics["inception_score"], metrics["inception_score_std"] = inception_score(fake.logits, self.split_size)
        if ref.pool is None:
            notes.append("precision/recall skipped: the reference has no images (arr_0)")
        elif len(fake) <= PR_NEIGHBOURHOOD:
            notes.append(f"precision/recall skipped: needs more than {PR_NEIGHBOURHOOD} samples")
        else:
            metrics["precision"], metrics["recall"] = precision_recall(
                ref.pool, fake.pool, k=PR_NEIGHBOURHOOD, device=ctx.device
            )
        return metrics, notes

    def _png_batches(self, paths: Sequence[Path]) -> Iterator[np.ndarray]:
        """uint8 NHWC batches read from PNGs, each checked to be image_size square."""
        for chunk in iter_batches(paths, self.batch_size):
            images = [load_png(p) for p in chunk]
            for path, image in zip(chunk, images):
                if image.shape[:2] != (self.image_size, self.image_size):
                    raise DataError(
                        f"{path} is {image.shape[1]}x{image.shape[0]}, expected {self.image_size}x{self.image_size} "
                        f"(imagenet-fid scores at its output_size)."
                    )
            yield np.stack(images)


def _teed(batches: Iterable[np.ndarray], writer: AdmNpzWriter | None) -> Iterator[np.ndarray]:
    """Pass batches through, also appending them to the ADM npz when exporting."""
    for batch in batches:
        if writer is not None:
            writer.write(batch)
        yield batch


def _torch_fidelity_version() -> str:
    import torch_fidelity

    return f"torch-fidelity {torch_fidelity.__version__}"
