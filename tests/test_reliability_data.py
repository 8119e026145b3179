"""Issue 23 (reliability and security, round 3): the data a run leaves behind stays true.

Leaderboard identity strings survive appends; a torn board line is named and never read as a row;
a fine-tune whose files are missing or damaged is recomputed, not silently half-used; a corrupt
done marker or reference-statistics cache is named and recomputed (not "interrupted"); a sample
folder emptied mid-run gets no done marker; `report --collect` swaps its bundle in only on success
and never reads outside the runs folder. In-process through `vapi_bench.cli.main`, on the
third-party fixture plugin, a two-file variant of it defined here, and the tiny shapes world.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from vapi_bench_fixture_plugin import PaletteGenerator

import vapi_bench.registry as registry_module
from vapi_bench import Entry, hookimpl
from vapi_bench import leaderboard as lb
from vapi_bench.errors import CheckpointError
from vapi_bench.registry import build_registry

FIXTURE = ["-m", "fixture-palette", "-a", "fixture-sft", "-t", "fixture-colour"]
TWO_FILES = ["-m", "data-two-files", "-a", "fixture-sft", "-t", "fixture-colour"]
SHAPES_FID = ["-m", "shapes-c2i", "-a", "none", "-t", "shapes-fid", "--set", "n=8", "--set", "reference_n=16"]
BOARD = "leaderboard-fixture-colour.csv"


# ---- a generator that writes two files, the second read only when present (as llamagen's vq) -----
class TwoFilePalette(PaletteGenerator):
    """The fixture palette generator whose fine-tuned state is a policy file and a decoder file."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(num_classes=8, pixels_per_token=2, device=device)
        self.name = "data-two-files"
        self.gain = torch.ones(1)

    def save_finetuned(self, directory: Path) -> list[Path]:
        paths = super().save_finetuned(directory)
        save_file({"gain": self.gain}, str(directory / "decoder.safetensors"))
        return [*paths, directory / "decoder.safetensors"]

    def load_finetuned(self, directory: Path) -> None:
        super().load_finetuned(directory)
        if (directory / "decoder.safetensors").is_file():  # absent: the base decoder, as llamagen's VQ
            self.gain = load_file(str(directory / "decoder.safetensors"))["gain"]


@hookimpl
def register_generators(register):
    register(Entry("data-two-files", factory=lambda checkpoint, device: TwoFilePalette(device),
                   summary="reliability tests: a fine-tune saved as two files", params=()))


@pytest.fixture(autouse=True)
def registry(monkeypatch, tmp_path):
    monkeypatch.setattr(registry_module, "_REGISTRY", build_registry(extra_plugins=[("data", sys.modules[__name__])]))
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))


def _message(text: str) -> list[str]:
    """The lines from the first `error:` / `interrupted:` on (progress and notes come before)."""
    lines = [line for line in text.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.startswith(("error:", "interrupted:"))), 0)
    return lines[first:]


def _one_line(text: str) -> str:
    """A message that must be one line (rich wraps nothing: soft_wrap), joined for matching."""
    (line,) = _message(text)
    return line


def _stage_dir(tmp_path: Path, stage: str) -> Path:
    (found,) = (tmp_path / "runs" / stage).iterdir()
    return found


# ---- 1. leaderboard identity strings ----------------------------------------------------------
def _row(config: str, run_id: str, **extra) -> dict:
    return {"model": "m", "method": "sft", "task": "t", "variant": "no-cfg", "fid": 2.5, "config": config,
            "n_samples": 16, "seed": 0, "run_id": run_id, **extra}


def test_identity_strings_and_integers_survive_appends(cli, tmp_path):
    path = lb.leaderboard_path(tmp_path / "res", "t")
    lb.append_rows(path, [_row("077362267027", "0012")])
    lb.append_rows(path, [_row("1234e5678901", "0034", n_samples=None)])  # a missing int next to ints
    lb.append_rows(path, [_row("aaaaaaaaaaaa", "0056")])
    lines = path.read_text().splitlines()
    assert ",077362267027," in lines[1] and ",1234e5678901," in lines[2]
    assert lines[1].endswith(",0012") and ",16," in lines[1] and ",16.0," not in path.read_text()
    df = lb.load(tmp_path / "res", "t")
    assert list(df["config"]) == ["077362267027", "1234e5678901", "aaaaaaaaaaaa"]
    assert list(df["run_id"]) == ["0012", "0034", "0056"]
    assert df["n_samples"].tolist()[0] == 16 and df["fid"].tolist() == [2.5, 2.5, 2.5]
    code, text = cli("leaderboard", "-t", "t", "-f", "csv")
    assert code == 0 and "077362267027" in text and "1234e5678901" in text and "0012" in text


