"""The fair lab: the lr rule, the tune protocol, the paired bootstrap CI and the temperature control."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from vapi_bench.cli import main
from vapi_bench.errors import UsageError
from vapi_bench.metrics import frechet_distance, gaussian_stats
from vapi_bench.plugins.shapes.zoo.config import FULL
from vapi_bench.plugins.shapes.zoo.train import lr_at
from vapi_bench.lab import temperature
from vapi_bench.lab.protocol import choose, lr_grid, parse_lab_method
from vapi_bench.lab.significance import fid_statistic, mean_statistic, paired_bootstrap
from vapi_bench.lab.temperature import (PolicyStats, TemperatureCurve, cached_policy_stats, entropy_at,
                                        matching_temperature)
from vapi_bench.plugins.shapes.families import family_defaults

FAMILY_RECIPES = family_defaults()


# ---- the lr rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family,optim", [("shapes-c2i", FULL.c2i_optim), ("shapes-t2i", FULL.t2i_optim),
                                          ("shapes-c2i-small", FULL.c2i_small_optim)])
def test_shapes_lr_is_the_final_pretraining_lr_over_100(family, optim):
    """LlamaGen: pre-train 1e-4, VA-pi 1e-6. The zoo's schedule ends at its floor, so the shapes
    lr is that floor / 100 (3e-6 for the shipped zoo), not the peak / 100 (6e-5)."""
    ended_at = lr_at(optim.steps, optim)
    assert math.isclose(ended_at, optim.lr * optim.min_lr_ratio)
    assert math.isclose(FAMILY_RECIPES[family]["lr"], ended_at / 100, rel_tol=1e-6)
    assert math.isclose(FAMILY_RECIPES["shapes-c2i"]["lr"], 3e-6)


@pytest.mark.parametrize("method", ["sft", "va-pi", "post-train-tokenizer", "ste", "ar-grpo", "cca"])
def test_every_method_grid_is_centred_on_its_own_recipe_lr(method):
    """On the shapes world every method's recipe follows one rule (3e-6 for shapes-c2i); on LlamaGen
    the peers keep their own lr (AR-GRPO and CCA 1e-5, VA-pi 1e-6), each read from its own table."""
    from types import SimpleNamespace

    from vapi_bench.lab.tune import recipe_lr

    shapes = SimpleNamespace(name="shapes-c2i", family="shapes-c2i", conditioning="class")
    small = SimpleNamespace(name="shapes-c2i-small", family="shapes-c2i-small", conditioning="class")
    llamagen = SimpleNamespace(name="llamagen-xxl", family="llamagen", conditioning="class")
    assert math.isclose(recipe_lr(shapes, method), 3e-6)
    assert math.isclose(recipe_lr(small, method), FAMILY_RECIPES["shapes-c2i-small"]["lr"])
    if method in ("ar-grpo", "cca"):
        assert math.isclose(recipe_lr(llamagen, method), 1e-5)
    elif method == "va-pi":
        assert math.isclose(recipe_lr(llamagen, method), 1e-6)


def test_a_model_without_a_recipe_lr_asks_for_lr_center():
    from types import SimpleNamespace

    from vapi_bench.lab.tune import recipe_lr

    with pytest.raises(UsageError, match="--lr-center"):
        recipe_lr(SimpleNamespace(name="mine", family="unknown-family", conditioning="class"), "ar-grpo")


# ---- the tune protocol ----------------------------------------------------------------------------


def test_lr_grid_and_choice():
    assert lr_grid(3e-6, [1 / 3, 1, 3]) == [1e-6, 3e-6, 9e-6]
    with pytest.raises(UsageError, match="at least three"):
        lr_grid(3e-6, [1, 3])
    assert choose({1e-6: 0.4, 3e-6: 0.3, 9e-6: float("nan")}, "min") == 3e-6
    assert choose({1e-6: 0.4, 3e-6: 0.4, 9e-6: 0.5}, "min") == 1e-6  # tie -> the smaller lr
    assert choose({1e-6: 0.4, 3e-6: 0.3}, "max") == 1e-6
    assert parse_lab_method("va-pi:reward-only").overrides == {"method.beta": "0"}
    with pytest.raises(UsageError, match="variants"):
        parse_lab_method("sft:reward-only")


def _stage_keys(runs_dir, run_ids):
    keys = set()
    for run_id in set(run_ids):
        record = json.loads((runs_dir / run_id / "run.json").read_text())
        keys |= {v["sample"] for v in record["stage_keys"]["variants"]}
    return keys


def test_tune_tries_every_setting_on_tune_seeds_and_reports_on_disjoint_test_seeds(tmp_path):
    """Through the CLI on the fixture plugin: every grid point and every base temperature is tried
    on the tune seeds (validation setting, per_class=3 -> 24 samples); the choices run on the test
    seeds (16 samples); no sample set scored for a choice is a test row; the tuned-T base gets
    exactly a method's number of tries."""
    runs, res = tmp_path / "runs", tmp_path / "res"
    with pytest.raises(SystemExit) as info:
        main(["lab", "tune", "-m", "fixture-palette", "-t", "fixture-colour", "--methods", "fixture-sft",
              "--lr-center", "1.0", "--lr-factors", "0.01,0.1,1", "--seeds", "0,1", "--tune-seeds", "100",
              "--temperatures", "1.0,0.9,0.8", "--select-metric", "accuracy", "--select-variant", "no-cfg",
              "--select-mode", "max", "--validate", "task.per_class=3", "--no-controls",
              "--runs-dir", str(runs), "--results-dir", str(res)])
        raise SystemExit(0)
    assert info.value.code == 0
    every = pd.read_csv(res / "lab-fixture-palette-fixture-colour-validation.csv")
    assert set(every["n_samples"]) == {24} and set(every["seed"]) == {100}
    method, tuned_t = every[every["label"] == "fixture-sft"], every[every["label"] == "tuned-T"]
    assert len(method) >= 3 and len(tuned_t) == len(method)  # the same tries, grown grid included
    best = method.sort_values(["accuracy", "lr"], ascending=[False, True]).iloc[0]["lr"]
    assert method.loc[method["chosen"].astype(str) == "True", "lr"].tolist() == [best]
    board = pd.read_csv(res / "leaderboard-fixture-colour.csv")
    tested = board[board["label"] == "fixture-sft"]
    assert sorted(tested["seed"]) == [0, 1] and set(tested["lr"]) == {best} and set(tested["n_samples"]) == {16}
    assert sorted(board.loc[board["label"] == "tuned-T", "seed"]) == [0, 1]
    assert set(board["seed"]) == {0, 1}  # only test rows reach the leaderboard
    assert not _stage_keys(runs, every["run_id"]) & _stage_keys(runs, board["run_id"])
    summary = pd.read_csv(res / "lab-fixture-palette-fixture-colour.csv")
    assert set(summary["label"]) == {"none", "tuned-T", "fixture-sft"}
    assert summary["multiplicity"].iloc[0].startswith("holm over ")
    trained = {json.loads((runs / r / "run.json").read_text())["stage_keys"]["finetune"]
               for r in set(every["run_id"]) | set(board["run_id"])} - {None}
    cost = pd.read_csv(res / "lab-fixture-palette-fixture-colour-cost.csv").set_index("label")
    assert cost.loc["table", "finetunes"] == len({k for k in trained if not k.startswith("base-")}) > 0


