"""CLI behaviour a user sees: exit codes, messages without tracebacks, --debug, listings, formats."""
import pytest

from vapi_bench.cli import main


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return info.value.code, captured.out + captured.err


def test_unknown_model_exits_2_with_suggestion_and_no_traceback(capsys):
    code, text = _cli(capsys, "run", "-m", "fixture-palete", "-a", "fixture-sft", "-t", "fixture-colour")
    assert code == 2
    assert "Did you mean: fixture-palette" in text
    assert "Traceback" not in text


def test_unknown_set_key_lists_valid_keys(capsys, tmp_path):
    code, text = _cli(capsys, "run", "-m", "fixture-palette", "-a", "fixture-sft", "-t", "fixture-colour",
                      "--set", "step=3", "--runs-dir", str(tmp_path))
    assert code == 2
    assert "Unknown --set key 'step'" in text and "steps (int, default: the recipe's)" in text


def test_bad_value_exits_2(capsys, tmp_path):
    code, text = _cli(capsys, "run", "-m", "fixture-palette", "-a", "fixture-sft", "-t", "fixture-colour",
                      "--set", "steps=many", "--runs-dir", str(tmp_path))
    assert code == 2 and "steps='many' is not a valid int" in text


def test_debug_shows_the_traceback():
    from vapi_bench.errors import UsageError

    with pytest.raises(UsageError):
        main(["--debug", "run", "-m", "nope", "-a", "fixture-sft", "-t", "fixture-colour"])


def test_bad_option_is_a_click_usage_error(capsys):
    code, text = _cli(capsys, "run", "--no-such-option")
    assert code == 2 and "No such option" in text


def test_list_shows_plugins(capsys):
    code, text = _cli(capsys, "list", "models")
    assert code == 0 and "fixture-palette" in text and "fixture" in text


def test_run_then_leaderboard_formats(capsys, tmp_path):
    args = ["run", "-m", "fixture-palette", "-a", "fixture-sft", "-t", "fixture-colour", "--runs-dir",
            str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"), "--seed", "0", "--seed", "1"]
    code, text = _cli(capsys, *args)
    assert code == 0 and "accuracy" in text
    code, text = _cli(capsys, "leaderboard", "-t", "fixture-colour", "-f", "csv", "--results-dir", str(tmp_path / "res"))
    assert code == 0 and len(text.strip().splitlines()) == 3
    code, text = _cli(capsys, "leaderboard", "-t", "fixture-colour", "-f", "md", "--results-dir", str(tmp_path / "res"))
    assert code == 0 and "| fixture-palette | fixture-sft |" in text and "±" in text
    code, text = _cli(capsys, "leaderboard", "-f", "xml", "--results-dir", str(tmp_path / "res"))
    assert code == 2


def test_sample_stage_requires_finetune_first(capsys, tmp_path):
    code, text = _cli(capsys, "sample", "-m", "fixture-palette", "-a", "fixture-sft", "-t", "fixture-colour",
                      "--runs-dir", str(tmp_path))
    assert code == 2 and "vapi-bench finetune" in text


def test_doctor_runs(capsys):
    code, text = _cli(capsys, "doctor")
    assert code == 0 and "torch" in text and "optional pieces" in text
