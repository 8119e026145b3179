"""The price of a lab table: the recorded time of each distinct stage its rows used, counted once."""
import json

import pandas as pd
import pytest

from vapi_bench.lab.cost import cost_sentence, table_cost, write_cost


def _stage(runs, folder, name, key, record):
    (runs / folder / key).mkdir(parents=True)
    (runs / folder / key / name).write_text(json.dumps(record))


def _run(runs, run_id, finetune, variants):
    (runs / run_id).mkdir(parents=True)
    (runs / run_id / "run.json").write_text(json.dumps({"stage_keys": {"finetune": finetune, "variants": variants}}))


@pytest.fixture
def runs(tmp_path):
    runs = tmp_path / "runs"
    _stage(runs, "finetune", "finetune.json", "ft1", {"minutes": 2.0})
    _stage(runs, "finetune", "finetune.json", "ft2", {"minutes": 3.0})
    for key, seconds in (("s1", 30.0), ("s2", 60.0), ("s3", 90.0)):
        _stage(runs, "samples", "samples.json", key, {"seconds": seconds})
    for key, seconds in (("c1", 6.0), ("c2", 12.0), ("c3", 18.0)):
        _stage(runs, "scores", "score.json", key, {"seconds": seconds})
    _run(runs, "base0", "base-abc", [{"sample": "s1", "score": "c1"}])  # the base: no fine-tune stage
    _run(runs, "sft0", "ft1", [{"sample": "s2", "score": "c2"}])
    _run(runs, "sft0-again", "ft1", [{"sample": "s2", "score": "c2"}])  # a rerun served from the cache
    _run(runs, "sft1", "ft2", [{"sample": "s3", "score": "c3"}])
    return runs


def test_each_stage_is_priced_once_per_label_and_once_for_the_table(runs, tmp_path):
    validation = [{"label": "sft", "run_id": "sft0"}, {"label": "none", "run_id": "base0"}]
    test = [{"label": "sft", "run_id": "sft0-again"}, {"label": "sft", "run_id": "sft1"},
            {"label": "none", "run_id": "base0"}]
    rows = {(r["label"], r["phase"]): r for r in table_cost(runs, validation, test)}
    assert rows["sft", "validation"]["finetunes"] == 1 and rows["sft", "validation"]["minutes"] == pytest.approx(3.2)
    assert rows["sft", "test"]["runs"] == 2 and rows["sft", "test"]["finetunes"] == 2
    assert rows["sft", "test"]["minutes"] == pytest.approx((120 + 60 + 12 + 180 + 90 + 18) / 60)
    assert rows["none", "test"]["finetunes"] == 0 and rows["none", "test"]["minutes"] == pytest.approx(0.6)
    table = rows["table", "all"]  # sft0 and sft0-again share every stage: counted once
    assert (table["finetunes"], table["samples"], table["scores"]) == (2, 3, 3)
    assert table["minutes"] == pytest.approx((120 + 180 + 30 + 60 + 90 + 6 + 12 + 18) / 60)

    path = tmp_path / "cost.csv"
    total = write_cost(path, runs, validation, test)
    written = pd.read_csv(path)
    assert list(written.columns) == ["label", "phase", "runs", "finetunes", "finetune_minutes", "samples",
                                     "sample_minutes", "scores", "score_minutes", "minutes"]
    assert written.iloc[-1]["label"] == "table" and total["minutes"] == pytest.approx(table["minutes"])
    assert cost_sentence(total).startswith("2 fine-tunes, 3 sample sets and 3 scores: 9 min")


def test_rows_without_a_run_record_cost_nothing(runs):
    rows = table_cost(runs, [], [{"label": "scripted", "run_id": "never-run"}])
    assert rows[-1]["runs"] == 1 and rows[-1]["minutes"] == 0


def test_lab_cost_prices_a_committed_table_and_names_a_missing_run(runs, tmp_path):
    from vapi_bench.cli import main

    results = tmp_path / "results"
    results.mkdir()
    pd.DataFrame({"label": ["sft", "none"], "run_id": ["sft1", "base0"], "fid": [1.0, 2.0]}).to_csv(
        results / "lab-m-t-seeds.csv", index=False)
    with pytest.raises(SystemExit) as info:
        main(["lab", "cost", "--results-dir", str(results), "--runs-dir", str(runs)])
        raise SystemExit(0)
    assert info.value.code == 0
    table = pd.read_csv(results / "lab-m-t-cost.csv").set_index("label").loc["table"]
    assert table["finetunes"] == 1 and table["minutes"] == pytest.approx((180 + 90 + 18 + 30 + 6) / 60)

    pd.DataFrame({"label": ["sft"], "run_id": ["elsewhere"]}).to_csv(results / "lab-m-t-seeds.csv", index=False)
    with pytest.raises(SystemExit) as info:
        main(["lab", "cost", "--results-dir", str(results), "--runs-dir", str(runs)])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["lab", "cost", "--results-dir", str(tmp_path / "empty"), "--runs-dir", str(runs)])
    assert info.value.code == 2
