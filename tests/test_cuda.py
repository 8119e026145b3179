"""Every shapes-lab path on a CUDA device: each method for 2 steps, the t2i methods on shapes-geneval,
one tiny `lab tune --controls`, and sampling determinism. Skipped without CUDA (here and in CI); on a
GPU machine the file takes well under two minutes:

    .venv/bin/python -m pytest -q tests/test_cuda.py

Each test is independent (own runs directory), so one failure does not hide the others. The shapes
reference statistics are cached under VAPI_BENCH_CACHE as in any run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vapi_bench.cli import main
from vapi_bench.metrics import kernel_inception_distance
from vapi_bench.runner import RunRequest, Runner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICE = "cuda"

TINY_FID = {"task.n": "24", "task.reference_n": "48"}  # 24 = one sample per class; cfg=both: two rows
FID_METRICS = ("fid", "kid", "inception_score", "class_accuracy", "precision", "recall")
TINY_TRAIN = {"method.steps": "2", "method.batch_size": "2", "method.micro_batch": "1"}
GROUP = {"method.group_size": "2"}
TINY_GENEVAL = {"task.tags": "single_object", "task.images_per_prompt": "2"}  # 4 prompts x 2 = 8 images

#: lab label -> the method and its settings (va-pi's Table 4 variants as `lab tune` runs them)
C2I_METHODS = {
    "none": ("none", {}),
    "sft": ("sft", TINY_TRAIN),
    "va-pi": ("va-pi", {**TINY_TRAIN, **GROUP}),
    "va-pi:reward-only": ("va-pi", {**TINY_TRAIN, **GROUP, "method.beta": "0"}),
    "va-pi:prior-only": ("va-pi", {**TINY_TRAIN, **GROUP, "method.w_mse": "0", "method.w_perceptual": "0"}),
    "va-pi:kl+noise": ("va-pi", {**TINY_TRAIN, **GROUP, "method.use_kl": "true", "method.xi": "0.5"}),
    "post-train-tokenizer": ("post-train-tokenizer", TINY_TRAIN),
    "ste": ("ste", TINY_TRAIN),
    "ar-grpo": ("ar-grpo", {**TINY_TRAIN, **GROUP}),
    "cca": ("cca", {**TINY_TRAIN, "method.micro_batch": "2"}),  # c- is the other pair of the micro-batch
}


def _run(runs: Path, model: str, method: str, task: str, overrides: dict[str, str], seed: int = 0):
    request = RunRequest(model=model, method=method, task=task, overrides=overrides, seed=seed, runs_dir=runs,
                         device=DEVICE, quiet=True)
    return Runner(request).run()


def _record(result) -> dict:
    return json.loads((result.run_dir / "run.json").read_text())


def _sample_dirs(runs: Path, record: dict) -> list[Path]:
    return [runs / "samples" / v["sample"] for v in record["stage_keys"]["variants"]]


def _images(sample_dir: Path) -> dict[str, np.ndarray]:
    """Every sample image (grid excluded) by its path relative to the sample directory."""
    return {str(p.relative_to(sample_dir)): np.asarray(Image.open(p).convert("RGB"))
            for p in sorted(sample_dir.rglob("*.png")) if p.name != "grid.png"}


def _check_run(runs: Path, result, method: str, n_images: int, metrics: tuple[str, ...]) -> None:
    """Finite metrics in every row; samples and grid on disk; for a trained method, finite weights
    and a finite 2-step training log; the run recorded as a CUDA run."""
    record = _record(result)
    assert record["device"].startswith(DEVICE)
    assert result.rows and len(result.rows) == len(record["stage_keys"]["variants"])
    for row in result.rows:
        bad = {k: row.get(k) for k in metrics if not isinstance(row.get(k), float) or not math.isfinite(row[k])}
        assert not bad, f"{method} {row['variant']}: metrics not finite {bad}"
    for sample_dir in _sample_dirs(runs, record):
        assert len(_images(sample_dir)) == n_images and (sample_dir / "grid.png").is_file()
    if method == "none":
        return
    ft_dir = runs / "finetune" / record["stage_keys"]["finetune"]
    weights = ft_dir / "weights"
    files = ["gpt.safetensors"] + (["vq.safetensors"] if method == "post-train-tokenizer" else [])
    for name in files:
        state = load_file(str(weights / name))
        assert state and all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point()), name
    log = [json.loads(line) for line in (ft_dir / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in log)
    assert json.loads((ft_dir / "finetune.json").read_text())["steps"] == 2


@pytest.mark.parametrize("label", list(C2I_METHODS))
def test_c2i_method_on_shapes_fid(tmp_path, label):
    method, overrides = C2I_METHODS[label]
    result = _run(tmp_path / "runs", "shapes-c2i", method, "shapes-fid", {**TINY_FID, **overrides})
    assert [r["variant"] for r in result.rows] == ["no-cfg", "cfg"]
    _check_run(tmp_path / "runs", result, method, 24, FID_METRICS)


@pytest.mark.parametrize("method", ["va-pi", "ar-grpo"])
def test_t2i_method_on_shapes_geneval(tmp_path, method):
    result = _run(tmp_path / "runs", "shapes-t2i", method, "shapes-geneval", {**TINY_GENEVAL, **TINY_TRAIN, **GROUP})
    _check_run(tmp_path / "runs", result, method, 8, ("overall", "single_object", "correct_images"))


def test_sampling_on_cuda_is_deterministic(tmp_path):
    """The same seed in two fresh runs directories (nothing cached) gives identical images; another
    seed does not."""
    first, second, other = (_run(tmp_path / name, "shapes-c2i", "none", "shapes-fid", TINY_FID, seed=seed)
                            for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    dirs = [_sample_dirs(tmp_path / name, _record(result)) for name, result in
            (("a", first), ("b", second), ("c", other))]
    for a, b, c in zip(*dirs):
        images_a, images_b, images_c = _images(a), _images(b), _images(c)
        assert len(images_a) == 24 and images_a.keys() == images_b.keys() == images_c.keys()
        assert all(np.array_equal(images_a[k], images_b[k]) for k in images_a)
        assert not all(np.array_equal(images_a[k], images_c[k]) for k in images_a)
    for a, b in zip(first.rows, second.rows):  # the same images score the same (up to float reductions)
        assert math.isclose(a["fid"], b["fid"], rel_tol=1e-6)


def test_kid_on_the_device_equals_kid_on_the_cpu():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(300, 16)), rng.normal(size=(200, 16)) + 0.1
    on_cpu = kernel_inception_distance(real, fake, subsets=20, subset_size=100, seed=5)
    on_device = kernel_inception_distance(real, fake, subsets=20, subset_size=100, seed=5, device=DEVICE)
    assert on_device == pytest.approx(on_cpu, rel=1e-9)


def test_lab_tune_with_controls_on_cuda(tmp_path):
    """The whole fair protocol on the GPU: grid on validation, a test seed, the temperature
    control (teacher-forced entropy on held-out images) and the paired bootstrap on featnet features."""
    res = tmp_path / "res"
    args = ["lab", "tune", "-m", "shapes-c2i", "-t", "shapes-fid", "--methods", "sft,va-pi",
            "--lr-center", "0.001", "--lr-factors", "0.5,1,2", "--seeds", "0", "--tune-seed", "0",
            "--controls", "--control-n", "24", "--ci-reps", "20", "--batch-size", "64", "--device", DEVICE,
            "--set", "task.n=24", "--set", "task.reference_n=48", "--set", "method.steps=2",
            "--set", "method.batch_size=2", "--set", "method.micro_batch=1",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(res)]
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    assert info.value.code == 0
    stem = "lab-shapes-c2i-shapes-fid"
    validation = pd.read_csv(res / f"{stem}-validation.csv")
    assert sorted(validation.loc[validation["label"] == "sft", "lr"]) == [0.0005, 0.001, 0.002]
    assert validation["fid"].notna().all() and np.isfinite(validation["fid"]).all()
    seeds = pd.read_csv(res / f"{stem}-seeds.csv")
    assert {"none", "sft", "va-pi"} <= set(seeds["label"])
    assert np.isfinite(seeds["fid"]).all()
    trained = seeds[seeds["label"].isin(["sft", "va-pi"])]
    for column in ("entropy", "heldout_ce", "matched_temperature"):
        assert np.isfinite(trained[column].astype(float)).all(), column
    summary = pd.read_csv(res / f"{stem}.csv")
    vapi = summary[(summary["label"] == "va-pi") & (summary["variant"] == "no-cfg")]
    assert len(vapi) == 1 and np.isfinite(vapi[["delta_fid_vs_none", "delta_fid_vs_sft"]].to_numpy(float)).all()
