"""The fair lab on the t2i shapes world: shapes-geneval's val split, task-declared selection, the
per-prompt paired bootstrap, and `lab tune -m shapes-t2i -t shapes-geneval` end to end."""
import json

import numpy as np
import pandas as pd
import pytest

from vapi_bench.cli import main
from vapi_bench.errors import DataError, UsageError
from vapi_bench.params import keyed_params, resolve_params
from vapi_bench.lab.protocol import resolve_selection
from vapi_bench.lab.significance import group_mean_statistic, mean_statistic, paired_bootstrap
from vapi_bench.lab.tune import load_task_of
from vapi_bench.tasks.geneval.prompts import TAGS
from vapi_bench.tasks.geneval.rules import summarize
from vapi_bench.tasks.shapes.geneval_task import GENEVAL_PARAMS, ShapesGenEvalTask, scene_key, shapes_metadata


# ---- the val split --------------------------------------------------------------------------------


def _record(tag, include, exclude=()):
    return {"tag": tag, "include": list(include), "exclude": list(exclude), "prompt": ""}


def test_scene_key_ignores_word_order_and_mirrored_relations():
    cross, circle, square = ({"class": c, "count": 1} for c in ("cross", "circle", "square"))
    assert scene_key(_record("two_object", [cross, circle])) == scene_key(_record("two_object", [circle, cross]))
    # "a circle right of a square" (include: anchor square, circle right of it) = "a square left of a circle"
    right = _record("position", [square, {**circle, "position": ["right of", 0]}])
    left = _record("position", [circle, {**square, "position": ["left of", 0]}])
    above = _record("position", [circle, {**square, "position": ["above", 0]}])
    assert scene_key(right) == scene_key(left) != scene_key(above)
    red = _record("colors", [{**cross, "color": "red"}])
    assert scene_key(red) != scene_key(_record("colors", [{**cross, "color": "blue"}]))


@pytest.mark.parametrize("settings", [{}, {"prompts_per_tag": 2}, {"prompts_per_tag": 5, "tags": "counting,colors"}])
def test_val_prompts_are_disjoint_from_test_prompts(settings):
    test, val = ShapesGenEvalTask(**settings), ShapesGenEvalTask(split="val", **settings)
    assert val.metadata
    assert not {r["prompt"] for r in test.metadata} & {r["prompt"] for r in val.metadata}
    assert not {scene_key(r) for r in test.metadata} & {scene_key(r) for r in val.metadata}


def test_default_val_split_is_colour_binding_only():
    """The shapes vocabulary's other scenes are all asked for by the default test draw."""
    val = ShapesGenEvalTask(split="val")
    assert {r["tag"] for r in val.metadata} == {"color_attr"} and len(val.metadata) == 56


def test_test_split_is_todays_prompts_and_keeps_its_run_keys():
    assert ShapesGenEvalTask(split="test").metadata == ShapesGenEvalTask().metadata == shapes_metadata(seed=43, n=100)
    resolved = resolve_params(GENEVAL_PARAMS, {}, "shapes-geneval")
    # the recorded parameters (spec, stage keys, leaderboard identity) of a test run: those before `split` existed
    assert keyed_params(GENEVAL_PARAMS, resolved) == {"tags": "", "images_per_prompt": 4, "prompts_per_tag": 100,
                                                      "prompt_seed": 43, "position_threshold": 0.1}
    val = resolve_params(GENEVAL_PARAMS, {"split": "val"}, "shapes-geneval")
    assert keyed_params(GENEVAL_PARAMS, val)["split"] == "val"


def test_bad_or_empty_split_is_a_clear_error():
    with pytest.raises(UsageError, match="split='train' must be one of"):
        resolve_params(GENEVAL_PARAMS, {"split": "train"}, "task 'shapes-geneval'")
    with pytest.raises(UsageError, match="split must be one of"):
        ShapesGenEvalTask(split="train")
    with pytest.raises(UsageError, match="val split of tags \\['single_object'\\] is empty"):
        ShapesGenEvalTask(split="val", tags="single_object")


# ---- selection declared by the task ---------------------------------------------------------------