def test_tune_and_test_seeds_must_not_overlap(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["lab", "tune", "-m", "fixture-palette", "-t", "fixture-colour", "--methods", "fixture-sft",
              "--seeds", "0,1,2", "--tune-seeds", "2,1000", "--select-metric", "accuracy", "--select-mode", "max",
              "--validate", "task.per_class=3", "--runs-dir", str(tmp_path / "runs")])
    assert info.value.code == 2
    assert not (tmp_path / "runs").exists()


class _FakeRuns:
    """A stand-in for the runner: a score that depends on the method, its settings and the seed, so
    the protocol's bookkeeping can be checked exactly without training anything."""

    def __init__(self, best_lr, best_temperature=0.9, decay_shift=10):
        self.calls, self.best_lr, self.best_t, self.decay_shift = [], best_lr, best_temperature, decay_shift

    def __call__(self, model, method, task, seed, overrides, **common):
        self.calls.append((method, seed, dict(overrides)))
        lr = float(overrides.get("method.lr", "nan"))
        t = float(overrides.get("sampling.temperature", 1.0))
        decay = overrides.get("method.weight_decay") is not None
        if method == "none":
            score = 0.5 - abs(t - self.best_t) + 0.01 * (seed % 3)
        else:
            target = self.best_lr * (self.decay_shift if decay else 1)
            score = 0.9 - abs(math.log10(lr / target)) * 0.1 + 0.02 * (seed % 3) + (0.05 if decay else 0.0)
        run_id = f"{method}-{seed}-{lr:g}-{t:g}-{int(decay)}"
        return [{"model": model, "method": method, "task": task, "variant": "no-cfg", "seed": seed,
                 "accuracy": score, "run_id": run_id}]


