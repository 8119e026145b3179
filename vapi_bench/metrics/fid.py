"""Fréchet distance between Gaussians fitted to features (FID and sFID share it).

The trace of the matrix square root is taken through symmetric eigen-decompositions rather than
`scipy.linalg.sqrtm(..., disp=False)` (what the ADM evaluator and clean-fid call), because SciPy
1.18 removes `disp` and because `sqrtm` needs an eps retry on singular covariances. For PSD
sigma1, sigma2: tr sqrt(sigma1 @ sigma2) = tr sqrt(A @ sigma2 @ A) with A = sigma1^{1/2}, and the
inner matrix is symmetric PSD, so its eigenvalues are real and clipping round-off negatives to 0
is exact.
"""
from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (np.cov, rowvar=False) of features [N, D], float64."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"gaussian_stats expects features of shape [N, D], got {feats.shape}.")
    if feats.shape[0] < 2:
        raise ValueError(
            f"gaussian_stats needs at least 2 feature rows to estimate a covariance, got {feats.shape[0]}."
        )
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) PSD matrix via eigh, negatives clipped to 0."""
    sym = (matrix + matrix.T) / 2
    vals, vecs = np.linalg.eigh(sym)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(sigma1 @ sigma2) for PSD sigma1, sigma2 (see module docstring)."""
    root1 = _sqrt_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    vals = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(vals, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), all in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"frechet_distance: mean vectors differ in shape: {mu1.shape} vs {mu2.shape}.")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"frechet_distance: covariances must be [{dim}, {dim}] to match the means, "
            f"got {sigma1.shape} and {sigma2.shape}."
        )
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))