def test_selection_defaults_come_from_the_task_and_options_win():
    fid = resolve_selection(load_task_of("shapes-fid", {}), "shapes-fid", None, None, None, None)
    assert (fid.validate, fid.metric, fid.mode, fid.variant) == (
        {"task.reference_split": "val", "task.cfg": "without"}, "fid", "min", "no-cfg")
    geneval = resolve_selection(load_task_of("shapes-geneval", {}), "shapes-geneval", None, None, None, None)
    assert (geneval.validate, geneval.metric, geneval.mode, geneval.variant) == (
        {"task.split": "val"}, "overall", "max", None)
    mine = resolve_selection(load_task_of("shapes-geneval", {}), "shapes-geneval", {"task.split": "val",
                             "task.images_per_prompt": "8"}, "correct_images", None, "cfg")
    assert (mine.validate["task.images_per_prompt"], mine.metric, mine.mode, mine.variant) == (
        "8", "correct_images", "max", "cfg")
    with pytest.raises(UsageError, match="declares no validation setting"):
        resolve_selection(object(), "fixture-colour", None, "accuracy", "max", None)


# ---- per-prompt correctness and the stratified bootstrap ------------------------------------------


def _scored_records(task, rng):
    return [{"index": i, "prompt_index": p, "tag": record["tag"], "prompt": record["prompt"],
             "correct": bool(rng.random() < 0.4)}
            for i, (p, record) in enumerate((p, r) for p, r in enumerate(task.metadata)
                                            for _ in range(task.images_per_prompt))]


def test_prompt_accuracy_gives_geneval_overall_per_prompt():
    task = ShapesGenEvalTask(prompts_per_tag=5, images_per_prompt=3)
    records = _scored_records(task, np.random.default_rng(0))
    rows = task.prompt_accuracy(records)
    assert rows.shape == (len(task.metadata), 2)
    assert [TAGS[int(t)] for t in rows[:, 0]] == [r["tag"] for r in task.metadata]
    assert rows[0, 1] == np.mean([r["correct"] for r in records if r["prompt_index"] == 0])
    assert group_mean_statistic(rows) == pytest.approx(summarize(records)["overall"], abs=1e-12)
    with pytest.raises(DataError, match="expected"):
        task.prompt_accuracy(records[:-1])


def test_stratified_bootstrap_keeps_every_group_in_every_replicate():
    """Rows of a 1-prompt group and a 49-prompt group: resampled within groups, every replicate
    has both (the count of groups drawn minus 1 is exactly 1); resampled freely, some lose one."""
    groups = np.array([0] + [1] * 49)
    drawn_groups = [np.column_stack([groups, np.zeros(50)])]
    one_group = [np.zeros((50, 2))]

    def count_groups(values):
        return float(len(np.unique(values[:, 0])))

    stratified = paired_bootstrap(count_groups, drawn_groups, one_group, reps=200, strata=groups)
    assert (stratified.ci_low, stratified.ci_high) == (1.0, 1.0)
    free = paired_bootstrap(count_groups, drawn_groups, one_group, reps=200)
    assert free.ci_low == 0.0
    # without strata the draws are those of the unstratified bootstrap, unchanged
    a = [np.random.default_rng(3).normal(size=40)]
    assert paired_bootstrap(mean_statistic, a, [a[0] * 0], reps=50) == paired_bootstrap(
        mean_statistic, a, [a[0] * 0], reps=50, strata=None)
    with pytest.raises(UsageError, match="strata"):
        paired_bootstrap(count_groups, drawn_groups, one_group, strata=groups[:10])


# ---- lab tune on shapes-t2i / shapes-geneval, end to end ------------------------------------------


def _prompts_of(runs, run_id):
    record = json.loads((runs / run_id / "run.json").read_text())
    score = record["stage_keys"]["variants"][0]["score"]
    lines = (runs / "scores" / score / "per-sample.jsonl").read_text().splitlines()
    return record["spec"]["task_params"], {json.loads(line)["prompt"] for line in lines}


