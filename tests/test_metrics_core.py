"""The metric maths against reference formulas (no network, no Inception)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from vapi_bench.metrics import (
    frechet_distance,
    gaussian_stats,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)

RTOL = 1e-4


def _features(n: int, d: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def test_gaussian_stats_is_mean_and_unbiased_covariance():
    feats = _features(50, 6)
    mu, sigma = gaussian_stats(feats.astype(np.float32))
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    centred = feats - feats.mean(0)
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((1, 5))])
def test_gaussian_stats_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="gaussian_stats"):
        gaussian_stats(bad)


def test_frechet_distance_matches_sqrtm_formula_full_rank():
    s1, s2 = gaussian_stats(_features(400, 16)), gaussian_stats(_features(300, 16, shift=0.5, seed=1))
    covmean = scipy.linalg.sqrtm(s1[1] @ s2[1]).real
    diff = s1[0] - s2[0]
    expected = diff @ diff + np.trace(s1[1]) + np.trace(s2[1]) - 2 * np.trace(covmean)
    assert frechet_distance(*s1, *s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_torch_fidelity_rank_deficient():
    """N < D as in small test runs: covariances are singular; both formulas must still agree."""
    s1, s2 = gaussian_stats(_features(20, 64)), gaussian_stats(_features(25, 64, shift=0.3, seed=2))
    ours = frechet_distance(*s1, *s2)
    theirs = fid_statistics_to_metric({"mu": s1[0], "sigma": s1[1]}, {"mu": s2[0], "sigma": s2[1]}, False)
    assert ours == pytest.approx(theirs["frechet_inception_distance"], rel=RTOL)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_symmetric():
    s1, s2 = gaussian_stats(_features(100, 8)), gaussian_stats(_features(100, 8, shift=1.0, seed=3))
    assert abs(frechet_distance(*s1, *s1)) < 1e-9
    assert frechet_distance(*s1, *s2) == pytest.approx(frechet_distance(*s2, *s1), rel=1e-9)


def test_frechet_distance_names_shape_mismatch():
    mu, sigma = gaussian_stats(_features(10, 4))
    with pytest.raises(ValueError, match="mean vectors differ"):
        frechet_distance(mu, sigma, mu[:3], sigma[:3, :3])


def _adm_inception_score(logits: np.ndarray, split_size: int) -> float:
    """ADM evaluator's compute_inception_score (softmax input = bias-free logits)."""
    preds = np.exp(logits - logits.max(1, keepdims=True))
    preds /= preds.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i : i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def test_inception_score_matches_adm_with_partial_last_split():
    logits = _features(23, 10) * 3
    mean, std = inception_score(logits, split_size=5)
    assert mean == pytest.approx(_adm_inception_score(logits, 5), rel=1e-10)
    assert std > 0


def test_inception_score_matches_torch_fidelity_unshuffled_splits():
    logits = _features(40, 12) * 2
    ours = inception_score(logits, split_size=10)
    theirs = isc_features_to_metric(torch.from_numpy(logits), splits=4, shuffle=False)
    assert ours[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-10)
    assert ours[1] == pytest.approx(theirs["inception_score_std"], rel=1e-8)


def test_inception_score_is_order_sensitive_across_splits_and_one_for_constant_predictions():
    logits = np.concatenate([np.eye(4)[[0] * 4] * 30, np.eye(4)[[0, 1, 2, 3]] * 30])
    assert inception_score(logits, split_size=4)[0] == pytest.approx((1 + 4) / 2, rel=1e-3)
    assert inception_score(np.zeros((6, 3)), split_size=3) == pytest.approx((1.0, 0.0))


def _brute_force_pr(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al.: k-NN balls (self excluded), squared distances in float64."""
    def sqdist(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    real_r = np.sort(sqdist(real, real), axis=1)[:, k]
    fake_r = np.sort(sqdist(fake, fake), axis=1)[:, k]
    cross = sqdist(fake, real)
    precision = np.mean([(cross[i] <= real_r).any() for i in range(len(fake))])
    recall = np.mean([(cross[:, j] <= fake_r).any() for j in range(len(real))])
    return float(precision), float(recall)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_precision_recall_matches_brute_force(dtype):
    real, fake = _features(60, 8), _features(45, 8, shift=0.4, seed=5)
    expected = _brute_force_pr(real, fake, 3)
    ours = precision_recall(real, fake, k=3, distance_dtype=dtype, batch_size=16)
    assert ours == pytest.approx(expected, rel=RTOL)
    assert 0 < ours[0] < 1 and 0 < ours[1] < 1  # a test that can fail both ways


def test_precision_recall_float16_default_matches_brute_force_on_separated_clusters():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(6, 16)) * 4
    real = centres[rng.integers(0, 6, 80)] + rng.normal(size=(80, 16)) * 0.3
    fake = centres[rng.integers(0, 3, 50)] + rng.normal(size=(50, 16)) * 0.3  # covers half the modes
    precision, recall = precision_recall(real, fake)
    assert (precision, recall) == pytest.approx(_brute_force_pr(real, fake, 3), rel=RTOL)
    assert precision > 0.7 and recall < 0.6


def test_precision_recall_falls_back_to_float32_when_float16_overflows():
    real, fake = _features(30, 8) * 1e3, _features(30, 8, shift=200, seed=9) * 1e3  # squared norms > 65504
    assert precision_recall(real, fake) == pytest.approx(_brute_force_pr(real, fake, 3), rel=RTOL)


def test_precision_recall_needs_more_than_k_points():
    with pytest.raises(ValueError, match="at least 4 points"):
        precision_recall(_features(3, 4), _features(10, 4))


def test_kid_matches_torch_fidelity_with_same_seed():
    real, fake = _features(40, 16), _features(30, 16, shift=0.2, seed=4)
    ours = kernel_inception_distance(real, fake, subsets=7, subset_size=20, seed=11)
    theirs = kid_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), kid_subsets=7, kid_subset_size=20, rng_seed=11, verbose=False
    )
    assert ours[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-10)
    assert ours[1] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-8)


def test_kid_rejects_subset_larger_than_a_set():
    with pytest.raises(ValueError, match="subset_size=50"):
        kernel_inception_distance(_features(40, 4), _features(30, 4), subset_size=50)


def test_emulated_float16_distances_equal_native_float16_arithmetic():
    """The fast float32 emulation gives bit-identical results to torch's (slow) CPU float16 path."""
    from vapi_bench.metrics.precision_recall import _squared_distances, _squared_distances_fp16

    u, v = torch.from_numpy(_features(30, 64)).float() * 2, torch.from_numpy(_features(20, 64, seed=8)).float() * 2
    emulated = _squared_distances_fp16(u, v)
    assert torch.equal(emulated, _squared_distances(u, v, torch.float16).float())
    assert not torch.equal(emulated, _squared_distances(u, v, torch.float32))  # float16 rounding is visible
