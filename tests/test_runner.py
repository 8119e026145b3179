"""Stage caching, selective recomputation, resume, determinism and the run record.

Uses the third-party fixture plugin (tests/fixture_plugin), installed like any user package.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vapi_bench.runner import RunRequest, Runner

BASE = dict(model="fixture-palette", method="fixture-sft", task="fixture-colour")


def _run(tmp_path, **kw):
    req = RunRequest(**{**BASE, "runs_dir": tmp_path / "runs", "results_dir": tmp_path / "results", "quiet": True, **kw})
    return Runner(req).run()


def _digests(run_dir: Path) -> dict[str, str]:
    record = json.loads((run_dir / "run.json").read_text())
    skey = record["stage_keys"]["variants"][0]["sample"]
    images = sorted((run_dir.parent / "samples" / skey / "images").glob("*.png"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in images}


def test_rerun_reuses_every_stage(tmp_path):
    first = _run(tmp_path)
    assert not any(first.reused.values())
    second = _run(tmp_path)
    assert all(second.reused.values()) and second.run_id == first.run_id
    assert second.rows[0]["accuracy"] == first.rows[0]["accuracy"]


def test_sampling_option_recomputes_sampling_not_finetuning(tmp_path):
    _run(tmp_path)
    changed = _run(tmp_path, overrides={"temperature": "0.5"})
    assert changed.reused["finetune"] is True
    assert changed.reused["sample[cfg=1]"] is False and changed.reused["score[cfg=1]"] is False


def test_method_option_recomputes_finetuning(tmp_path):
    _run(tmp_path)
    changed = _run(tmp_path, overrides={"steps": "2"})
    assert changed.reused["finetune"] is False


def test_force_recomputes_everything(tmp_path):
    _run(tmp_path)
    forced = _run(tmp_path, force=True)
    assert not any(forced.reused.values())


def test_samples_independent_of_batch_size_and_resume(tmp_path):
    a = _run(tmp_path / "a", batch_size=16)
    b = _run(tmp_path / "b", batch_size=3)
    assert _digests(a.run_dir) == _digests(b.run_dir)
    # resume: drop half of the images and the done marker; the rerun fills them in identically
    record = json.loads((a.run_dir / "run.json").read_text())
    sdir = a.run_dir.parent / "samples" / record["stage_keys"]["variants"][0]["sample"]
    for p in sorted((sdir / "images").glob("*.png"))[::2]:
        p.unlink()
    (sdir / "samples.json").unlink()
    (a.run_dir.parent / "scores").rename(tmp_path / "old-scores")
    c = _run(tmp_path / "a", batch_size=5)
    assert c.reused["sample[cfg=1]"] is False
    assert _digests(c.run_dir) == _digests(b.run_dir)


def test_run_record_and_leaderboard_row(tmp_path):
    result = _run(tmp_path, seed=3)
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["spec"]["seed"] == 3 and record["versions"]["torch"]
    assert {"finetune", "sample[cfg=1]", "score[cfg=1]"} <= set(record["wall_seconds"])
    csv = (tmp_path / "results" / "leaderboard-fixture-colour.csv").read_text().splitlines()
    assert csv[0].startswith("model,method,task,variant,accuracy,config,settings,lr,n_samples,cfg_scale")
    assert len(csv) == 2 and result.run_id in csv[1]
    per_sample = (tmp_path / "runs" / "scores").glob("*/per-sample.jsonl")
    rows = [json.loads(line) for line in next(per_sample).read_text().splitlines()]
    assert {"index", "seed", "condition", "image", "correct"} <= set(rows[0])


def test_run_id_is_stable_across_processes(tmp_path):
    code = (
        "from vapi_bench.runner import RunRequest, Runner;"
        "r = Runner(RunRequest(model='fixture-palette', method='fixture-sft', task='fixture-colour', quiet=True));"
        "print(r._resolve()[3].run_id())"
    )
    ids = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout.strip()
        for h in (1, 2)
    }
    assert len(ids) == 1 and len(next(iter(ids))) == 16


@pytest.mark.slow
def test_two_gloo_ranks_give_the_same_images_as_one(tmp_path):
    one = _run(tmp_path / "one")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
           "-m", "vapi_bench.cli", "run", "-m", "fixture-palette", "-a", "fixture-sft", "-t", "fixture-colour",
           "--runs-dir", str(tmp_path / "two" / "runs"), "--results-dir", str(tmp_path / "two" / "results")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two_dir = next(p for p in (tmp_path / "two" / "runs").iterdir() if (p / "run.json").exists())
    assert _digests(two_dir) == _digests(one.run_dir)
