"""The docs/plugins.md walk-through end to end: the third-party GRU plugin (tests/gru_plugin,
installed by scripts/setup.sh) runs none, sft and va-pi on shapes-fid in ONE `vapi-bench run`
with per-method options, using its declared family defaults for everything not set."""
import json

import pytest

from vapi_bench import leaderboard as lb
from vapi_bench.cli import main

TINY_TASK = ["--set", "task.n=8", "--set", "task.reference_n=16", "--set", "task.cfg=without",
             "--set", "task.kid_subset_size=4", "--set", "task.split_size=4"]


def test_one_run_with_three_methods_and_per_method_options(tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "res"
    with pytest.raises(SystemExit) as info:
        main(["run", "-m", "tiny-gru", "-a", "none", "-a", "sft", "-a", "va-pi", "-t", "shapes-fid", *TINY_TASK,
              "--set", "model.hidden=16", "--set", "steps=1", "--set", "method.batch_size=4",
              "--set", "method.micro_batch=4", "--set", "sft.lr=0.01", "--set", "va-pi.group_size=2",
              "--runs-dir", str(runs), "--results-dir", str(results)])
        raise SystemExit(0)
    assert info.value.code == 0, capsys.readouterr().err
    board = lb.load(results, "shapes-fid")
    assert sorted(board["method"]) == ["none", "sft", "va-pi"] and board["config"].nunique() == 3
    trained = [json.loads(p.read_text())["params"] for p in runs.glob("finetune/*/finetune.json")]
    sft, vapi = sorted(trained, key=lambda p: "group_size" in p)
    assert (sft["lr"], sft["steps"], sft["batch_size"]) == (0.01, 1, 4)
    assert (vapi["lr"], vapi["group_size"], vapi["steps"]) == (3e-3, 2, 1)  # lr: the tiny-gru family default
    assert vapi["perceptual"] == "shapes-perceptual" and vapi["recipe"] == "tiny-gru"
