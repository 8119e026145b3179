"""FD_DINOv2: the Fréchet distance on DINOv2 ViT-L/14 features, reported as its own column.

Stein et al. (2023, dgm-eval) found Inception features to under-rate modern generators and
recommend DINOv2 ViT-L/14; EDM2 and later papers report FD_DINOv2 next to FID. The features are
torch-fidelity's `dinov2-vit-l-14` definition (`vapi_bench.metrics.dinov2`); the distance is the
same `frechet_distance` as FID. The reference side is the reference batch's images (`arr_0`, the
10k ADM images): values are comparable between runs of this suite, but not with FD_DINOv2 numbers
computed against the whole ImageNet training set. Reference statistics are cached by the sha256 of
the reference file and of the DINOv2 weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from vapi_bench.hashing import file_digest
from vapi_bench.metrics import frechet_distance, gaussian_stats
from vapi_bench.metrics.dinov2 import DinoV2Extractor

from .adm_npz import iter_npz_images
from .reference import cached_arrays


def dinov2_reference_stats(extractor: DinoV2Extractor, reference: Path, weights_file: Path,
                           batch_size: int = 50) -> dict[str, np.ndarray]:
    """mu, sigma of the reference images' DINOv2 features (cached)."""
    def compute() -> dict[str, np.ndarray]:
        mu, sigma = gaussian_stats(extractor.extract(iter_npz_images(reference, batch_size)))
        return {"mu": mu, "sigma": sigma}

    return cached_arrays(f"dinov2-{file_digest(reference)[:16]}-weights-{file_digest(weights_file)[:16]}", compute)


def frechet_dinov2_distance(sample_batches: Iterable[np.ndarray], reference: Path, extractor: DinoV2Extractor,
              weights_file: Path, batch_size: int = 50) -> float:
    """FD between DINOv2 features of uint8 NHWC sample batches and of the reference images."""
    ref = dinov2_reference_stats(extractor, reference, weights_file, batch_size)
    return frechet_distance(*gaussian_stats(extractor.extract(sample_batches)), ref["mu"], ref["sigma"])
