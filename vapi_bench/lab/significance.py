"""Paired differences with confidence intervals: which lab differences are real?

Two intervals, and the lab calls a difference real on the second:
- a hierarchical bootstrap over seeds and samples (below), which shows how precisely each seed's
  sample set pins the difference down; with 3 seeds it was about half as wide as the seed-level
  interval, because 3 clusters cannot represent the seed-to-seed spread;
- a seed-level paired t interval over the per-seed differences (`seed_level_interval`): each seed
  is one independent replication of the whole pipeline (fine-tune, sampling), so this is the
  interval a re-run on new seeds should respect. Each table's comparisons are one family, adjusted
  by Holm's step-down method (`holm`), and each states its minimum detectable difference.

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
from scipy import linalg, stats

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


@dataclass(frozen=True)
class SeedLevelDelta:
    """The mean of per-seed differences with its paired t interval, two-sided p-value and the
    smallest true difference the seeds would detect (two-sided α = 1 - level, the given power)."""

    delta: float
    t_low: float
    t_high: float
    p: float
    mde: float
    seeds: int


def seed_level_interval(deltas: Sequence[float], level: float = 0.95, power: float = 0.8) -> SeedLevelDelta:
    """Paired t over seeds: Δ̄ ± t_{(1+level)/2, n-1} · s/√n, p = 2·P(T_{n-1} > |Δ̄| / (s/√n)), and the
    minimum detectable Δ (t_{(1+level)/2, n-1} + t_{power, n-1}) · s/√n."""
    values = np.asarray(deltas, dtype=float)
    n = len(values)
    if n < 2:
        raise UsageError(f"a seed-level interval needs at least 2 seeds, got {n}.")
    mean, se = float(values.mean()), float(values.std(ddof=1) / np.sqrt(n))
    t_crit = float(stats.t.ppf((1.0 + level) / 2.0, n - 1))
    if se == 0.0:
        return SeedLevelDelta(mean, mean, mean, 0.0 if mean else 1.0, 0.0, n)
    p = float(2.0 * stats.t.sf(abs(mean) / se, n - 1))
    mde = (t_crit + float(stats.t.ppf(power, n - 1))) * se
    return SeedLevelDelta(mean, mean - t_crit * se, mean + t_crit * se, p, mde, n)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (controls the family-wise error rate): the i-th smallest
    p times (m - i), made monotone and capped at 1, returned in the input order."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[index])))
        adjusted[index] = running
    return adjusted.tolist()
