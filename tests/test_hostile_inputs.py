"""Issue 23, round 3: hostile values, files and signals end in one plain line, before any stage.

In-process through `vapi_bench.cli.main` on the embedded shapes world (every case here stops
before a stage runs, so each takes a second or two), plus one subprocess for SIGTERM.
"""
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vapi_bench.registry as registry_module
from vapi_bench.errors import DataError, UsageError
from vapi_bench.params import Param, resolve_params
from vapi_bench.registry import build_registry

ROOT = Path(__file__).resolve().parents[1]
ZOO_C2I = ROOT / "plugins" / "shapes" / "zoo" / "c2i.safetensors"
C2I = ["-m", "shapes-c2i", "-a", "none", "-t", "shapes-fid", "--limit", "4"]


@pytest.fixture(autouse=True)
def registry(monkeypatch, tmp_path):
    monkeypatch.setattr(registry_module, "_REGISTRY", build_registry())
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))


def _message(text: str) -> list[str]:
    """The error's lines: from the first `error:` / `interrupted:` on (progress output comes before)."""
    lines = [line for line in text.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.startswith(("error:", "interrupted:"))), 0)
    return lines[first:]


def _refused_before_any_stage(code: int, text: str, tmp_path: Path, *phrases: str) -> None:
    assert code == 2, text
    assert "Traceback" not in text, text
    (line,) = _message(text)
    assert all(phrase in line for phrase in phrases), line
    assert not (tmp_path / "runs" / "finetune").exists() and not (tmp_path / "runs" / "samples").exists()


