"""Shapes feature network, perceptual scorer, torch-fidelity registration, shapes-fid and shapes-geneval."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lpips
import numpy as np
import pytest
import torch
import torch_fidelity

from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.imageio import save_png
from vapi_bench.interfaces import SamplingRecipe, StageContext
from vapi_bench.metrics import frechet_distance, gaussian_stats, inception_score, kernel_inception_distance
from vapi_bench.params import resolve_params
from vapi_bench.plugins.shapes import vocab
from vapi_bench.plugins.shapes.data import class_dataset, render_record
from vapi_bench.plugins.shapes.features import (
    FIDELITY_NAME,
    ShapesFeatureNet,
    extract,
    load_feature_net,
    save_feature_net,
    train_feature_net,
)
from vapi_bench.plugins.shapes.perceptual import ShapesPerceptual, register_scorers_impl
from vapi_bench.tasks.shapes import register_tasks
from vapi_bench.tasks.shapes.fid_task import ShapesFIDTask
from vapi_bench.tasks.shapes.geneval_task import ShapesGenEvalTask

EXPECTED_KEYS = [
    f"stages.{stage}.{layer}.{kind}"
    for stage, layers in ((0, (0, 1, 3, 4)), (1, (1, 2, 4, 5)), (2, (1, 2, 4, 5)), (3, (1, 2)))
    for layer in layers
    for kind in ("weight", "bias")
] + [f"{head}.{kind}" for head in ("fc", "class_head", "position_head", "size_head") for kind in ("weight", "bias")]

C2I = SimpleNamespace(name="fake-c2i", conditioning="class", num_classes=vocab.NUM_CLASSES,
                      default_recipe=SamplingRecipe(cfg_scale=2.0, top_k=0))
T2I = SimpleNamespace(name="fake-t2i", conditioning="text", num_classes=0, default_recipe=SamplingRecipe())


def _random_net(seed: int) -> ShapesFeatureNet:
    torch.manual_seed(seed)
    return ShapesFeatureNet().eval()


@pytest.fixture(scope="module")
def featnet_file(tmp_path_factory) -> Path:
    return save_feature_net(_random_net(0).state_dict(), tmp_path_factory.mktemp("featnet") / "featnet.safetensors")


def _uint8(dataset, n):
    return np.stack([dataset.scene(i).image for i in range(n)])


# ---- feature network --------------------------------------------------------------------------


def test_feature_net_keys_outputs_and_input_forms():
    net = _random_net(1)
    assert list(net.state_dict()) == EXPECTED_KEYS
    images = _uint8(class_dataset("test", 6, 32, 0), 6)
    as_uint8 = torch.from_numpy(images).permute(0, 3, 1, 2)
    as_float = as_uint8.float() / 127.5 - 1.0
    with torch.no_grad():
        out = net(as_uint8)
        assert out["features"].shape == (6, 128) and out["logits"].shape == (6, vocab.NUM_CLASSES)
        assert out["position_logits"].shape == (6, 9) and out["size_logits"].shape == (6, 3)
        # standardised features keep KID's cubic kernel on Inception's scale
        assert torch.allclose(out["features"].mean(dim=1), torch.zeros(6), atol=1e-5)
        assert torch.allclose(out["features"].pow(2).mean(dim=1), torch.ones(6), atol=1e-3)
        assert torch.allclose(net.features(as_float), out["features"], atol=1e-5)
        assert torch.allclose(net.logits(as_float), out["logits"], atol=1e-5)
        big = net(torch.from_numpy(_uint8(class_dataset("test", 2, 64, 0), 2)).permute(0, 3, 1, 2))
    assert big["features"].shape == (2, 128)
    assert [a.shape[-1] for a in net.activations(as_float)] == [32, 16, 8, 4]


def test_train_feature_net_is_deterministic_and_learns():
    data = class_dataset("train", 500, 32, 0)
    a = train_feature_net(data, steps=3, seed=5, batch_size=8)
    b = train_feature_net(data, steps=3, seed=5, batch_size=8)
    c = train_feature_net(data, steps=3, seed=6, batch_size=8)
    assert list(a) == EXPECTED_KEYS
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    losses: list[float] = []
    train_feature_net(data, steps=40, seed=0, batch_size=16, on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == 40 and np.mean(losses[-10:]) < np.mean(losses[:5]) - 0.5


def test_save_load_round_trip_and_clear_errors(tmp_path, featnet_file):
    net = load_feature_net(featnet_file)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    reference = _random_net(0)
    assert all(torch.equal(net.state_dict()[k], reference.state_dict()[k]) for k in EXPECTED_KEYS)
    with pytest.raises(CheckpointError, match="not found"):
        load_feature_net(tmp_path / "missing.safetensors")
    state = reference.state_dict()
    state.pop("size_head.bias")
    state["fc.weight"] = torch.zeros(3, 3)
    state["extra"] = torch.zeros(1)
    bad = save_feature_net(state, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=r"missing \['size_head.bias'\].*unexpected \['extra'\].*fc.weight"):
        load_feature_net(bad)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="Cannot read"):
        load_feature_net(corrupt)


class _Uint8Images(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def test_torch_fidelity_extractor_matches_our_metric_code(featnet_file):
    fake = _uint8(class_dataset("test", 40, 32, 1), 40)
    real = _uint8(class_dataset("ref", 40, 32, 1), 40)
    result = torch_fidelity.calculate_metrics(
        input1=_Uint8Images(fake), input2=_Uint8Images(real), cuda=False, isc=True, fid=True, kid=True,
        feature_extractor=FIDELITY_NAME, feature_extractor_weights_path=str(featnet_file),
        isc_splits=1, samples_shuffle=False, kid_subsets=10, kid_subset_size=20, save_cpu_ram=True,
        verbose=False, cache=False, batch_size=16)
    net = load_feature_net(featnet_file)
    f_fake, l_fake = extract(net, fake)
    f_real, _ = extract(net, real)
    fid = frechet_distance(*gaussian_stats(f_fake), *gaussian_stats(f_real))
    assert result["frechet_inception_distance"] == pytest.approx(fid, rel=1e-5)
    assert result["inception_score_mean"] == pytest.approx(inception_score(l_fake, split_size=40)[0], rel=1e-6)
    kid, _ = kernel_inception_distance(f_real, f_fake, subsets=10, subset_size=20, seed=2020)
    # torch-fidelity evaluates the KID kernels on float32 features; ours runs in float64
    assert result["kernel_inception_distance_mean"] == pytest.approx(kid, rel=1e-4)


# ---- perceptual scorer ------------------------------------------------------------------------


def test_perceptual_matches_lpips_unlearned_formula_and_is_differentiable():
    net = _random_net(2)
    scorer = ShapesPerceptual(net=net).train()
    assert not scorer.net.training
    data = class_dataset("test", 4, 32, 0)
    target = torch.stack([data[i][0] for i in range(4)])
    pred = (target + 0.2 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    distance = scorer(pred, target)
    with torch.no_grad():
        squared = [((lpips.normalize_tensor(a) - lpips.normalize_tensor(b)) ** 2).sum(dim=1, keepdim=True)
                   for a, b in zip(net.activations(pred), net.activations(target))]
        expected = sum(lpips.spatial_average(d).flatten() for d in squared)
    assert distance.shape == (4,)
    assert torch.allclose(distance, expected, rtol=1e-5)
    assert torch.all(scorer(target, target) == 0)
    distance.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="differ in shape"):
        scorer(target, target[:2])


def test_perceptual_entry(featnet_file):
    entries = []
    register_scorers_impl(entries.append)
    (entry,) = entries
    assert entry.name == "shapes-perceptual" and [p.name for p in entry.params] == ["weights"]
    scorer = entry.factory(**resolve_params(entry.params, {"weights": str(featnet_file)}, "shapes-perceptual"))
    assert isinstance(scorer, ShapesPerceptual) and scorer.differentiable


# ---- tasks ------------------------------------------------------------------------------------


def _task_entries():
    entries = []
    register_tasks(register=entries.append)
    return {e.name: e for e in entries}


def test_task_entries_build_with_resolved_params():
    entries = _task_entries()
    assert set(entries) == {"shapes-fid", "shapes-geneval"}
    fid = entries["shapes-fid"].factory(**resolve_params(entries["shapes-fid"].params, {"n": "48"}, "shapes-fid"))
    geneval = entries["shapes-geneval"].factory(
        **resolve_params(entries["shapes-geneval"].params, {"tags": "single_object"}, "shapes-geneval"))
    assert isinstance(fid, ShapesFIDTask) and fid.n == 48
    assert isinstance(geneval, ShapesGenEvalTask) and geneval.tags == ("single_object",)


def test_shapes_fid_items_and_variants():
    task = ShapesFIDTask(n=50)
    items = task.items(C2I)
    assert [it.condition for it in items] == [i % vocab.NUM_CLASSES for i in range(50)]
    assert len(task.items(C2I, limit=7)) == 7
    assert [r.cfg_scale for r in task.variants(C2I)] == [1.0, 2.0]
    assert [r.cfg_scale for r in ShapesFIDTask(cfg="with").variants(C2I)] == [2.0]
    with pytest.raises(UsageError, match="class-conditional"):
        task.items(T2I)
    with pytest.raises(UsageError, match="24 shapes classes"):
        task.items(SimpleNamespace(**{**vars(C2I), "num_classes": 10}))


def _write_samples(task, items, sample_dir, images):
    for item, image in zip(items, images):
        save_png(task.image_path(sample_dir, item), image)


def test_shapes_fid_score_matches_metric_api_and_caches_reference(tmp_path, monkeypatch, featnet_file):
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
    task = ShapesFIDTask(n=48, reference_n=48, featnet=str(featnet_file), split_size=24, kid_subsets=5,
                         kid_subset_size=20)
    items = task.items(C2I)
    data = class_dataset("test", 48, 32, 9)
    images = _uint8(data, 48)
    _write_samples(task, items, tmp_path / "samples", images)
    ctx = StageContext(out_dir=tmp_path / "score", device=torch.device("cpu"), seed=0)
    result = task.score(tmp_path / "samples", items, ctx)
    assert set(result.metrics) == {"fid", "inception_score", "inception_score_std", "kid", "kid_std", "precision",
                                   "recall", "class_accuracy"}

    net = load_feature_net(featnet_file)
    features, logits = extract(net, images)
    ref_features, _ = extract(net, _uint8(class_dataset("ref", 48, 32, 0), 48))
    assert result.metrics["fid"] == pytest.approx(
        frechet_distance(*gaussian_stats(features), *gaussian_stats(ref_features)), rel=1e-9)
    assert result.metrics["inception_score"] == pytest.approx(inception_score(logits, 24)[0], rel=1e-9)
    assert result.metrics["class_accuracy"] == pytest.approx(
        np.mean(logits.argmax(1) == np.arange(48) % vocab.NUM_CLASSES))
    assert [r["class_correct"] for r in result.per_sample] == list(logits.argmax(1) == np.arange(48) % 24)
    assert result.extra["reference"]["cached"] is False
    cache_files = list((tmp_path / "cache" / "shapes-ref").glob("*.npz"))
    assert len(cache_files) == 1

    again = task.score(tmp_path / "samples", items, ctx)
    assert again.extra["reference"]["cached"] is True and again.metrics == result.metrics
    other_net = save_feature_net(_random_net(7).state_dict(), tmp_path / "other.safetensors")
    third = ShapesFIDTask(n=48, reference_n=48, featnet=str(other_net), split_size=24, kid_subsets=5,
                          kid_subset_size=20).score(tmp_path / "samples", items, ctx)
    assert third.extra["reference"]["key"] != result.extra["reference"]["key"]

    blank = np.full_like(images, 120)
    _write_samples(task, items, tmp_path / "blank", blank)
    assert task.score(tmp_path / "blank", items, ctx).metrics["fid"] > result.metrics["fid"]


def test_shapes_geneval_items_tags_and_errors():
    task = ShapesGenEvalTask(tags="single_object")
    items = task.items(T2I)
    assert len(items) == 4 * len(vocab.SHAPES)
    assert {it.meta["tag"] for it in items} == {"single_object"}
    assert {it.condition for it in items} == {f"a photo of a {s}" for s in vocab.SHAPES}
    all_tags = ShapesGenEvalTask()
    assert {r["tag"] for r in all_tags.metadata} == set(vocab.TAGS)
    assert len(all_tags.items(T2I)) == 4 * len(all_tags.metadata)
    with pytest.raises(UsageError, match="unknown tag"):
        ShapesGenEvalTask(tags="single_object,colour")
    with pytest.raises(UsageError, match="text-conditional"):
        task.items(C2I)


def test_shapes_geneval_scores_faithful_images_perfectly_and_wrong_ones_zero(tmp_path):
    task = ShapesGenEvalTask(images_per_prompt=1)
    items = task.items(T2I)
    sample_dir = tmp_path / "samples"
    task.write_layout(sample_dir, items)
    for item in items:
        scene = render_record(item.meta["metadata"], 32, np.random.default_rng(item.index))
        save_png(task.image_path(sample_dir, item), scene.image)
    ctx = StageContext(out_dir=tmp_path / "score", device=torch.device("cpu"), seed=0)
    result = task.score(sample_dir, items, ctx)
    assert result.metrics["overall"] == 1.0
    assert all(result.metrics[tag] == 1.0 for tag in vocab.TAGS)
    record = result.per_sample[0]
    assert {"index", "correct", "reason", "tag", "prompt", "objects"} <= set(record)

    single = ShapesGenEvalTask(tags="single_object", images_per_prompt=2)
    items = single.items(T2I)
    wrong_dir = tmp_path / "wrong"
    single.write_layout(wrong_dir, items)
    for item in items:
        wanted = item.meta["metadata"]["include"][0]["class"]
        other = vocab.SHAPES[(vocab.SHAPES.index(wanted) + 1) % len(vocab.SHAPES)]
        record = {"tag": "single_object", "prompt": "", "include": [{"class": other, "count": 1}]}
        save_png(single.image_path(wrong_dir, item), render_record(record, 32, np.random.default_rng(0)).image)
    wrong = single.score(wrong_dir, items, ctx)
    assert wrong.metrics["single_object"] == 0.0 and wrong.metrics["overall"] == 0.0
    assert all(r["reason"].startswith("expected ") for r in wrong.per_sample)
