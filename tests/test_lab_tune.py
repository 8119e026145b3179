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


def test_tune_gives_every_grid_point_one_try_on_validation_then_seeds_on_test(tmp_path):
    """Three grid points on the tune seed, scored on the validation setting (per_class=3 -> 24
    samples); the best one runs on both test seeds (per_class=2 -> 16 samples); leaderboard rows
    carry the chosen lr and the grid."""
    with pytest.raises(SystemExit) as info:
        main(["lab", "tune", "-m", "fixture-palette", "-t", "fixture-colour", "--methods", "fixture-sft",
              "--lr-center", "1.0", "--lr-factors", "0.01,0.1,1", "--seeds", "0,1", "--tune-seed", "0",
              "--select-metric", "accuracy", "--select-variant", "no-cfg", "--select-mode", "max",
              "--validate", "task.per_class=3", "--no-controls",
              "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res")])
        raise SystemExit(0)
    assert info.value.code == 0
    res = tmp_path / "res"
    every = pd.read_csv(res / "lab-fixture-palette-fixture-colour-validation.csv")
    assert set(every["n_samples"]) == {24} and set(every["seed"]) == {0}
    assert every["label"].tolist().count("none") == 1  # the base, scored on validation too
    validation = every[every["label"] == "fixture-sft"]
    assert sorted(validation["lr"]) == [0.01, 0.1, 1.0]
    best = validation.sort_values(["accuracy", "lr"], ascending=[False, True]).iloc[0]["lr"]
    assert validation.loc[validation["chosen"].astype(str) == "True", "lr"].tolist() == [best]
    board = pd.read_csv(res / "leaderboard-fixture-colour.csv")
    tuned = board[board["label"] == "fixture-sft"]
    assert sorted(tuned["seed"]) == [0, 1] and set(tuned["lr"]) == {best} and set(tuned["n_samples"]) == {16}
    assert set(tuned["lr_grid"]) == {"0.01 0.1 1"}
    assert sorted(board.loc[board["label"] == "none", "seed"]) == [0, 1]
    summary = pd.read_csv(res / "lab-fixture-palette-fixture-colour.csv")
    assert set(summary["label"]) == {"none", "fixture-sft"}


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
