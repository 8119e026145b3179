"""Parity with torch-fidelity on the same images through a random-weight Inception.

torch-fidelity computes FID, IS, KID and precision/recall end to end (its own feature pass over the
images); we compute them from one pass of our extractor with our metric code. Everything must
agree within 1e-4 relative.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_fidelity
from random_inception import random_inception_weights

from vapi_bench.errors import CheckpointError, DataError
from vapi_bench.metrics import (
    InceptionExtractor,
    frechet_distance,
    gaussian_stats,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)

RTOL = 1e-4
N_FAKE, N_REAL, SPLIT = 8, 8, 4


def _images(n: int, seed: int, tint: tuple[int, int, int]) -> np.ndarray:
    """Smooth random colour fields plus noise, uint8 NHWC, 32x32 (Inception resizes to 299 anyway)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, size=(n, 3, 4, 4))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    pixels = smooth.permute(0, 2, 3, 1).numpy() * 0.7 + np.array(tint) + rng.normal(0, 12, size=(n, 32, 32, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


class _Images(torch.utils.data.Dataset):
    def __init__(self, nhwc: np.ndarray) -> None:
        self.nhwc = nhwc

    def __len__(self) -> int:
        return len(self.nhwc)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.nhwc[i]).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_inception_weights(tmp_path_factory.getbasetemp() / "random-inception.pth")


@pytest.fixture(scope="module")
def sets():
    return _images(N_FAKE, 1, (60, 0, 0)), _images(N_REAL, 2, (0, 40, 60))


@pytest.fixture(scope="module")
def ours(weights, sets):
    extractor = InceptionExtractor(weights)
    fake, real = sets
    return extractor.extract([fake[:5], fake[5:]]), extractor.extract([real])


@pytest.fixture(scope="module")
def theirs(weights, sets, tmp_path_factory):
    fake, real = sets
    return torch_fidelity.calculate_metrics(
        input1=_Images(fake), input2=_Images(real), isc=True, fid=True, kid=True, prc=True,
        feature_extractor="inception-v3-compat", feature_layer_prc="2048",
        feature_extractor_weights_path=str(weights), cuda=False, batch_size=8, verbose=False,
        save_cpu_ram=True, cache=False, samples_shuffle=False, isc_splits=N_FAKE // SPLIT,
        kid_subsets=5, kid_subset_size=6, rng_seed=3,
    )


def test_features_have_adm_shapes(ours):
    fake, real = ours
    assert fake.pool.shape == (N_FAKE, 2048) and fake.logits.shape == (N_FAKE, 1008)
    assert fake.spatial.shape == (N_FAKE, 17 * 17 * 7) and len(real) == N_REAL
    assert fake.pool.std() > 0 and fake.logits.std() > 0


def test_fid_equals_torch_fidelity(ours, theirs):
    fake, real = ours
    fid = frechet_distance(*gaussian_stats(fake.pool), *gaussian_stats(real.pool))
    assert fid > 1.0
    assert fid == pytest.approx(theirs["frechet_inception_distance"], rel=RTOL)


def test_inception_score_equals_torch_fidelity(ours, theirs):
    mean, std = inception_score(ours[0].logits, split_size=SPLIT)
    assert mean > 1.0
    assert mean == pytest.approx(theirs["inception_score_mean"], rel=RTOL)
    assert std == pytest.approx(theirs["inception_score_std"], rel=1e-3, abs=1e-6)


def test_kid_equals_torch_fidelity(ours, theirs):
    fake, real = ours
    mean, std = kernel_inception_distance(real.pool, fake.pool, subsets=5, subset_size=6, seed=3)
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=RTOL)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-3)


def test_precision_recall_equals_torch_fidelity(ours, theirs):
    fake, real = ours
    ours_pr = precision_recall(real.pool, fake.pool, k=3, distance_dtype="float32")
    assert ours_pr == pytest.approx((theirs["precision"], theirs["recall"]), rel=RTOL)


def test_spatial_features_are_mixed_6d_branch1x1_first_7_channels_in_nhwc_order(weights, sets):
    extractor = InceptionExtractor(weights)
    captured = {}
    extractor.net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: captured.setdefault("out", o.clone()))
    spatial = extractor.extract([sets[0][:2]]).spatial
    out = captured["out"].double().numpy()  # [2, 192, 17, 17]
    assert out.shape == (2, 192, 17, 17)
    n, h, w, c = 1, 5, 11, 6
    assert spatial[n, (h * 17 + w) * 7 + c] == pytest.approx(out[n, c, h, w], rel=1e-6)
    np.testing.assert_allclose(spatial, out[:, :7].transpose(0, 2, 3, 1).reshape(2, -1), rtol=1e-6)


def test_extractor_names_bad_inputs_and_bad_weights(weights, tmp_path):
    extractor = InceptionExtractor(weights)
    with pytest.raises(DataError, match="uint8"):
        extractor.extract([np.zeros((2, 8, 8, 3), dtype=np.float32)])
    broken = tmp_path / "broken.pth"
    torch.save({"fc.weight": torch.zeros(3)}, broken)
    with pytest.raises(CheckpointError, match="broken.pth"):
        InceptionExtractor(broken)


def test_features_ignore_a_callers_bf16_autocast(weights, sets):
    extractor = InceptionExtractor(weights)
    plain = extractor.extract([sets[0][:2]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = extractor.extract([sets[0][:2]])
    np.testing.assert_array_equal(under_autocast.pool, plain.pool)
    np.testing.assert_array_equal(under_autocast.spatial, plain.spatial)
