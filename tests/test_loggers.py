"""`--set logger=tensorboard`: event files mirror train.jsonl (scalars per step, a sample grid every N
steps), read back with TensorBoard's own EventAccumulator; logging changes neither the run's
identity nor its training."""
from __future__ import annotations

import importlib.util
import json

import pytest

from vapi_bench import store
from vapi_bench.errors import UsageError
from vapi_bench.runner import RunRequest, Runner

pytest.importorskip("tensorboard", reason="pip install 'vapi-bench[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SFT = {"steps": "3", "batch_size": "4", "micro_batch": "4"}


def _finetune(tmp_path, name, **overrides):
    req = RunRequest(model="shapes-c2i", method="sft", task=None, overrides={**SFT, **overrides},
                     runs_dir=tmp_path / name, results_dir=tmp_path / "results", quiet=True, stages=("finetune",))
    result = Runner(req).run()
    spec_key = json.loads((result.run_dir / "run.json").read_text())["stage_keys"]["finetune"]
    return result, tmp_path / name / "finetune" / spec_key


def test_tensorboard_mirrors_train_jsonl_and_logs_sample_grids(tmp_path):
    plain, plain_dir = _finetune(tmp_path, "plain")
    logged, ft_dir = _finetune(tmp_path, "tb", logger="tensorboard", log_images_every="2")
    assert logged.run_id == plain.run_id  # the logger is not part of the run's identity
    records = list(store.read_jsonl(ft_dir / "train.jsonl"))
    timing = {"images_per_s", "step_seconds"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in records] == [
        {k: v for k, v in r.items() if k not in timing} for r in store.read_jsonl(plain_dir / "train.jsonl")
    ]  # the preview grids do not perturb training
    events = EventAccumulator(str(ft_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {f"train/{k}" for k in records[0] if k != "step"} <= set(tags["scalars"])
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    images = events.Images("samples")
    assert [e.step for e in images] == [0, 2, 3]  # before training, every 2 steps, the last step
    assert images[0].width == 8 * 32 and images[0].height == 32  # 8 preview samples of 32 px in one row
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "method = sft" in config and "method_params.steps = 3" in config


def test_a_short_run_logs_its_config_as_hparams_and_before_after_grids(tmp_path):
    """The default every-50 preview on a 3-step run: step 0 and the last step, and the hparams."""
    _, ft_dir = _finetune(tmp_path, "short", logger="tensorboard")
    events = EventAccumulator(str(ft_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert [e.step for e in events.Images("samples")] == [0, 3]
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert session.hparams["method"].string_value == "sft" and session.hparams["seed"].number_value == 0


def test_unknown_logger_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="logger"):
        _finetune(tmp_path, "bad", logger="mlflow")


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="pip install 'vapi-bench[wandb]'")
def test_wandb_offline_run_next_to_train_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    _, ft_dir = _finetune(tmp_path, "wandb", logger="wandb", log_images_every="1")
    (run,) = (ft_dir / "wandb").glob("offline-run-*")
    assert (run / f"run-{run.name.rsplit('-', 1)[1]}.wandb").stat().st_size > 0
    grids = sorted(p.name.split("_")[1] for p in (run / "files" / "media" / "images").glob("samples_*.png"))
    assert grids == ["0", "1", "2", "3"]  # before training, then a preview grid at every step
    assert len(list(store.read_jsonl(ft_dir / "train.jsonl"))) == 3


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_without_the_extra_names_the_install(tmp_path):
    with pytest.raises(UsageError, match=r"vapi-bench\[wandb\]"):
        _finetune(tmp_path, "wandb", logger="wandb")
