"""Issue 11: every interruption, bad value and OS failure ends cleanly, --force forces.

In-process through `vapi_bench.cli.main`, on the third-party fixture plugin and a test-only plugin
(tests/reliability_plugin.py) that fine-tunes the fixture's palette generator on the shared
training engine, so each test takes a second or two.
"""
import errno
import hashlib
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vapi_bench.registry as registry_module
from vapi_bench import store
from vapi_bench.errors import CheckpointError
from vapi_bench.registry import build_registry

sys.path.insert(0, str(Path(__file__).parent))
import reliability_plugin  # noqa: E402

ENGINE = ["-m", "rel-palette", "-a", "rel-engine", "-t", "fixture-colour"]
FIXTURE = ["-m", "fixture-palette", "-a", "fixture-sft", "-t", "fixture-colour"]


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY",
                        build_registry(extra_plugins=[("reliability", reliability_plugin)]))


def _finetune_dir(tmp_path) -> Path:
    (ft,) = (tmp_path / "runs" / "finetune").iterdir()
    return ft


def _steps(ft: Path) -> list[int]:
    return [r["step"] for r in store.read_jsonl(ft / "train.jsonl")]


def _lines(text: str) -> list[str]:
    """The message: every line from the first `error:` / `interrupted:` on (progress bars come before)."""
    lines = [line for line in text.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.startswith(("error:", "interrupted:"))), 0)
    return lines[first:]


# ---- 1. --force ---------------------------------------------------------------------------------
def test_force_finetunes_again_from_scratch(cli, tmp_path):
    assert cli("finetune", "-m", "rel-palette", "-a", "rel-engine")[0] == 0
    ft = _finetune_dir(tmp_path)
    first = load_file(str(ft / "weights" / "policy.safetensors"))
    code, _ = cli("finetune", "-m", "rel-palette", "-a", "rel-engine", "--force")
    assert code == 0
    summary = json.loads((ft / "finetune.json").read_text())
    assert summary["resumed_from"] == 0 and summary["steps"] == 4
    assert _steps(ft) == [1, 2, 3, 4]  # rewritten, not deleted and left empty
    again = load_file(str(ft / "weights" / "policy.safetensors"))
    assert all(torch.equal(first[k], again[k]) for k in first)  # same seed, from scratch: same weights


def test_score_force_rescores_cached_samples(cli, tmp_path):
    assert cli("run", *FIXTURE)[0] == 0
    (marker,) = (tmp_path / "runs" / "scores").glob("*/score.json")
    before = json.loads(marker.read_text())
    time.sleep(0.01)
    code, text = cli("score", *FIXTURE, "--force")
    assert code == 0, text
    after = json.loads(marker.read_text())
    assert after["seconds"] != before["seconds"] and after["metrics"] == before["metrics"]


# ---- 3. Ctrl-C ----------------------------------------------------------------------------------
def test_ctrl_c_while_sampling_exits_130_saying_what_was_kept(cli, tmp_path, monkeypatch):
    import vapi_bench.runner as runner

    real = runner.sample_to_dir

    def interrupted(generator, task, items, *args, **kw):
        real(generator, task, items[:5], *args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "sample_to_dir", interrupted)
    code, text = cli("run", *FIXTURE)
    assert code == 130, text
    (line,) = _lines(text)
    assert "5 of 16 images are kept in" in line and "run the same command again" in line
    monkeypatch.setattr(runner, "sample_to_dir", real)
    assert cli("run", *FIXTURE)[0] == 0


def test_ctrl_c_while_finetuning_exits_130_and_resumes(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(reliability_plugin.INTERRUPT_ENV, "3")
    code, text = cli("run", *ENGINE)
    assert code == 130
    (line,) = _lines(text)
    assert "Interrupted while fine-tuning" in line and "resume" in line
    assert cli("run", *ENGINE)[0] == 0
    summary = json.loads((_finetune_dir(tmp_path) / "finetune.json").read_text())
    assert summary["resumed_from"] == 2


def test_ctrl_c_before_any_stage_exits_130(cli, monkeypatch):
    import vapi_bench.runner as runner

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.Runner, "_resolve", interrupted)
    code, text = cli("run", *FIXTURE)
    assert code == 130 and "interrupted" in text and "Traceback" not in text


# ---- 4. divergence --------------------------------------------------------------------------------
def _checkpoints_finite(work: Path) -> bool:
    for path in work.glob("train_state.pt*"):
        state = torch.load(path, weights_only=True)
        if not all(torch.isfinite(t).all() for t in state["modules"]["policy"].values()):
            return False
    return True