def test_append_leaves_existing_lines_as_written(tmp_path):
    path = lb.leaderboard_path(tmp_path, "t")
    path.write_text("model,method,task,variant,fid,config,seed,run_id\n"
                    'm,sft,t,no-cfg,1.50,"0777",0,"007"\n')
    before = path.read_bytes()
    lb.append_rows(path, [_row("0888", "008")])  # new columns (n_samples): the header must grow
    grown = path.read_text().splitlines()
    assert grown[0].split(",")[:5] == ["model", "method", "task", "variant", "fid"] and "n_samples" in grown[0]
    old = dict(zip(grown[0].split(","), grown[1].split(",")))
    assert old["fid"] == "1.50" and old["config"] == "0777" and old["run_id"] == "007" and old["n_samples"] == ""
    path.write_bytes(before)
    lb.append_rows(path, [{k: v for k, v in _row("0888", "008").items() if k != "n_samples"}])
    assert path.read_bytes().startswith(before)  # appended, the old row untouched byte for byte


@pytest.mark.parametrize("tail, why", [("m,sft,t,no-cfg,3.5,ccc,1,r", "no newline"),
                                       ("m,sft,t,no-cfg,3.5,ccc\n", "fields")])
def test_torn_last_line_is_named_and_never_read(cli, tmp_path, tail, why):
    board = tmp_path / "res" / BOARD
    board.parent.mkdir()
    board.write_text("model,method,task,variant,accuracy,config,seed,run_id\n"
                     "m,sft,fixture-colour,no-cfg,0.5,0123,0,r1\n" + tail)
    code, text = cli("leaderboard", "-t", "fixture-colour", "-f", "csv")
    assert code == 0 and "Traceback" not in text
    warning = next(line for line in text.splitlines() if "torn" in line)
    assert str(board) in warning and "line 3" in warning and why in warning
    assert "3.5" not in text and "0123" in text
    assert cli("run", *FIXTURE)[0] == 0  # appending drops the torn line, says so, keeps the rest
    df = lb.read_board(board)
    assert list(df["run_id"])[0] == "r1" and len(df) == 2 and "3.5" not in board.read_text()
    assert board.read_text().endswith("\n")


def test_malformed_middle_line_is_an_error_naming_the_line(cli, tmp_path):
    board = tmp_path / "res" / BOARD
    board.parent.mkdir()
    board.write_text("model,method,task,variant,accuracy\nm,sft,fixture-colour\nm,sft,fixture-colour,no-cfg,0.5\n")
    code, text = cli("leaderboard", "-t", "fixture-colour")
    assert code == 1 and str(board) in _one_line(text) and "line 2" in _one_line(text)


# ---- 2. a fine-tune's files are verified before reuse ------------------------------------------
def test_missing_finetuned_file_recomputes_the_finetune(cli, tmp_path):
    assert cli("run", *TWO_FILES)[0] == 0
    decoder = _stage_dir(tmp_path, "finetune") / "weights" / "decoder.safetensors"
    decoder.unlink()
    code, text = cli("run", *TWO_FILES)
    assert code == 0, text
    assert f"{decoder} is missing" in text and "recomputing" in text and "finetune: reusing" not in text
    assert decoder.is_file()
    code, text = cli("run", *TWO_FILES)
    assert code == 0 and "finetune: reusing" in text


def test_truncated_finetuned_weights_are_recomputed(cli, tmp_path):
    assert cli("run", *FIXTURE)[0] == 0
    weights = _stage_dir(tmp_path, "finetune") / "weights" / "policy.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    code, text = cli("run", *FIXTURE)
    assert code == 0, text
    assert f"{weights} is corrupt (" in text and "recomputing" in text
    assert weights.read_bytes() == original  # the same seed fine-tunes to the same weights


def test_damaged_finetune_without_the_finetune_stage_says_how(cli, tmp_path):
    assert cli("run", *FIXTURE)[0] == 0
    weights = _stage_dir(tmp_path, "finetune") / "weights" / "policy.safetensors"
    weights.unlink()
    code, text = cli("sample", *FIXTURE, "--set", "temperature=0.5")
    line = _one_line(text)
    assert code != 0 and str(weights) in line and "vapi-bench finetune" in line and "Traceback" not in text
    assert len(list((tmp_path / "runs" / "samples").iterdir())) == 1  # nothing sampled with the base weights


def test_unloadable_cached_weights_name_the_way_out(cli, tmp_path, monkeypatch):
    assert cli("run", *FIXTURE)[0] == 0

    def broken(self, directory):
        raise CheckpointError(f"cannot read {directory / 'policy.safetensors'}")

    monkeypatch.setattr(PaletteGenerator, "load_finetuned", broken)
    code, text = cli("run", *FIXTURE)
    line = _one_line(text)
    assert code == 1 and "--force" in line and "policy.safetensors" in line


# ---- 4. corrupt done markers and caches ---------------------------------------------------------
@pytest.mark.parametrize("stage, marker", [("finetune", "finetune.json"), ("samples", "samples.json"),
                                           ("scores", "score.json")])