def _setup(tmp_path, methods, **kw):
    from vapi_bench.lab.tune import TuneSetup

    args = dict(model="fixture-palette", task="fixture-colour", methods=methods, lr_factors=[0.1, 1, 10],
                lr_center=1.0, tune_seeds=[100, 101], seeds=[0, 1, 2, 3, 4], select_metric="accuracy",
                select_variant="no-cfg", select_mode="max", validate={"task.per_class": "3"}, overrides={},
                controls=False, control_n=8, ci_reps=10, runs_dir=tmp_path / "runs", results_dir=tmp_path / "res",
                device="cpu", batch_size=16, matched_lr_to="fixture-sft")
    return TuneSetup(**{**args, **kw})


def test_an_edge_choice_grows_every_grid_and_the_base_keeps_the_same_tries(tmp_path):
    from vapi_bench.lab.tune import run_tune

    runs = _FakeRuns(best_lr=100.0)  # beyond the grid's top: the choice lands on the high edge
    run_tune(_setup(tmp_path, ["fixture-sft", "fixture-sft:decay"]), runs)
    validation = pd.read_csv(tmp_path / "res" / "lab-fixture-palette-fixture-colour-validation.csv")
    for label in ("fixture-sft", "fixture-sft:decay"):
        assert sorted(set(validation.loc[validation["label"] == label, "lr"])) == [0.1, 1.0, 10.0, 100.0]
    tries = validation.groupby("label").size()
    assert tries["fixture-sft"] == tries["fixture-sft:decay"] == tries["tuned-T"] == 4 * 2  # 4 tries x 2 tune seeds
    for _, seed, overrides in runs.calls:  # a validation try on a tune seed, a test run on a test seed
        assert (seed in (100, 101)) == (overrides.get("task.per_class") == "3")


def test_matched_lr_rows_and_holm_over_the_table(tmp_path):
    from vapi_bench.lab.tune import run_tune

    runs = _FakeRuns(best_lr=1.0)
    run_tune(_setup(tmp_path, ["fixture-sft", "fixture-sft:decay"]), runs)
    summary = pd.read_csv(tmp_path / "res" / "lab-fixture-palette-fixture-colour.csv")
    labels = set(summary["label"])
    assert "fixture-sft:decay@lr=1" in labels  # the variant chose 10, so it also ran at fixture-sft's lr
    matched = summary[summary["label"] == "fixture-sft:decay@lr=1"].iloc[0]
    assert set(summary.columns) >= {"delta_accuracy_vs_matched", "delta_accuracy_vs_matched_t_low",
                                    "delta_accuracy_vs_matched_p_holm", "mde_accuracy_vs_matched"}
    expected = 0.05 - 0.1  # the decay bonus minus one decade away from its own best lr
    assert matched["delta_accuracy_vs_matched"] == pytest.approx(expected)
    p_columns = [c for c in summary.columns if c.endswith("_p")]
    family = summary[p_columns].notna().sum().sum()
    assert summary["multiplicity"].iloc[0] == f"holm over {family} comparisons"
    for column in p_columns:
        adjusted = summary[f"{column}_holm"]
        assert (adjusted.dropna() >= summary[column].dropna() - 1e-12).all()


def test_a_method_that_chose_the_matched_lr_is_compared_in_its_own_row(tmp_path):
    """Table 4's rows usually choose VA-π's lr: no extra runs, and their own row carries Δ vs VA-π
    (one test: the reference's row does not repeat it)."""
    from vapi_bench.lab.tune import run_tune

    runs = _FakeRuns(best_lr=1.0, decay_shift=1)
    run_tune(_setup(tmp_path, ["fixture-sft", "fixture-sft:decay"]), runs)
    summary = pd.read_csv(tmp_path / "res" / "lab-fixture-palette-fixture-colour.csv").set_index("label")
    assert not [label for label in summary.index if "@lr=" in label]
    assert summary.loc["fixture-sft:decay", "delta_accuracy_vs_matched"] == pytest.approx(0.05)
    assert pd.isna(summary.loc["fixture-sft", "delta_accuracy_vs_matched"])
    assert not any(o.get("method.weight_decay") and s in (0, 1, 2, 3, 4) and o.get("method.lr") != "1"
                   for m, s, o in runs.calls)  # no test run at another lr


def test_a_budget_in_images_sets_each_methods_steps(tmp_path):
    from vapi_bench.lab.tune import run_tune

    runs = _FakeRuns(best_lr=1.0)
    run_tune(_setup(tmp_path, ["fixture-sft"], budget_images=40, matched_lr_to=None), runs)
    steps = {o.get("method.steps") for m, s, o in runs.calls if m == "fixture-sft"}
    assert steps == {"5"}  # 40 images / the fixture recipe's 8 per step


