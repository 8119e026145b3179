"""`vapi-bench lab compare`: leaderboard rows per method x seed and the metric-vs-step curve."""
import pandas as pd
import pytest

from vapi_bench.cli import main
from vapi_bench.lab.commands import baseline_overrides
from vapi_bench.registry import get_registry


def test_compare_writes_rows_and_curve(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["lab", "compare", "-m", "fixture-palette", "-t", "fixture-colour", "--methods", "none,fixture-sft",
              "--seeds", "0,1", "--curve-steps", "1,2", "--curve-metric", "accuracy",
              "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res")])
        raise SystemExit(0)
    assert info.value.code == 0
    board = pd.read_csv(tmp_path / "res" / "leaderboard-fixture-colour.csv")
    assert sorted(zip(board["method"], board["seed"])) == [("fixture-sft", 0), ("fixture-sft", 1), ("none", 0), ("none", 1)]
    curve = pd.read_csv(tmp_path / "res" / "curve-fixture-colour.csv")
    # base model (step 0) + two intermediate budgets + the full 4-step run, for each seed
    assert sorted(curve["steps"].unique()) == [0, 1, 2, 4] and set(curve["method"]) == {"fixture-sft"}
    assert len(curve) == 8 and (tmp_path / "res" / "curve-fixture-colour.png").stat().st_size > 1000


def test_ablation_table_matches_the_paper_grid():
    """VA-π declares the paper's ablations on its registry entry; `lab ablate` reads them there."""
    ABLATIONS = get_registry().get("methods", "va-pi").ablations
    assert [label for label, _ in ABLATIONS["xi"]] == ["xi=0", "xi=0.25", "xi=0.5", "xi=0.75", "xi=0.95"]
    kl = dict(ABLATIONS["beta"])["KL beta=0.1"]
    assert kl == {"beta": "0", "use_kl": "true", "kl_coef": "0.1"}
    assert dict(ABLATIONS["reward"])["mse + perceptual"] == {"w_mse": "1", "w_perceptual": "1", "beta": "0"}


def test_ablation_base_row_is_scored_like_the_va_pi_rows():
    """The base-model row gets the task and model overrides (e.g. task.n=1000), not the method's."""
    overrides = {"task.n": "1000", "model.precision": "fp32", "method.lr": "1e-5", "lr": "1e-5"}
    assert baseline_overrides(overrides) == {"task.n": "1000", "model.precision": "fp32"}