def test_truncated_done_marker_is_named_and_recomputed(cli, tmp_path, stage, marker):
    assert cli("run", *FIXTURE)[0] == 0
    path = _stage_dir(tmp_path, stage) / marker
    good = json.loads(path.read_text())
    path.write_text(path.read_text()[:9])
    code, text = cli("run", *FIXTURE)
    assert code == 0, text
    assert f"{path} is corrupt (" in text and "recomputing" in text and "Traceback" not in text
    assert json.loads(path.read_text()).keys() == good.keys()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_reference_cache_is_recomputed_not_interrupted(cli, tmp_path, damage):
    assert cli("run", *SHAPES_FID)[0] == 0
    (cache,) = (tmp_path / "cache" / "shapes-ref").glob("*.npz")
    good = dict(np.load(cache))
    data = cache.read_bytes()
    cache.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"PK\x03\x04" + b"x" * 99}[damage])
    code, text = cli("score", *SHAPES_FID, "--force")
    assert code == 0, text
    assert f"{cache} is corrupt (" in text and "recomputing" in text and "interrupted" not in text
    again = dict(np.load(cache))
    assert all(np.array_equal(again[k], good[k]) for k in good)


def test_damaged_imagenet_reference_stats_cache_is_recomputed(tmp_path, capsys):
    from vapi_bench.tasks.imagenet.reference import cached_arrays

    path = tmp_path / "cache" / "reference-stats" / "k.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    arrays = cached_arrays("k", lambda: {"mu": np.zeros(3)})
    assert np.array_equal(arrays["mu"], np.zeros(3)) and np.array_equal(np.load(path)["mu"], np.zeros(3))
    assert f"{path} is corrupt (" in capsys.readouterr().err


def test_sample_folder_deleted_mid_run_gets_no_done_marker(cli, tmp_path, monkeypatch):
    import shutil

    import vapi_bench.runner as runner

    real = runner.sample_to_dir

    def then_deleted(generator, task, items, recipe, seed, sdir, **kw):
        done = real(generator, task, items, recipe, seed, sdir, **kw)
        shutil.rmtree(sdir / "images")
        return done

    monkeypatch.setattr(runner, "sample_to_dir", then_deleted)
    code, text = cli("run", *FIXTURE)
    line = _one_line(text)
    sdir = _stage_dir(tmp_path, "samples")
    assert code == 1 and str(sdir) in line and "missing" in line and "run the same command again" in line
    assert not (sdir / "samples.json").exists() and not (tmp_path / "runs" / "scores").exists()
    monkeypatch.setattr(runner, "sample_to_dir", real)
    code, text = cli("run", *FIXTURE)
    assert code == 0 and (sdir / "samples.json").exists()


# ---- 3. report --collect ------------------------------------------------------------------------
def _bundle(tmp_path: Path) -> Path:
    return tmp_path / "res" / "report" / "fixture-colour"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_failed_collect_keeps_the_previous_bundle(cli, tmp_path):
    assert cli("run", *FIXTURE)[0] == 0
    assert cli("report", "-t", "fixture-colour", "--collect")[0] == 0
    before = _tree(_bundle(tmp_path))
    image = _stage_dir(tmp_path, "samples") / "images" / "000000.png"
    image.unlink()
    code, text = cli("report", "-t", "fixture-colour", "--collect")
    line = _one_line(text)
    assert code == 1 and str(image) in line and "Traceback" not in text
    assert _tree(_bundle(tmp_path)) == before
    assert [p.name for p in _bundle(tmp_path).parent.iterdir()] == ["fixture-colour"]  # no temporary left


@pytest.mark.parametrize("run_id", ["absolute", "../outside", "a/../../outside"])
def test_collect_refuses_run_ids_outside_the_runs_folder(cli, tmp_path, run_id):
    assert cli("run", *FIXTURE)[0] == 0
    (record,) = (tmp_path / "runs").glob("*/run.json")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "run.json").write_bytes(record.read_bytes())
    run_id = str(outside) if run_id == "absolute" else run_id
    board = tmp_path / "res" / BOARD
    df = pd.read_csv(board, dtype=str, keep_default_na=False)
    df.loc[len(df)] = {**df.iloc[0].to_dict(), "run_id": run_id, "seed": "7"}
    df.to_csv(board, index=False)
    code, text = cli("report", "-t", "fixture-colour", "--collect")
    line = _one_line(text)
    assert code != 0 and run_id in line and "Row 2" in line and "Traceback" not in text
    assert not _bundle(tmp_path).exists()


def test_collect_skips_rows_without_a_run_id(cli, tmp_path):
    assert cli("run", *FIXTURE)[0] == 0
    board = tmp_path / "res" / BOARD
    width = len(board.read_text().splitlines()[0].split(","))
    with open(board, "a") as fh:  # a row from before run ids: every later column empty
        fh.write("fixture-palette,none,fixture-colour,no-cfg,0.5" + "," * (width - 5) + "\n")
    code, text = cli("report", "-t", "fixture-colour", "--collect")
    assert code == 0, text
    assert "1 row" in text and "no run_id" in text and "Traceback" not in text
    assert (_bundle(tmp_path) / "bundle.json").exists()
