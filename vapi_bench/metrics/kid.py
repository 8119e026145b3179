"""Kernel Inception Distance (Bińkowski et al.), the MMD-GAN / torch-fidelity estimator.

Cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, unbiased MMD^2 per random subset, mean and std
over subsets. Subsets are drawn with `np.random.RandomState(seed)`, first from `fake` then from
`real` in each round, as torch-fidelity does (its input1 is the generated set), so the same seed
gives torch-fidelity's value.
"""
from __future__ import annotations

import numpy as np


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _unbiased_mmd2(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = k_xx.shape[0]
    off_diag_xx = k_xx.sum() - np.trace(k_xx)
    off_diag_yy = k_yy.sum() - np.trace(k_yy)
    return float((off_diag_xx + off_diag_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD^2 over `subsets` random subsets."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"kernel_inception_distance expects [N, D] and [M, D] features, got {real.shape} and {fake.shape}."
        )
    if subset_size < 2 or subset_size > min(len(real), len(fake)):
        raise ValueError(
            f"kernel_inception_distance: subset_size={subset_size} must be between 2 and the smaller set size "
            f"(real {len(real)}, fake {len(fake)}); lower subset_size."
        )
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        f = fake[rng.choice(len(fake), subset_size, replace=False)]
        r = real[rng.choice(len(real), subset_size, replace=False)]
        mmds[i] = _unbiased_mmd2(_polynomial_kernel(f, f), _polynomial_kernel(f, r), _polynomial_kernel(r, r))
    return float(mmds.mean()), float(mmds.std())
