"""The imagenet-fid task: protocol, ADM npz export, reference handling, end-to-end scoring."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from random_inception import random_inception_weights
from tiny_dinov2 import tiny_dinov2_folder

from vapi_bench import load_task
from vapi_bench.errors import DataError, UsageError
from vapi_bench.imageio import save_png
from vapi_bench.interfaces import SamplingRecipe, StageContext
from vapi_bench.metrics import InceptionExtractor, frechet_distance, gaussian_stats, inception_score, precision_recall
from vapi_bench.metrics.dinov2 import DinoV2Extractor
from vapi_bench.tasks.imagenet.adm_npz import AdmNpzWriter, iter_npz_images, npz_image_count
from vapi_bench.tasks.imagenet.reference import load_reference_stats
from vapi_bench.tasks.imagenet.task import ImageNetFIDTask, class_labels

GENERATOR = SimpleNamespace(name="stub", conditioning="class", num_classes=10,
                            default_recipe=SamplingRecipe(cfg_scale=4.0, top_k=100))
SIZE, N_FAKE, N_REF = 32, 6, 6


def _random_images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, size=(n, 3, 4, 4))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    noisy = smooth.permute(0, 2, 3, 1).numpy() + rng.normal(0, 20, size=(n, SIZE, SIZE, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


# ---- protocol -------------------------------------------------------------------------------------
def test_balanced_labels_give_equal_counts_and_balanced_prefixes():
    labels = class_labels(50_000, 1000, "balanced")
    assert np.bincount(labels).tolist() == [50] * 1000
    assert len(set(labels[:1000].tolist())) == 1000


def test_random_labels_are_seeded_and_uniform_in_range():
    a, b = class_labels(5000, 1000, "random", seed=1), class_labels(5000, 1000, "random", seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, class_labels(5000, 1000, "random", seed=2))
    assert a.min() >= 0 and a.max() < 1000 and len(np.unique(a)) > 900


def test_items_respect_limit_and_record_class():
    task = ImageNetFIDTask(n=30)
    items = task.items(GENERATOR, limit=12)
    assert [it.index for it in items] == list(range(12))
    assert [it.condition for it in items] == [i % 10 for i in range(12)]
    assert items[3].meta == {"class": 3}


def test_text_models_are_rejected_with_a_clear_error():
    with pytest.raises(UsageError, match="class-conditional"):
        ImageNetFIDTask().items(SimpleNamespace(name="t2i", conditioning="text", num_classes=0))


def test_variants_are_without_and_with_cfg():
    task = ImageNetFIDTask()
    without, with_cfg = task.variants(GENERATOR)
    assert without == SamplingRecipe(cfg_scale=1.0, top_k=100) and with_cfg == GENERATOR.default_recipe
    assert ImageNetFIDTask(cfg="with").variants(GENERATOR) == [GENERATOR.default_recipe]
    no_cfg_model = SimpleNamespace(**{**vars(GENERATOR), "default_recipe": SamplingRecipe()})
    assert task.variants(no_cfg_model) == [SamplingRecipe()]
    assert task.output_size(GENERATOR) == 256


def test_task_is_registered_with_typed_params():
    task = load_task("imagenet-fid", n="64", class_sampling="random")
    assert isinstance(task, ImageNetFIDTask) and task.n == 64
    with pytest.raises(UsageError, match="class_sampling"):
        load_task("imagenet-fid", class_sampling="stratified")
    names = [req.what for req in load_task("imagenet-fid", clean_fid="true").requirements()]
    assert names == ["inception", "imagenet-reference", "clean-fid-inception", "dinov2-vitl14", "dinov2-vitl14"]
    names = [req.what for req in load_task("imagenet-fid", fd_dinov2="false").requirements()]
    assert names == ["inception", "imagenet-reference"]


# ---- ADM npz ----------------------------------------------------------------------------------------
def test_adm_npz_round_trip_streams_batches(tmp_path):
    images = _random_images(7, 0)
    writer = AdmNpzWriter(tmp_path / "s.npz", 7, labels=np.arange(7))
    for start in range(0, 7, 3):
        writer.write(images[start : start + 3])
    path = writer.close()
    with np.load(path) as data:
        assert np.array_equal(data["arr_0"], images) and data["arr_0"].dtype == np.uint8
        assert data["arr_1"].tolist() == list(range(7))
    assert npz_image_count(path) == 7
    assert np.array_equal(np.concatenate(list(iter_npz_images(path, 2))), images)


def test_adm_npz_with_missing_images_is_discarded(tmp_path):
    writer = AdmNpzWriter(tmp_path / "s.npz", 5)
    writer.write(_random_images(2, 0))
    with pytest.raises(DataError, match="2 of 5"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


# ---- end to end -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_inception_weights(tmp_path_factory.getbasetemp() / "random-inception.pth")


@pytest.fixture(scope="module")
def world(weights, tmp_path_factory):
    """Sample PNGs, two reference files (images only / images + stored stats), expected features."""
    root = tmp_path_factory.mktemp("imagenet")
    extractor = InceptionExtractor(weights)
    fake, real = _random_images(N_FAKE, 1), _random_images(N_REF, 2)
    fake_feats, real_feats = extractor.extract([fake]), extractor.extract([real])
    dinov2 = tiny_dinov2_folder(root / "dinov2")
    dino = DinoV2Extractor(dinov2)
    fake_dino, real_dino = dino.extract([fake]), dino.extract([real])
    np.savez(root / "ref_images.npz", arr_0=real)
    mu, sigma = gaussian_stats(real_feats.pool)
    mu_s, sigma_s = gaussian_stats(real_feats.spatial)
    np.savez(root / "ref_stats.npz", arr_0=real, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    return SimpleNamespace(root=root, fake=fake, fake_feats=fake_feats, real_feats=real_feats, dinov2=dinov2,
                           fake_dino=fake_dino, real_dino=real_dino)


def _score(world, weights, reference, monkeypatch, **params):
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(world.root / "cache"))
    params = {"dinov2_weights": str(world.dinov2), **params}
    task = ImageNetFIDTask(n=N_FAKE, image_size=SIZE, reference=str(reference), inception_weights=str(weights),
                           batch_size=4, split_size=4, **params)
    items = task.items(GENERATOR)
    sample_dir = world.root / "samples"
    for item, pixels in zip(items, world.fake):
        if not task.image_path(sample_dir, item).exists():
            save_png(task.image_path(sample_dir, item), pixels)
    ctx = StageContext(out_dir=world.root / "out", device=torch.device("cpu"), seed=0)
    return task.score(sample_dir, items, ctx), sample_dir


@pytest.fixture(scope="module")
def scored_against_images(world, weights):
    """Each score costs ~6 CPU-seconds of 2048-d eigen-decompositions, so score once per reference."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _score(world, weights, world.root / "ref_images.npz", monkeypatch)


