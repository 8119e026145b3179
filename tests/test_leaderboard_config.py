"""Leaderboard rows carry their configuration identity; summaries never average different
configurations and count distinct seeds (issue 14 item 3)."""
import pandas as pd

from vapi_bench import leaderboard as lb
from vapi_bench.runner import RunRequest, Runner


def _row(config, seed, fid, **extra):
    return {"model": "m", "method": "sft", "task": "t", "variant": "no-cfg", "fid": fid, "config": config,
            "seed": seed, **extra}


def test_different_configs_stay_apart_and_a_repeated_seed_counts_once(tmp_path):
    path = lb.leaderboard_path(tmp_path, "t")
    lb.append_rows(path, [_row("aaa", 0, 2.0, lr=1e-6, run_id="r1"), _row("bbb", 0, 3.0, lr=3e-5, run_id="r2")])
    lb.append_rows(path, [_row("aaa", 1, 4.0, lr=1e-6, run_id="r3"), _row("aaa", 1, 6.0, lr=1e-6, run_id="r4")])
    summary = lb.summarize(lb.load(tmp_path, "t")).set_index("config")
    assert summary.loc["aaa", "seeds"] == 2 and summary.loc["bbb", "seeds"] == 1
    assert summary.loc["aaa", "fid"] == f"{(2.0 + 6.0) / 2:.4g} ± {pd.Series([2.0, 6.0]).std():.2g}"  # latest of seed 1
    assert summary.loc["bbb", "fid"] == "3" and summary.loc["bbb", "lr"] == 3e-5
    assert any("repeat a seed" in n for n in summary.attrs["notes"])


def test_rows_written_before_config_still_load_grouped_by_what_they_have(tmp_path):
    old = pd.DataFrame([
        {"model": "m", "method": "sft", "task": "t", "variant": "no-cfg", "fid": 2.0, "cfg_scale": 1.0, "seed": 0},
        {"model": "m", "method": "sft", "task": "t", "variant": "no-cfg", "fid": 4.0, "cfg_scale": 1.0, "seed": 1},
        {"model": "m", "method": "sft", "task": "t", "variant": "cfg", "fid": 1.0, "cfg_scale": 2.0, "seed": 0},
    ])
    old.to_csv(lb.leaderboard_path(tmp_path, "t"), index=False)
    lb.append_rows(lb.leaderboard_path(tmp_path, "t"), [_row("ccc", 0, 9.0, cfg_scale=1.0)])
    summary = lb.summarize(lb.load(tmp_path, "t"))
    legacy = summary[summary["config"] == lb.UNRECORDED].set_index("variant")
    assert legacy.loc["no-cfg", "seeds"] == 2 and legacy.loc["no-cfg", "fid"].startswith("3 ±")
    assert legacy.loc["cfg", "seeds"] == 1
    assert summary[summary["config"] == "ccc"]["fid"].tolist() == ["9"]
    assert any("3 row(s) predate configuration identity" in n for n in summary.attrs["notes"])


def _rows(tmp_path, seed, **overrides):
    req = RunRequest(model="fixture-palette", method="fixture-sft", task="fixture-colour", seed=seed,
                     overrides=overrides, runs_dir=tmp_path / "runs", results_dir=tmp_path / "res", quiet=True)
    return Runner(req).run().rows


def test_runs_get_a_config_that_ignores_the_seed_only(tmp_path):
    (base,) = _rows(tmp_path, 0)
    (other_seed,) = _rows(tmp_path, 1)
    (other_lr,) = _rows(tmp_path, 0, lr="0.5")
    (other_sampling,) = _rows(tmp_path, 0, temperature="0.5")
    assert base["config"] == other_seed["config"]
    assert len({base["config"], other_lr["config"], other_sampling["config"]}) == 3
    assert other_lr["settings"] == "method.lr=0.5" and base["settings"] == ""
    summary = lb.summarize(lb.load(tmp_path / "res", "fixture-colour"))
    assert sorted(summary["seeds"]) == [1, 1, 2]
