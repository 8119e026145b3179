"""Inception Score exactly as the ADM evaluator reports it.

ADM (`guided-diffusion/evaluations/evaluator.py`, `compute_inception_score`) takes the softmax of
the bias-free Inception logits, cuts the samples into consecutive chunks of `split_size` in their
stored order (no shuffle; a last shorter chunk counts as a split), scores each chunk as
exp(E_x KL(p(y|x) || p(y))) and reports the mean over chunks. We also return the std (np.std).
Computed in float64 with log-softmax so that zero probabilities do not produce NaNs.
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def inception_score(logits: np.ndarray, split_size: int = 5000) -> tuple[float, float]:
    """(mean, std) of the per-split Inception Scores of logits [N, C]."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"inception_score expects logits of shape [N, C] with N > 0, got {logits.shape}.")
    if split_size < 1:
        raise ValueError(f"inception_score: split_size must be >= 1, got {split_size}.")
    log_p = log_softmax(logits, axis=1)
    scores = []
    for start in range(0, len(log_p), split_size):
        part = log_p[start : start + split_size]
        log_marginal = np.log(np.exp(part).mean(axis=0, keepdims=True))
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