def test_score_end_to_end_matches_metric_functions_and_exports_npz(world, scored_against_images):
    result, sample_dir = scored_against_images
    f, r = world.fake_feats, world.real_feats
    assert set(result.metrics) == {"fid", "sfid", "inception_score", "inception_score_std", "precision", "recall",
                                   "fd_dinov2"}
    assert result.metrics["fid"] == pytest.approx(
        frechet_distance(*gaussian_stats(f.pool), *gaussian_stats(r.pool)), rel=1e-6)
    assert result.metrics["fd_dinov2"] == pytest.approx(
        frechet_distance(*gaussian_stats(world.fake_dino), *gaussian_stats(world.real_dino)), rel=1e-6)
    assert result.metrics["fd_dinov2"] > 0 and len(result.extra["dinov2_sha256"]) == 64
    assert result.metrics["inception_score"] == pytest.approx(inception_score(f.logits, 4)[0], rel=1e-6)
    assert (result.metrics["precision"], result.metrics["recall"]) == precision_recall(r.pool, f.pool)
    assert result.metrics["fid"] > 0 and result.metrics["sfid"] > 0
    assert result.extra["reference"]["stats"] == "computed"
    assert result.extra["protocol"]["class_sampling"] == "balanced"
    assert result.evaluator.startswith("adm-compatible")
    with np.load(sample_dir / "samples.npz") as data:
        assert np.array_equal(data["arr_0"], world.fake) and data["arr_1"].tolist() == list(range(N_FAKE))


def test_reference_statistics_are_cached_by_content(world, weights, scored_against_images, monkeypatch):
    def no_reread(*args, **kwargs):
        raise AssertionError("reference images were read again instead of the cached statistics")

    monkeypatch.setenv("VAPI_BENCH_CACHE", str(world.root / "cache"))
    monkeypatch.setattr("vapi_bench.tasks.imagenet.reference.iter_npz_images", no_reread)
    cached = load_reference_stats(world.root / "ref_images.npz", extractor=None, inception_weights=weights)
    np.testing.assert_allclose(cached.pool, world.real_feats.pool, rtol=1e-6)
    np.testing.assert_allclose(cached.mu_s, world.real_feats.spatial.mean(0), rtol=1e-6)


def test_fid_from_stored_stats_equals_fid_from_reference_images(world, weights, scored_against_images, monkeypatch):
    from_images, _ = scored_against_images
    from_stats, _ = _score(world, weights, world.root / "ref_stats.npz", monkeypatch, export_npz=False)
    assert from_stats.extra["reference"]["stats"] == "stored"
    for key in ("fid", "sfid", "precision", "recall", "fd_dinov2"):
        assert from_stats.metrics[key] == pytest.approx(from_images.metrics[key], rel=1e-6)


def test_fd_dinov2_is_skipped_without_reference_images(world, weights, tmp_path, monkeypatch):
    mu, sigma = gaussian_stats(world.real_feats.pool)
    np.savez(tmp_path / "stats_only.npz", mu=mu, sigma=sigma)
    stats_only, _ = _score(world, weights, tmp_path / "stats_only.npz", monkeypatch, export_npz=False)
    assert "fd_dinov2" not in stats_only.metrics and stats_only.extra["dinov2_sha256"] is None
    assert "fd_dinov2 skipped: the reference has no images (arr_0)" in stats_only.extra["notes"]


def test_missing_and_wrong_size_samples_are_named(world, weights, monkeypatch, tmp_path):
    task = ImageNetFIDTask(n=4, image_size=SIZE, reference=str(world.root / "ref_images.npz"),
                           inception_weights=str(weights))
    items = task.items(GENERATOR)
    ctx = StageContext(out_dir=tmp_path, device=torch.device("cpu"), seed=0)
    with pytest.raises(DataError, match="4 of 4 samples are missing"):
        task.score(tmp_path, items, ctx)
    for item in items:
        save_png(task.image_path(tmp_path, item), np.zeros((SIZE + 1, SIZE, 3), np.uint8))
    with pytest.raises(DataError, match=r"000000\.png is 32x33, expected 32x32"):
        task.score(tmp_path, items, ctx)


def test_reference_without_stats_or_images_is_rejected(world, weights, tmp_path, monkeypatch):
    np.savez(tmp_path / "empty.npz", labels=np.arange(3))
    with pytest.raises(DataError, match="neither precomputed statistics"):
        _score(world, weights, tmp_path / "empty.npz", monkeypatch, export_npz=False)
