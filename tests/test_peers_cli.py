"""`ar-grpo` and `cca` end to end through the CLI on the shapes world (tiny budgets: mechanics only)."""
import json

import pandas as pd
import pytest

from vapi_bench.cli import main


def _main(*args):
    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    return info.value.code


def test_ar_grpo_on_shapes_c2i_and_cca_on_shapes_t2i(tmp_path):
    dirs = ("--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"))
    assert _main("run", "-m", "shapes-c2i", "-a", "ar-grpo", "-t", "shapes-fid", "--set", "method.steps=1",
                 "--set", "method.batch_size=2", "--set", "method.group_size=2", "--set", "task.n=24",
                 "--set", "task.reference_n=48", "--set", "task.cfg=without", *dirs) == 0
    assert _main("run", "-m", "shapes-t2i", "-a", "cca", "-t", "shapes-geneval", "--set", "method.steps=1",
                 "--set", "method.batch_size=2", "--set", "task.tags=single_object", "--set", "task.images_per_prompt=1",
                 "--set", "cfg_scale=1", "--limit", "4", *dirs) == 0
    fid = pd.read_csv(tmp_path / "res" / "leaderboard-shapes-fid.csv")
    geneval = pd.read_csv(tmp_path / "res" / "leaderboard-shapes-geneval.csv")
    assert (fid["method"].tolist(), fid["variant"].tolist()) == (["ar-grpo"], ["no-cfg"])
    assert (geneval["method"].tolist(), geneval["variant"].tolist()) == (["cca"], ["no-cfg"])
    logs = {json.loads(p.with_name("finetune.json").read_text())["params"]["recipe"]:
            [json.loads(line) for line in p.read_text().splitlines()]
            for p in (tmp_path / "runs" / "finetune").glob("*/train.jsonl")}
    assert set(logs) == {"shapes-c2i", "shapes-t2i"}
    assert "reward_shapes-class-prob" in logs["shapes-c2i"][0] and "margin" in logs["shapes-t2i"][0]