# ---- the paired bootstrap -------------------------------------------------------------------------


def test_paired_bootstrap_of_a_mean_matches_the_normal_theory_interval():
    """Known answer: A = B + 0.3 + noise (sd 1), 2 seeds x 2000 pairs: the interval is centred
    on 0.3 with half-width ~1.96 sd / sqrt(n) (seeds add almost nothing: same distribution)."""
    rng = np.random.default_rng(1)
    b = [rng.normal(size=2000) for _ in range(2)]
    a = [x + 0.3 + rng.normal(size=2000) for x in b]
    out = paired_bootstrap(mean_statistic, a, b, reps=400, seed=0)
    expected = np.mean([np.mean(x - y) for x, y in zip(a, b)])
    half = 1.96 / math.sqrt(4000)
    assert math.isclose(out.delta, expected)
    assert out.ci_low < 0.3 < out.ci_high and out.real
    assert abs((out.ci_high - out.ci_low) / 2 - half) < 0.3 * half
    same = paired_bootstrap(mean_statistic, b, [x + rng.normal(scale=0.01, size=2000) for x in b], reps=200)
    assert same.ci_low < 0 < same.ci_high and not same.real


def test_fid_statistic_equals_frechet_distance_and_knows_a_mean_shift():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(4000, 6))
    mu, sigma = gaussian_stats(ref)
    feats = rng.normal(size=(3000, 6)) * 1.3 + 0.5
    assert math.isclose(fid_statistic(mu, sigma)(feats), frechet_distance(*gaussian_stats(feats), mu, sigma),
                        rel_tol=1e-6)
    shifted = [rng.normal(size=(3000, 6)) + np.array([0.4, 0, 0, 0, 0, 0]) for _ in range(2)]
    plain = [rng.normal(size=(3000, 6)) for _ in range(2)]
    delta = paired_bootstrap(fid_statistic(np.zeros(6), np.eye(6)), shifted, plain, reps=200)
    assert delta.ci_low < 0.16 < delta.ci_high and delta.real  # ||0.4 e1||^2 = 0.16


def test_seed_level_interval_on_a_hand_computed_example():
    """Δ per seed 0.1, 0.3, 0.2, 0.4, 0.0: mean 0.2, s = √0.025, se = s/√5 = 0.0707107; t(0.975, 4)
    = 2.776445 -> [0.003676, 0.396324]; t = 2.828427 -> p = 0.04742; MDE (80% power) = (2.776445 +
    0.940965) · se = 0.262861."""
    from vapi_bench.lab.significance import seed_level_interval

    out = seed_level_interval([0.1, 0.3, 0.2, 0.4, 0.0])
    assert out.delta == pytest.approx(0.2)
    assert (out.t_low, out.t_high) == (pytest.approx(0.0036757, abs=1e-6), pytest.approx(0.3963243, abs=1e-6))
    assert out.p == pytest.approx(0.047421, abs=1e-5) and out.mde == pytest.approx(0.262861, abs=1e-5)
    with pytest.raises(UsageError, match="at least 2 seeds"):
        seed_level_interval([0.1])


def test_holm_on_a_hand_example():
    """p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06,
    0.04·1 = 0.04 -> monotone 0.06; back in input order."""
    from vapi_bench.lab.significance import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5·2 caps at 1; monotone after it


def test_paired_bootstrap_rejects_unpaired_input():
    with pytest.raises(UsageError, match="pair"):
        paired_bootstrap(mean_statistic, [np.zeros(3)], [np.zeros(4)])


# ---- the temperature control ----------------------------------------------------------------------


def test_matching_temperature_recovers_the_temperature_of_an_entropy():
    torch.manual_seed(0)
    logits = torch.randn(50, 8, 32) * 2
    for t in (0.7, 0.97, 1.3):
        assert abs(matching_temperature(logits, entropy_at(logits, t)) - t) < 1e-3
    with pytest.raises(UsageError, match="outside"):
        matching_temperature(logits, math.log(32) + 1)


def test_a_temperature_curve_matches_many_entropies_exactly_as_one_bisection_each(monkeypatch):
    """A lab table matches every run against one base: the shared curve must give each target the
    very temperature a fresh bisection gives, while evaluating far fewer entropies."""
    torch.manual_seed(1)
    logits = torch.randn(40, 8, 32) * 2
    targets = [entropy_at(logits, t) for t in (0.97, 0.98, 0.99, 1.0, 1.01, 1.05)]
    fresh = [matching_temperature(logits, h) for h in targets]
    calls = []
    real = temperature.entropy_at
    monkeypatch.setattr(temperature, "entropy_at", lambda z, t=1.0: calls.append(t) or real(z, t))
    curve = TemperatureCurve(logits)
    assert [curve.temperature_for(h) for h in targets] == fresh
    assert curve.entropy(1.0) == entropy_at(logits)
    per_bisection = 2 + math.ceil(math.log2((5.0 - 0.05) / 1e-4))
    assert len(calls) < 0.6 * per_bisection * len(targets)