def test_lab_tune_on_shapes_t2i_geneval_chooses_on_val_prompts_and_reports_paired_cis(tmp_path, monkeypatch):
    """sft, a 3-point grid of 2-step runs on the val prompts (the task's defaults: split=val, highest
    overall, the one CFG row), the chosen lr on the test prompts, the temperature control from
    shapes-captions' held-out split, and delta_overall_* with bootstrap CIs."""
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
    runs, res = tmp_path / "runs", tmp_path / "res"
    tune_args = ["lab", "tune", "-m", "shapes-t2i", "-t", "shapes-geneval", "--methods", "sft", "--seeds", "0,1",
                 "--tune-seeds", "1000", "--control-curve", "0",
                 "--set", "task.tags=counting,colors", "--set", "task.prompts_per_tag=2",
                 "--set", "task.images_per_prompt=2", "--set", "method.steps=2", "--set", "method.batch_size=2",
                 "--set", "method.micro_batch=2", "--lr-center", "3e-3", "--control-n", "8", "--ci-reps", "20",
                 "--runs-dir", str(runs), "--results-dir", str(res)]
    with pytest.raises(SystemExit) as info:
        main(tune_args)
        raise SystemExit(0)
    assert info.value.code == 0
    validation = pd.read_csv(res / "lab-shapes-t2i-shapes-geneval-validation.csv")
    seeds = pd.read_csv(res / "lab-shapes-t2i-shapes-geneval-seeds.csv")
    assert set(validation["variant"]) == set(seeds["variant"]) == {"cfg"}
    tried = validation[validation["label"] == "sft"]
    initial = {0.000999, 0.003, 0.009}  # one more point beyond an edge the choice fell on
    assert initial <= set(tried["lr"]) and len(tried) in (3, 4, 5)
    assert (validation["label"] == "tuned-T").sum() == len(tried)  # the base's temperature: as many tries
    best = tried.sort_values(["overall", "lr"], ascending=[False, True]).iloc[0]["lr"]
    assert tried.loc[tried["chosen"].astype(str) == "True", "lr"].tolist() == [best]
    assert set(seeds.loc[seeds["label"] == "sft", "lr"]) == {best}
    assert set(seeds.loc[seeds["label"] == "sft", "tuned_on"]) == {"task.split=val"}

    val_params, val_prompts = _prompts_of(runs, validation["run_id"].iloc[0])
    test_params, test_prompts = _prompts_of(runs, seeds["run_id"].iloc[0])
    assert val_params["split"] == "val" and "split" not in test_params
    assert val_prompts and test_prompts and not val_prompts & test_prompts
    assert set(validation["n_samples"]) == {2 * len(ShapesGenEvalTask(**{
        "split": "val", "tags": "counting,colors", "prompts_per_tag": 2}).metadata)}

    summary = pd.read_csv(res / "lab-shapes-t2i-shapes-geneval.csv").set_index("label")
    assert {"none", "tuned-T", "sft", "T-control:sft"} == set(summary.index)
    # a tuned-T base that chose T = 1 samples the base's very images: no comparison of its own
    tuned_is_base = summary.loc["tuned-T", "sampling_temperature_mean"] == 1.0
    assert ("delta_overall_vs_tuned_t" not in summary or pd.isna(summary.loc["sft", "delta_overall_vs_tuned_t"])) \
        == tuned_is_base
    for name in ("none", "control") + (() if tuned_is_base else ("tuned_t",)):
        for low, high in (("_ci_low", "_ci_high"), ("_t_low", "_t_high")):
            assert summary.loc["sft", f"delta_overall_vs_{name}{low}"] <= summary.loc["sft", f"delta_overall_vs_{name}"] \
                <= summary.loc["sft", f"delta_overall_vs_{name}{high}"]
    assert summary.loc["sft", "delta_overall_vs_none"] == pytest.approx(
        summary.loc["sft", "overall_mean"] - summary.loc["none", "overall_mean"])
    assert summary.loc["sft", "entropy_mean"] > 0 and summary.loc["T-control:sft", "control_temperature_mean"] != 1.0

    # the intervals are kept by the score stages they read: a second `lab tune` over the same runs
    # (how parallel jobs are merged) reuses them and writes the same table
    kept = sorted((runs / "bootstrap").glob("*.json"))
    # sft vs none, tuned-T and its control; tuned-T and the control vs none (one file when the tuned-T
    # base and the control sample at the same temperature: the same score stages; only sft vs none, vs its
    # control and the control vs none when the tuned-T base is the base itself)
    assert len(kept) in ((3,) if tuned_is_base else (4, 5))
    first = (res / "lab-shapes-t2i-shapes-geneval.csv").read_text()
    for path in kept:  # a reused interval must come from the file, not a recomputation
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "ci_low": record["ci_low"] - 1.0}))
    with pytest.raises(SystemExit) as again:
        main(tune_args)
        raise SystemExit(0)
    assert again.value.code == 0
    second = pd.read_csv(res / "lab-shapes-t2i-shapes-geneval.csv").set_index("label")
    assert sorted((runs / "bootstrap").glob("*.json")) == kept
    assert second.loc["sft", "delta_overall_vs_none_ci_low"] == pytest.approx(
        summary.loc["sft", "delta_overall_vs_none_ci_low"] - 1.0)
    assert first != (res / "lab-shapes-t2i-shapes-geneval.csv").read_text()
