"""The reference side of the ImageNet metrics: ADM reference batches and their cached statistics.

An ADM reference batch (`VIRTUAL_imagenet256_labeled.npz`) holds 10,000 ImageNet images (`arr_0`)
and statistics precomputed by ADM's TF Inception over the whole dataset: `mu`, `sigma` (pool_3) and
`mu_s`, `sigma_s` (mixed_6/conv, 7 channels). As in ADM's evaluator, stored statistics are used for
FID and sFID when present, and the images only for precision/recall; statistics missing from the
file are computed from its images with our Inception. The result is cached under
`cache_dir()/reference-stats/`, keyed by the sha256 of the reference file and of the Inception
weights, so the 10k-image Inception pass (≈ 14 min on a CPU) runs once per (reference, network).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vapi_bench.errors import DataError
from vapi_bench.hashing import file_digest
from vapi_bench.integrity import load_npz
from vapi_bench.metrics import InceptionExtractor, gaussian_stats
from vapi_bench.store import atomic_write
from vapi_bench.weights import cache_dir

from .adm_npz import iter_npz_images, npz_keys

#: ADM's ImageNet 256x256 reference batch (10k images + whole-dataset statistics)
ADM_REFERENCE_URL = (
    "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
    "VIRTUAL_imagenet256_labeled.npz"
)
_STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


@dataclass
class ReferenceStats:
    """Statistics and features of one reference batch; absent parts are None."""

    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray | None
    sigma_s: np.ndarray | None
    pool: np.ndarray | None  # [N, 2048] features of the reference images (precision/recall)
    stats_source: str  # "stored" (from the file) or "computed" (from its images)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        arrays["stats_source"] = np.array(self.stats_source)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ReferenceStats":
        get = lambda key: arrays[key] if key in arrays else None  # noqa: E731
        return cls(arrays["mu"], arrays["sigma"], get("mu_s"), get("sigma_s"), get("pool"),
                   str(arrays["stats_source"]))


def cached_arrays(key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load `cache_dir()/reference-stats/<key>.npz`, computing and atomically saving it on a miss."""
    path = cache_dir() / "reference-stats" / f"{key}.npz"
    cached = load_npz(path, ("mu", "sigma", "stats_source"))  # a damaged file: named, set aside, recomputed
    if cached is not None:
        return cached
    arrays = compute()
    atomic_write(path, lambda tmp: _savez(tmp, arrays))
    return arrays


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz" to the temp name
        np.savez(fh, **arrays)


def load_reference_stats(
    reference: Path,
    extractor: InceptionExtractor,
    inception_weights: Path,
    batch_size: int = 50,
    progress: Callable[[int], None] | None = None,
) -> ReferenceStats:
    """ReferenceStats of an ADM-format reference .npz (stored stats preferred), cached by hash."""
    keys = validate_reference(reference)
    key = f"adm-{file_digest(reference)[:16]}-inception-{file_digest(inception_weights)[:16]}"

    def compute() -> dict[str, np.ndarray]:
        stored: dict[str, np.ndarray] = {}
        with np.load(reference) as data:
            for name in _STAT_KEYS:
                if name in keys:
                    stored[name] = np.asarray(data[name], dtype=np.float64)
        features = (
            extractor.extract(iter_npz_images(reference, batch_size), progress=progress) if "arr_0" in keys else None
        )
        if "mu" in stored:
            mu, sigma, source = stored["mu"], stored["sigma"], "stored"
        else:
            mu, sigma = gaussian_stats(features.pool)
            source = "computed"
        if "mu_s" in stored:
            mu_s, sigma_s = stored["mu_s"], stored["sigma_s"]
        elif features is not None:
            mu_s, sigma_s = gaussian_stats(features.spatial)
        else:
            mu_s = sigma_s = None
        pool = features.pool if features is not None else None
        return ReferenceStats(mu, sigma, mu_s, sigma_s, pool, source).to_arrays()

    return ReferenceStats.from_arrays(cached_arrays(key, compute))


def validate_reference(reference: Path) -> set[str]:
    """The array names of a reference .npz, or DataError if it cannot serve as a reference."""
    try:
        keys = npz_keys(reference)
    except Exception as exc:  # zipfile raises several unrelated types for non-zip files
        raise DataError(f"Reference batch {reference} is not a readable .npz file ({exc}).") from None
    for a, b in (("mu", "sigma"), ("mu_s", "sigma_s")):
        if (a in keys) != (b in keys):
            raise DataError(f"Reference batch {reference} stores '{a}' or '{b}' without the other.")
    if "mu" not in keys and "arr_0" not in keys:
        raise DataError(
            f"Reference batch {reference} has neither precomputed statistics (mu, sigma) nor images (arr_0)."
        )
    return keys