def test_policy_stats_are_computed_once_per_stage_and_held_out_set(tmp_path):
    """A lab table rebuilt from cached stages reads each policy's entropy from its finetune stage
    instead of teacher-forcing it again; another held-out set computes its own."""
    calls = []

    def compute(value: float):
        def run() -> PolicyStats:
            calls.append(value)
            return PolicyStats(heldout_ce=value, entropy=value / 2)
        return run

    first = cached_policy_stats(tmp_path, "aaaa", compute(1.25))
    again = cached_policy_stats(tmp_path, "aaaa", compute(9.0))
    other = cached_policy_stats(tmp_path, "bbbb", compute(3.0))
    assert first == again == PolicyStats(heldout_ce=1.25, entropy=0.625)
    assert other == PolicyStats(heldout_ce=3.0, entropy=1.5)
    assert calls == [1.25, 3.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy-stats-aaaa.json", "policy-stats-bbbb.json"]


def test_temperature_sweep_writes_one_row_per_temperature_and_seed(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["lab", "temperature", "-m", "fixture-palette", "-t", "fixture-colour", "--temperatures", "1.0,0.5",
              "--seeds", "0", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res")])
        raise SystemExit(0)
    assert info.value.code == 0
    rows = pd.read_csv(tmp_path / "res" / "temperature-fixture-palette-fixture-colour.csv")
    assert sorted(rows["sweep_temperature"]) == [0.5, 1.0] and sorted(rows["temperature"]) == [0.5, 1.0]


def test_lab_precision_option_reaches_every_run(tmp_path):
    """`--precision` is what each lab run resolves and records (on CUDA, auto would be bf16)."""
    with pytest.raises(SystemExit) as info:
        main(["lab", "temperature", "-m", "fixture-palette", "-t", "fixture-colour", "--temperatures", "1.0,0.5",
              "--precision", "bf16", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res")])
        raise SystemExit(0)
    assert info.value.code == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/run.json")]
    assert len(records) == 2 and {r["precision"]["resolved"] for r in records} == {"bf16"}


@pytest.mark.parametrize("control_is_base", [True, False])
def test_a_control_with_the_bases_own_samples_is_not_a_comparison(tmp_path, control_is_base):
    """A method whose entropy did not move gets its control at T = 1: the base's very samples. Its
    Δ vs the control repeats Δ vs the base and the control's Δ vs the base is 0 by construction, so
    neither joins the Holm family; a control with samples of its own is compared as usual."""
    from types import SimpleNamespace

    from vapi_bench.lab.summary import write_summary

    runs, rows = tmp_path / "runs", []
    for label, shift in (("none", 0.0), ("cca", -0.1), ("T-control:cca", 0.0)):
        for seed in range(3):
            run_id = f"{label.replace(':', '-')}-{seed}"
            sample = f"s-none-{seed}" if label == "T-control:cca" and control_is_base else f"s-{run_id}"
            (runs / run_id).mkdir(parents=True)
            (runs / run_id / "run.json").write_text(json.dumps(
                {"results": [{"variant": "no-cfg"}], "stage_keys": {"variants": [{"sample": sample, "score": "c"}]}}))
            rows.append({"label": label, "variant": "no-cfg", "seed": seed, "run_id": run_id, "lr": "", "lr_grid": "",
                         "fid": 1.0 + shift + 0.01 * seed * (label == "cca") + (0 if control_is_base else 0.02)
                         * (label == "T-control:cca")})
    setup = SimpleNamespace(results_dir=tmp_path / "res", model="m", task="t", runs_dir=runs, ci_reps=10,
                            select_metric="fid")
    write_summary(setup, None, [], rows, {})
    summary = pd.read_csv(tmp_path / "res" / "lab-m-t.csv").set_index("label")
    assert summary.loc["cca", "delta_fid_vs_none"] == pytest.approx(-0.09)
    if control_is_base:
        assert "delta_fid_vs_control" not in summary or pd.isna(summary.loc["cca", "delta_fid_vs_control"])
        assert summary["multiplicity"].iloc[0] == "holm over 1 comparisons"
    else:
        assert summary.loc["cca", "delta_fid_vs_control"] == pytest.approx(-0.11)
        assert summary["multiplicity"].iloc[0] == "holm over 3 comparisons"
