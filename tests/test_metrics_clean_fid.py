"""clean-fid's clean mode: our feature pipeline equals clean-fid's own on the same PNG folder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cleanfid.fid import get_folder_features
from cleanfid.inception_torchscript import InceptionV3W
from PIL import Image
from random_inception import random_clean_fid_inception, random_inception_weights

from vapi_bench.errors import CheckpointError, DataError
from vapi_bench.metrics import gaussian_stats
from vapi_bench.tasks.imagenet.clean_fid import CleanInception, clean_mode_fid


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, size=(n, 3, 4, 4))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(40, 40), mode="bilinear", align_corners=False)
    return np.clip(smooth.permute(0, 2, 3, 1).numpy() + rng.normal(0, 20, (n, 40, 40, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    folder = base / "clean-fid-weights"
    folder.mkdir(exist_ok=True)
    weights = random_inception_weights(base / "random-inception.pth")
    return random_clean_fid_inception(folder / "inception-2015-12-05.pt", weights)


def test_clean_features_equal_clean_fid_folder_features(scripted, tmp_path):
    images = _images(5, 0)
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i:03d}.png")
    theirs = get_folder_features(
        str(tmp_path), InceptionV3W(str(scripted.parent), download=False), num_workers=0, batch_size=3,
        device=torch.device("cpu"), mode="clean", verbose=False,
    )
    ours = CleanInception(scripted).extract([images[:3], images[3:]])
    assert ours.shape == (5, 2048) and ours.std() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_clean_mode_fid_compares_sample_stats_with_reference_image_stats(scripted, tmp_path, monkeypatch):
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
    fake, real = _images(4, 1), _images(4, 2)
    np.savez(tmp_path / "ref.npz", arr_0=real)
    model = CleanInception(scripted)
    seen = []
    monkeypatch.setattr("vapi_bench.tasks.imagenet.clean_fid.frechet_distance", lambda *a: seen.append(a) or 1.5)
    assert clean_mode_fid([fake[:2], fake[2:]], tmp_path / "ref.npz", scripted, batch_size=3) == 1.5
    (mu1, sigma1, mu2, sigma2), = seen
    for got, want in zip((mu1, sigma1, mu2, sigma2),
                         (*gaussian_stats(model.extract([fake])), *gaussian_stats(model.extract([real])))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    np.savez(tmp_path / "stats_only.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(DataError, match="clean_fid needs reference images"):
        clean_mode_fid([fake], tmp_path / "stats_only.npz", scripted)


def test_non_torchscript_file_is_rejected_by_name(tmp_path):
    bad = tmp_path / "not-scripted.pt"
    torch.save({"a": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not-scripted.pt"):
        CleanInception(bad)