# ---- 3. SIGTERM (cluster pre-emption) ----------------------------------------------------------------
def test_sigterm_while_finetuning_says_what_was_kept_and_exits_143(tmp_path):
    env = {**os.environ, "VAPI_BENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "VAPI_BENCH_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "vapi_bench.cli", "finetune", "-m", "shapes-c2i", "-a", "sft",
               "--set", "steps=100000", "--set", "ckpt_every=100000", "--runs-dir", str(tmp_path / "runs"), "-q"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs").glob("finetune/*/train.jsonl")):  # training has started
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=5)[0]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, output
    assert "Traceback" not in output
    (line,) = _message(output)
    assert line.startswith("interrupted:") and "Interrupted while fine-tuning" in line
    assert "run the same command again" in line


# ---- 4. text files that are not UTF-8 -------------------------------------------------------------------
def _geneval_metadata(path: Path) -> None:
    from vapi_bench.tasks.geneval.task import _load_metadata

    _load_metadata(str(path))


def _drawbench_prompts(path: Path) -> None:
    from vapi_bench.tasks.geneval.drawbench import read_drawbench_prompts

    read_drawbench_prompts(path)


def _captions(path: Path) -> None:
    from vapi_bench.plugins.datasets.captions import CaptionsJsonl

    CaptionsJsonl(str(path), 32, "image", "caption", "adm", "skip")


GOOD_LINES = {
    _geneval_metadata: [json.dumps({"tag": "single_object", "prompt": "a photo of a cat",
                                    "include": [{"class": "cat", "count": 1}]})] * 2,
    _drawbench_prompts: ["Prompts,Category", "a red cube,Colors"],
    _captions: [json.dumps({"image": "a.png", "caption": "a red cube"})] * 2,
}


@pytest.mark.parametrize("reader", list(GOOD_LINES), ids=lambda f: f.__name__.strip("_"))
def test_non_utf8_bytes_name_the_file_line_and_byte(tmp_path, reader):
    good = "\n".join(GOOD_LINES[reader]) + "\n"
    bad_line = b'{"prompt": "caf\xe9"}\n'  # Latin-1 e-acute, as a spreadsheet export writes it
    path = tmp_path / "input.txt"
    path.write_bytes(good.encode() + bad_line)
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    offset = len(good.encode()) + bad_line.index(b"\xe9")
    assert "\n" not in message
    assert str(path) in message and "line 3" in message and f"byte {offset}" in message and "UTF-8" in message


def test_non_utf8_metadata_through_the_cli_is_one_line(cli, tmp_path):
    path = tmp_path / "meta.jsonl"
    path.write_bytes(b'{"tag": "single_object", "prompt": "\xff"}\n')
    code, text = cli("run", "-m", "shapes-t2i", "-a", "none", "-t", "geneval", "--set", f"task.metadata_file={path}")
    assert code == 1 and "Traceback" not in text, text
    (line,) = _message(text)
    assert str(path) in line and "line 1" in line and "byte 36" in line


# ---- 5. numbers that overflow, sizes that cannot fit, values too long to print -------------------------
@pytest.mark.parametrize("setting, key", [("steps=1e309", "steps"), ("task.n=1e309", "n")])
def test_overflowing_numbers_exit_2(cli, tmp_path, setting, key):
    code, text = cli("run", "-m", "shapes-c2i", "-a", "sft", "-t", "shapes-fid", "--set", setting)
    _refused_before_any_stage(code, text, tmp_path, f"{key}=", "1e309")


def test_a_task_size_that_cannot_fit_is_refused_up_front(cli, tmp_path):
    code, text = cli("run", *C2I, "--set", "task.n=1e12")
    _refused_before_any_stage(code, text, tmp_path, "n='1e12'", "n must be in [2, 1000000]")


def test_long_values_are_shortened_in_error_messages(cli, tmp_path):
    prompt = " ".join(["cube"] * 2400)
    code, text = cli("run", *C2I, "--set", f"model.precision={prompt}")
    _refused_before_any_stage(code, text, tmp_path, "precision=", "…")
    assert len(_message(text)[0]) < 300


def test_a_2400_word_prompt_is_not_repeated_in_full(cli, tmp_path):
    prompts = tmp_path / "long.csv"
    prompts.write_text("Prompts,Category\n" + " ".join(["red square"] * 1200) + ",Long\n")
    code, text = cli("run", "-m", "shapes-t2i", "-a", "none", "-t", "drawbench", "--set",
                     f"task.prompts_file={prompts}", "--set", "task.metrics=clip", "--set", "task.clip_weights=random")
    assert code == 2 and "Traceback" not in text, text
    (line,) = _message(text)
    assert "2400 words" in line and "…" in line and len(line) < 400


# ---- 6. ranges declared on parameters ---------------------------------------------------------------------
def test_declared_constraints_are_checked_for_every_plugin():
    declared = (Param("lr", float, 1e-4, "rate", exclusive_minimum=0.0),
                Param("clip", float, 1.0, "norm", minimum=0.0),
                Param("p", float, 0.5, "probability", minimum=0.0, maximum=1.0),
                Param("betas", tuple, (0.9, 0.999), "AdamW betas", minimum=0.0, exclusive_maximum=1.0, length=2),
                Param("count", int, 4, "how many", minimum=1, maximum=100),
                Param("scale", float, 1.0, "free"),
                Param("cap", float, math.inf, "no cap by default", allow_nonfinite=True))
    assert resolve_params(declared, {"lr": "1e-3", "betas": "0.5,0.9", "cap": "inf"}, "x")["cap"] == math.inf
    for key, value, words in [("lr", "0", "lr must be > 0"), ("clip", "-1", "clip must be >= 0"),
                              ("p", "1.5", "p must be in [0, 1]"), ("betas", "2,3", "betas must be in [0, 1)"),
                              ("betas", "0.9", "betas must have 2 values"), ("count", "0", "count must be in [1, 100]"),
                              ("scale", "inf", "scale must be finite"), ("scale", "nan", "scale must be finite"),
                              ("lr", "nan", "lr must be > 0"), ("count", "1e309", "not a valid int")]:
        with pytest.raises(UsageError) as info:
            resolve_params(declared, {key: value}, "method 'm'")
        message = str(info.value)
        assert message.startswith("method 'm': ") and words in message and f"{key}='{value}'" in message, message
        assert "\n" not in message


def test_head_scale_inf_is_refused_before_any_stage(cli, tmp_path):
    code, text = cli("run", *C2I, "--set", "model.head_scale=inf")
    _refused_before_any_stage(code, text, tmp_path, "head_scale='inf'", "finite")


TRAINING_CASES = [("va-pi", "max_grad_norm", "-1"), ("va-pi", "weight_decay", "-1"), ("va-pi", "betas", "2,3"),
                  ("va-pi", "adv_clip", "-1"), ("va-pi", "clip_eps", "-1"), ("va-pi", "beta", "-1"),
                  ("va-pi", "kl_coef", "-1"), ("sft", "max_grad_norm", "-1"), ("ar-grpo", "clip_eps", "-1"),
                  ("ar-grpo", "adv_eps", "-1"), ("ar-grpo", "beta", "-1"), ("cca", "beta", "0"),
                  ("cca", "uncond_ratio", "1"), ("cca", "betas", "0.9,1")]


@pytest.mark.parametrize("method, key, value", TRAINING_CASES)
def test_training_parameters_declare_their_ranges(method, key, value):
    entry = build_registry().get("methods", method)
    with pytest.raises(UsageError, match="must"):
        resolve_params(entry.params, {key: value}, f"method '{method}'")


@pytest.mark.parametrize("setting, words", [("sft.max_grad_norm=-1", "max_grad_norm='-1'"),
                                             ("va-pi.betas=2,3", "betas='2,3'"),
                                             ("va-pi.adv_clip=-1", "adv_clip='-1'")])
def test_a_bad_training_value_stops_the_cli_before_any_stage(cli, tmp_path, setting, words):
    """Through the CLI, with two methods: the second method's bad value stops the first too."""
    code, text = cli("run", "-m", "shapes-c2i", "-a", "sft", "-a", "va-pi", "-t", "shapes-fid", "--set", setting)
    _refused_before_any_stage(code, text, tmp_path, words, "must")


# ---- 7. integer tensors in a checkpoint -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.int8])
def test_integer_checkpoint_tensors_are_refused(cli, tmp_path, dtype):
    state = load_file(str(ZOO_C2I))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].round().to(dtype)
    bad = tmp_path / "int.safetensors"
    save_file(state, str(bad))
    code, text = cli("run", *C2I, "--checkpoint", str(bad))
    assert code == 1 and "Traceback" not in text, text
    line = " ".join(_message(text))
    assert key in line and str(dtype).removeprefix("torch.") in line
    assert not (tmp_path / "runs" / "samples").exists()


# ---- 2. a read-only cache ---------------------------------------------------------------------------------
def test_file_digest_reads_a_read_only_cache(tmp_path, monkeypatch):
    import vapi_bench.hashing as hashing

    big = tmp_path / "weights.bin"
    big.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: large enough to be remembered

    def refuse(path, *args, **kw):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(hashing, "FileLock", refuse)
    assert hashing.file_digest(big) == hashlib.sha256(big.read_bytes()).hexdigest()