def test_exploding_weights_stop_with_diverged_not_a_traceback(cli, tmp_path):
    # lr 1e20 without clipping: finite weights of ~1e20 after step 1, NaN logits at step 2
    args = ["finetune", "-m", "rel-palette", "-a", "rel-engine", "--set", "lr=1e20", "--set", "max_grad_norm=0",
            "--set", "ckpt_every=1"]
    code, text = cli(*args)
    assert code == 1 and "diverged" in text and "Traceback" not in text
    assert "step 2" in text and "logits" in text
    assert _checkpoints_finite(_finetune_dir(tmp_path) / "work")
    code, text = cli(*args)  # resuming from the kept checkpoint says so again instead of crashing
    assert code == 1 and "diverged" in text and "Traceback" not in text


def test_non_finite_weights_are_never_checkpointed(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(reliability_plugin.OVERFLOW_ENV, "1")
    code, text = cli("finetune", "-m", "rel-palette", "-a", "rel-engine", "--set", "ckpt_every=1")
    assert code == 1 and "diverged at step 2" in text and "updated weights" in text
    work = _finetune_dir(tmp_path) / "work"
    assert _checkpoints_finite(work)
    assert torch.load(work / "train_state.pt", weights_only=True)["next_step"] == 1


def test_nan_checkpoint_is_a_bad_checkpoint(cli, tmp_path):
    policy = reliability_plugin.TwoLayerPolicy(8, 8, 16)
    state = {k: torch.full_like(v, math.nan) for k, v in policy.state_dict().items()}
    save_file(state, str(tmp_path / "nan.safetensors"))
    code, text = cli("run", "-m", "rel-palette", "-a", "none", "-t", "fixture-colour",
                     "--checkpoint", str(tmp_path / "nan.safetensors"))
    assert code == 1 and "Bad checkpoint" in text and "Traceback" not in text
    assert not (tmp_path / "runs" / "samples").exists()


def test_nan_logits_while_sampling_say_bad_checkpoint(tmp_path):
    from vapi_bench.sampling import sample_to_dir
    from vapi_bench_fixture_plugin import ColourMatchTask

    gen = reliability_plugin.RelPalette(None, torch.device("cpu"))
    with torch.no_grad():
        gen.policy.out.weight.fill_(math.inf)
    task = ColourMatchTask(1)
    with pytest.raises(CheckpointError, match="Bad checkpoint"):
        sample_to_dir(gen, task, task.items(gen), reliability_plugin.SamplingRecipe(), 0, tmp_path)


# ---- 5. OS and parse failures after the compute ------------------------------------------------
def test_unwritable_results_dir_names_it_and_keeps_the_rows(cli, tmp_path, monkeypatch):
    import vapi_bench.leaderboard as lb

    def refuse(path, text):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(lb, "atomic_write_text", refuse)
    code, text = cli("run", *FIXTURE)
    assert code == 1 and "Traceback" not in text
    (line,) = _lines(text)
    assert str(tmp_path / "res" / "leaderboard-fixture-colour.csv") in line and "writable" in line
    (record,) = (tmp_path / "runs").glob("*/run.json")
    assert str(record) in line and json.loads(record.read_text())["results"][0]["accuracy"] >= 0


def test_disk_full_while_sampling_is_one_sentence(cli, tmp_path, monkeypatch):
    from PIL import Image

    real_save = Image.Image.save

    def full(self, fp, *args, **kw):  # the disk fills up while sampling; the error names no file
        if isinstance(fp, (str, Path)) and "samples" in Path(fp).parts:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kw)

    monkeypatch.setattr(Image.Image, "save", full)
    code, text = cli("run", *FIXTURE)
    assert code == 1 and "Traceback" not in text
    (line,) = _lines(text)
    assert "No space left on device" in line and "disk space" in line and str(tmp_path / "runs") in line
    assert (tmp_path / "runs" / "finetune").exists()  # the finished fine-tune is kept
    monkeypatch.undo()
    registry_module._REGISTRY = build_registry(extra_plugins=[("reliability", reliability_plugin)])
    code, text = cli("run", *FIXTURE)
    assert code == 0 and "finetune: reusing" in text


def test_malformed_leaderboard_names_the_file(cli, tmp_path):
    board = tmp_path / "res" / "leaderboard-fixture-colour.csv"
    board.parent.mkdir()
    board.write_text('model,method\n"unclosed,quote\nx,y,z,w\n')
    code, text = cli("run", *FIXTURE)
    assert code == 1 and str(board) in text and "Traceback" not in text
    assert json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())["results"]
    code, text = cli("leaderboard", "-t", "fixture-colour")
    assert code == 1 and str(board) in text


# ---- 6. ranges are checked before anything is cached -------------------------------------------
@pytest.mark.parametrize("bad", [["--set", "cfg_scale=-1"], ["--set", "temperature=0"], ["--set", "top_p=2"],
                                 ["--set", "top_k=-3"], ["--limit", "-1"], ["--batch-size", "0"]])
