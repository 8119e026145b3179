"""Paired differences with bootstrap confidence intervals: which lab differences are real?

Sampling is index-seeded: sample i of seed s gets the same condition and the same random stream
whatever the model, so two methods' samples are paired by (seed, index). The difference of a
statistic (FID, a mean score) between method A and method B is bootstrapped hierarchically:
resample the seeds with replacement, then within each drawn seed resample the sample indices with
replacement, the SAME indices for A and B; the statistic is computed per seed on the drawn indices
and averaged over the drawn seeds. With `strata` (a group label per row, e.g. GenEval's tag of
each prompt) the indices are resampled within each group, so every replicate keeps the design's
group sizes (a tag never drops out of GenEval's mean over tags). The 95% interval is the percentile
interval of the replicate differences; a difference is called real when the interval excludes 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import linalg

from ..errors import UsageError

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class PairedDelta:
    """Mean over seeds of stat(A) - stat(B), with its bootstrap percentile interval."""

    delta: float
    ci_low: float
    ci_high: float
    reps: int

    @property
    def real(self) -> bool:
        """True when the interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_bootstrap(stat: Statistic, a_by_seed: Sequence[np.ndarray], b_by_seed: Sequence[np.ndarray],
                     reps: int = 1000, level: float = 0.95, seed: int = 0,
                     strata: Optional[np.ndarray] = None) -> PairedDelta:
    """Bootstrap CI of mean_s[stat(A_s) - stat(B_s)]; A_s and B_s are per-sample arrays of seed s,
    row i of A_s paired with row i of B_s; strata[i] (optional) is row i's group in every seed."""
    if len(a_by_seed) != len(b_by_seed) or not a_by_seed:
        raise UsageError(f"paired bootstrap: need the same non-zero number of seeds on both sides, got "
                         f"{len(a_by_seed)} and {len(b_by_seed)}.")
    for a, b in zip(a_by_seed, b_by_seed):
        if len(a) != len(b):
            raise UsageError(f"paired bootstrap: seed arrays must pair row by row, got {len(a)} and {len(b)} rows.")
        if strata is not None and len(strata) != len(a):
            raise UsageError(f"paired bootstrap: strata label {len(strata)} rows, the seed arrays have {len(a)}.")
    groups = None if strata is None else [np.flatnonzero(strata == g) for g in np.unique(strata)]
    rng = np.random.default_rng(seed)
    point = float(np.mean([stat(a) - stat(b) for a, b in zip(a_by_seed, b_by_seed)]))
    k = len(a_by_seed)
    replicates = np.empty(reps)
    for r in range(reps):
        diffs = []
        for s in rng.integers(0, k, size=k):
            if groups is None:
                rows = rng.integers(0, len(a_by_seed[s]), size=len(a_by_seed[s]))
            else:
                rows = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])
            diffs.append(stat(a_by_seed[s][rows]) - stat(b_by_seed[s][rows]))
        replicates[r] = np.mean(diffs)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return PairedDelta(delta=point, ci_low=float(low), ci_high=float(high), reps=reps)


def fid_statistic(reference_mu: np.ndarray, reference_sigma: np.ndarray) -> Statistic:
    """FID of a feature set [N, D] against fixed reference statistics, fast enough to bootstrap:
    tr sqrt(S_ref S) = sum sqrt(eig(R S R)) with R = sqrt(S_ref) computed once (R S R is symmetric
    positive semi-definite, so eigvalsh applies); equal to frechet_distance up to float error."""
    root = np.real(linalg.sqrtm(reference_sigma))
    root = (root + root.T) / 2.0
    trace_ref = float(np.trace(reference_sigma))

    def fid(features: np.ndarray) -> float:
        mu = features.mean(axis=0)
        sigma = np.cov(features, rowvar=False)
        eig = np.linalg.eigvalsh(root @ sigma @ root)
        covmean_trace = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
        return float(((mu - reference_mu) ** 2).sum() + np.trace(sigma) + trace_ref - 2.0 * covmean_trace)

    return fid


def mean_statistic(values: np.ndarray) -> float:
    """The mean of per-sample values (class accuracy, GenEval correctness)."""
    return float(np.mean(values))


def group_mean_statistic(values: np.ndarray) -> float:
    """Unweighted mean over groups of the group's mean value; rows are (group, value). With rows
    (tag, accuracy of one prompt's images) this is GenEval's overall: the mean over tags of the tag
    accuracy (every prompt has the same number of images)."""
    groups = values[:, 0]
    return float(np.mean([values[groups == g, 1].mean() for g in np.unique(groups)]))
