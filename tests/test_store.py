"""Atomic writes survive a killed writer; concurrent leaderboard appends never lose a row."""
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from vapi_bench import store
from vapi_bench.leaderboard import append_rows, load, render, summarize


def test_atomic_write_killed_half_way_keeps_old_file(tmp_path):
    target = tmp_path / "data.json"
    store.atomic_write_json(target, {"version": 1})
    script = textwrap.dedent(f"""
        import os, signal
        from vapi_bench.store import atomic_write
        def writer(tmp):
            with open(tmp, "w") as fh:
                fh.write('{{"version": 2, "trunc')
                fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(target)!r}, writer)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"version": 1}


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    store.append_jsonl(path, {"i": 1})
    with open(path, "a") as fh:
        fh.write('{"i": 2, "tor')
    assert list(store.read_jsonl(path)) == [{"i": 1}]


def _append_many(path: str, worker: int, rows: int) -> None:
    for i in range(rows):
        append_rows(path, [{"model": f"m{worker}", "method": "none", "task": "t", "variant": "no-cfg",
                            "fid": float(worker * 100 + i), "run_id": f"{worker}-{i}"}])


def test_concurrent_appends_from_8_processes(tmp_path):
    path = str(tmp_path / "leaderboard-t.csv")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, w, 5)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = pd.read_csv(path)
    assert len(df) == 40
    assert sorted(df["run_id"]) == sorted(f"{w}-{i}" for w in range(8) for i in range(5))


def test_union_of_columns_keeps_old_rows(tmp_path):
    path = tmp_path / "leaderboard-t.csv"
    append_rows(path, [{"model": "a", "method": "none", "task": "t", "fid": 1.0, "seed": 0}])
    append_rows(path, [{"model": "a", "method": "none", "task": "t", "fid": 3.0, "is": 5.0, "seed": 1}])
    df = load(tmp_path, "t")
    assert list(df["fid"]) == [1.0, 3.0] and pd.isna(df["is"][0])
    summary = summarize(df)
    assert summary["fid"][0].startswith("2 ±") and summary["seeds"][0] == 2
    assert render(summary, "md").startswith("| model | method | task |")
    assert json.loads(render(df, "json"))[1]["is"] == 5.0


def test_atomic_write_leaves_no_temp_files(tmp_path):
    store.atomic_write_text(tmp_path / "a.txt", "x")
    assert os.listdir(tmp_path) == ["a.txt"]


def test_same_run_and_variant_replaces_its_row(tmp_path):
    path = tmp_path / "leaderboard-t.csv"
    append_rows(path, [{"model": "a", "variant": "cfg", "fid": 1.0, "run_id": "r1"},
                       {"model": "a", "variant": "no-cfg", "fid": 2.0, "run_id": "r1"}])
    append_rows(path, [{"model": "a", "variant": "cfg", "fid": 1.5, "run_id": "r1"}])
    df = load(tmp_path, "t")
    assert sorted(zip(df["variant"], df["fid"])) == [("cfg", 1.5), ("no-cfg", 2.0)]


def test_one_run_may_stand_in_rows_that_other_identity_columns_tell_apart(tmp_path):
    """An ablation table keeps the shared base-model run once per ablation, and still refreshes it."""
    path = tmp_path / "ablations-t.csv"
    identity = ("ablation", "setting", "run_id", "variant")
    base = {"setting": "base model", "run_id": "r0", "variant": "cfg"}
    append_rows(path, [{**base, "ablation": "reward", "fid": 2.0}], identity=identity)
    append_rows(path, [{**base, "ablation": "beta", "fid": 2.0}], identity=identity)
    append_rows(path, [{**base, "ablation": "beta", "fid": 2.5}], identity=identity)
    df = pd.read_csv(path)
    assert sorted(zip(df["ablation"], df["fid"])) == [("beta", 2.5), ("reward", 2.0)]


def test_write_csv_writes_header_and_rows_and_refuses_nothing(tmp_path):
    from vapi_bench.store import write_csv

    path = write_csv(tmp_path / "t.csv", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert path.read_text().splitlines() == ["a,b", "1,x", "2,y"]
    with pytest.raises(ValueError, match="no rows"):
        write_csv(tmp_path / "empty.csv", [])
    assert not (tmp_path / "empty.csv").exists()