def test_out_of_range_values_exit_2_before_caching(cli, tmp_path, bad):
    code, text = cli("run", *FIXTURE, *bad)
    assert code == 2 and ("must be" in text) and "Traceback" not in text
    assert not (tmp_path / "runs" / "finetune").exists() and not (tmp_path / "runs" / "samples").exists()


# ---- 7. broken images ----------------------------------------------------------------------------
def test_truncated_image_is_regenerated(cli, tmp_path):
    assert cli("run", *FIXTURE)[0] == 0
    (sdir,) = (tmp_path / "runs" / "samples").iterdir()
    image = sdir / "images" / "000003.png"
    original = image.read_bytes()
    image.write_bytes(original[: len(original) // 2])
    for scores in (tmp_path / "runs" / "scores").iterdir():  # a new evaluator version: scored again
        (scores / "score.json").unlink()
    code, text = cli("run", *FIXTURE)
    assert code == 0 and "regenerating 1 unreadable image" in text
    assert image.read_bytes() == original


def test_truncated_image_is_redrawn_when_resuming(tmp_path):
    from vapi_bench.sampling import sample_to_dir
    from vapi_bench_fixture_plugin import ColourMatchTask

    gen = reliability_plugin.RelPalette(None, torch.device("cpu"))
    task = ColourMatchTask(1)
    items = task.items(gen)
    sample_to_dir(gen, task, items, reliability_plugin.SamplingRecipe(), 0, tmp_path)
    path = task.image_path(tmp_path, items[2])
    original = path.read_bytes()
    path.write_bytes(original[:20])
    assert sample_to_dir(gen, task, items, reliability_plugin.SamplingRecipe(), 0, tmp_path) == 1
    assert path.read_bytes() == original


# ---- 8. one record per step after a resume; stale temporary files --------------------------------
def test_resume_replaces_replayed_steps_and_cleans_stale_temps(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(reliability_plugin.INTERRUPT_ENV, "3")
    assert cli("run", *ENGINE)[0] == 130
    ft = _finetune_dir(tmp_path)
    assert _steps(ft) == [1, 2, 3]
    stale = ft / "work" / ".train_state.pt.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert cli("run", *ENGINE)[0] == 0
    assert _steps(ft) == [1, 2, 3, 4]
    assert not stale.exists()


# ---- 9. two identical runs started together ---------------------------------------------------
def test_two_identical_runs_do_the_work_once(tmp_path, monkeypatch):
    from vapi_bench_fixture_plugin import NudgeMethod

    from vapi_bench.runner import RunRequest, Runner

    real = NudgeMethod.finetune

    def slow(self, generator, dataset, ctx):
        time.sleep(0.5)
        return real(self, generator, dataset, ctx)

    monkeypatch.setattr(NudgeMethod, "finetune", slow)
    req = dict(model="fixture-palette", method="fixture-sft", task="fixture-colour", runs_dir=tmp_path / "runs",
               results_dir=tmp_path / "res", quiet=True)
    runners = [Runner(RunRequest(**req)), Runner(RunRequest(**req))]
    results = [None, None]

    def go(i):
        results[i] = runners[i].run()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(60)
    assert sorted(r.reused["finetune"] for r in results) == [False, True]
    assert any("waiting" in line for r in runners for line in r.log_lines)
    assert _steps(_finetune_dir(tmp_path)) == [1, 2, 3, 4]


# ---- 10. the umask --------------------------------------------------------------------------------
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = store.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


# ---- 11. unknown task on the leaderboard ------------------------------------------------------------
def test_leaderboard_unknown_task_suggests(cli, tmp_path):
    code, text = cli("leaderboard", "-t", "fixture-colr")
    assert code == 2 and "Did you mean fixture-colour" in text


# ---- the default results folder and precision ---------------------------------------------------------
def test_own_runs_go_to_the_runs_folder_not_the_evidence(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("run", *FIXTURE, dirs=False)[0] == 0
    assert (tmp_path / "runs" / "results" / "leaderboard-fixture-colour.csv").exists()
    assert not (tmp_path / "results").exists()
    code, text = cli("leaderboard", "-t", "fixture-colour", "-f", "csv", dirs=False)
    assert code == 0 and "fixture-palette" in text


def test_precision_auto_follows_the_hardware(monkeypatch):
    import vapi_bench.precision as precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", cpu) == ("fp32", None)
    resolved, warning = precision.resolve_precision("bf16", cpu)
    assert resolved == "bf16" and "slower" in warning
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", cpu) == ("bf16", None)


def test_run_json_records_the_resolved_precision(cli, tmp_path):
    assert cli("run", *FIXTURE)[0] == 0
    record = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
    assert record["precision"]["requested"] == "auto"
    assert record["precision"]["resolved"] == record["spec"]["precision"] in ("fp32", "bf16")


# ---- the bad-input matrix -------------------------------------------------------------------------
def _digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "locks" not in p.parts}


BAD_INPUTS = [
    # (arguments, exit code, one-line message expected, a phrase of it)
    (["run", *FIXTURE, "--set", "cfg_scale=-1"], 2, True, "cfg_scale must be >= 0"),
    (["run", *FIXTURE, "--set", "temperature=0"], 2, True, "temperature must be > 0"),
    (["run", *FIXTURE, "--set", "temperature=-0.5"], 2, True, "temperature must be > 0"),
    (["run", *FIXTURE, "--set", "temperature=nan"], 2, True, "temperature must be > 0"),
    (["run", *FIXTURE, "--set", "top_p=2"], 2, True, "top_p must be in (0, 1]"),
    (["run", *FIXTURE, "--set", "top_p=0"], 2, True, "top_p must be in (0, 1]"),
    (["run", *FIXTURE, "--set", "top_k=-3"], 2, True, "top_k must be >= 0"),
    (["run", *FIXTURE, "--set", "top_k=1.5"], 2, True, "not a valid int"),
    (["run", *FIXTURE, "--set", "cfg_interval=abc"], 2, True, "not a valid int"),
    (["run", *FIXTURE, "--limit", "-1"], 2, True, "--limit must be at least 1"),
    (["run", *FIXTURE, "--limit", "0"], 2, True, "--limit must be at least 1"),
    (["run", *FIXTURE, "--batch-size", "0"], 2, True, "--batch-size must be at least 1"),
    (["run", *FIXTURE, "--batch-size", "-4"], 2, True, "--batch-size must be at least 1"),
    (["run", *FIXTURE, "--set", "steps=many"], 2, False, "not a valid int"),
    (["run", *FIXTURE, "--set", "steps"], 2, True, "--set expects key=value"),
    (["run", "-m", "fixture-palete", "-a", "fixture-sft", "-t", "fixture-colour"], 2, True, "Did you mean"),
    (["run", "-m", "fixture-palette", "-a", "fixture-stf", "-t", "fixture-colour"], 2, True, "Did you mean"),
    (["run", "-m", "fixture-palette", "-a", "fixture-sft", "-t", "fixture-color"], 2, True, "Did you mean"),
    (["run", *FIXTURE, "--precision", "fp16"], 2, True, "--precision must be one of"),
    (["run", *FIXTURE, "--device", "tpu0"], 2, True, "--device must be"),
    (["run", *FIXTURE, "--device", "cuda:7"], 2, True, "CUDA is not available"),
    (["run", *FIXTURE, "--seed", "abc"], 2, False, "Invalid value"),
    (["run", *FIXTURE, "--no-such-option"], 2, False, "No such option"),
    (["score", *FIXTURE, "--set", "temperature=0.5"], 2, True, "run `vapi-bench sample` first"),
    (["sample", "-m", "fixture-palette", "-a", "fixture-sft", "-t", "fixture-colour", "--set", "lr=0.5"], 2, True,
     "run `vapi-bench finetune` first"),
    (["leaderboard", "-t", "fixture-colr"], 2, True, "Did you mean fixture-colour"),
    (["leaderboard", "-f", "xml"], 2, True, "--format must be"),
    (["list", "widgets"], 2, True, "Unknown kind"),
    (["prepare"], 2, True, "Name at least one of"),
]


def test_bad_input_matrix(cli, capsys, tmp_path):
    assert len(BAD_INPUTS) + 3 >= 25
    assert cli("run", *FIXTURE)[0] == 0
    kept = _digest_tree(tmp_path / "runs")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    nan = tmp_path / "nan.safetensors"
    save_file({k: torch.full_like(v, math.nan) for k, v in reliability_plugin.TwoLayerPolicy(8, 8, 16).state_dict().items()},
              str(nan))
    cases = [(args, code, one, phrase, True) for args, code, one, phrase in BAD_INPUTS]
    cases += [
        (["run", *FIXTURE, "--runs-dir", str(a_file)], 2, True, "is a file, not a folder", False),
        (["run", *FIXTURE, "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(a_file)], 2, True,
         "is a file, not a folder", False),
        (["run", "-m", "rel-palette", "-a", "none", "-t", "fixture-colour", "--checkpoint", str(nan),
          "--runs-dir", str(tmp_path / "runs")], 1, True, "Bad checkpoint", False),
    ]
    for args, expected, one_line, phrase, with_dirs in cases:
        code, text = cli(*args, dirs=with_dirs)
        assert code == expected, (args, text)
        assert "Traceback" not in text, (args, text)
        assert phrase in text, (args, text)
        if one_line:
            assert len(_lines(text)) == 1, (args, text)
        assert _digest_tree(tmp_path / "runs") == kept, args  # nothing already computed was lost or changed
