"""What `vapi-bench run` prints: key metrics with Δ vs base at 80 columns, then the verdict lines."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from vapi_bench.demo import DEFAULT_MODEL, DEFAULT_TUNED_TEMPERATURE, plan_run
from vapi_bench.report.panel import build_panels
from vapi_bench.run_output import is_better, results_table
from vapi_bench.verdict import UNRESOLVED, compare, summary_rows, verdict_lines, verdict_word

SHAPES_FID_KEYS = (("fid", "lower"), ("class_accuracy", "higher"), ("inception_score", "higher"))


def _row(label: str, fid: float, **extra: Any) -> dict[str, Any]:
    return {"model": "shapes-c2i", "method": "none" if label in ("none", "tuned-T") else label, "task": "shapes-fid",
            "variant": "no-cfg", "fid": fid, "class_accuracy": 0.87, "inception_score": 18.57,
            "inception_score_std": 0.0, "kid": 0.02, "kid_std": 0.004, "precision": 0.77, "recall": 0.97,
            "config": "abcdef123456", "settings": "model.head_scale=1.2 task.cfg=without", "n_samples": 1000,
            "cfg_scale": 1.0, "temperature": 1.0, "seed": 0, "run_id": f"run-{label}",
            **({"label": label} if label == "tuned-T" else {}), **extra}


def _render(renderable: Any) -> str:
    console = Console(width=80, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_run_table_fits_80_columns_with_key_metrics_and_delta_vs_base():
    rows = [_row("none", 0.8858), _row("va-pi", 0.5689), _row("sft", 0.5636), _row("tuned-T", 0.2949)]
    text = _render(results_table(rows, SHAPES_FID_KEYS, title="shapes-c2i on shapes-fid"))
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text  # nothing cut
    assert "fid ↓" in text and "class_accuracy ↑" in text and "inception_score ↑" in text
    assert "inception_score_std" not in text and "kid" not in text and "config" not in text  # the rest: the CSV
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert "(−0.317)" in lines["va-pi"] and "(−0.591)" in lines["tuned-T"]
    assert "(" not in lines["none"]  # the base is the reference, no Δ of its own


def test_delta_is_taken_against_the_base_of_the_same_seed():
    rows = [_row("none", 1.0, seed=0), _row("none", 2.0, seed=1), _row("va-pi", 1.5, seed=0),
            _row("va-pi", 1.5, seed=1)]
    text = _render(results_table(rows, SHAPES_FID_KEYS))
    assert "(+0.500)" in text and "(−0.500)" in text


def test_direction_decides_better_and_the_verdict_word():
    assert is_better(-0.3, "lower") and not is_better(-0.3, "higher") and is_better(0.1, "higher")
    assert is_better(0.0, "lower") is None and is_better(1.0, None) is None
    assert verdict_word(-0.3, -0.5, -0.1, "lower") == "better"
    assert verdict_word(+0.3, +0.1, +0.5, "lower") == "worse"
    assert verdict_word(+0.3, +0.1, +0.5, "higher") == "better"
    assert verdict_word(-0.3, -0.5, +0.1, "lower") == UNRESOLVED
    assert verdict_word(-0.3, None, None, "lower") == UNRESOLVED


def test_bare_run_is_the_demo_and_named_runs_are_not():
    demo = plan_run(None, [], None, [], None)
    assert demo.demo and demo.model == DEFAULT_MODEL and demo.methods == ["none", "va-pi", "sft"]
    assert "model.head_scale=1.2" in demo.sets and demo.tuned_temperature == DEFAULT_TUNED_TEMPERATURE
    named = plan_run("shapes-c2i-small-ls", ["cca"], None, [], None)
    assert not named.demo and named.sets == [] and named.tuned_temperature is None and named.methods == ["cca"]


# ---- the verdict on paired per-prompt data (GenEval-style: overall, higher is better) ----------------
class PromptTask:
    """A task whose per-sample data are per-prompt correctness rows (tag, fraction correct)."""

    key_metrics = (("overall", "higher"),)

    def prompt_accuracy(self, records: Any) -> np.ndarray:
        return np.array([[r["tag"], r["correct"]] for r in records], dtype=float)


@dataclass
class Result:
    rows: list[dict[str, Any]]
    task: Any
    items: list[int]
    score_dirs: dict[str, Path] = field(default_factory=dict)
    sample_dirs: dict[str, Path] = field(default_factory=dict)


def _result(tmp: Path, label: str, correct: np.ndarray) -> Result:
    folder = tmp / label
    folder.mkdir()
    (folder / "per-sample.jsonl").write_text("".join(json.dumps({"tag": i % 2, "correct": float(c)}) + "\n"
                                                     for i, c in enumerate(correct)))
    row = {"model": "m", "task": "t", "variant": "cfg", "seed": 0, "overall": float(correct.mean())}
    return Result(rows=[row], task=PromptTask(), items=list(range(len(correct))), score_dirs={"cfg": folder})


def test_verdict_says_better_unresolved_and_keeps_the_lab_format(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.4).astype(float)
    better = np.maximum(base, (rng.random(400) < 0.5).astype(float))  # the base's hits plus more
    same = base.copy()
    same[:2] = 1 - same[:2]  # two prompts flipped: no real difference
    labelled = [("none", _result(tmp_path, "none", base)), ("va-pi", _result(tmp_path, "va-pi", better)),
                ("sft", _result(tmp_path, "sft", same))]
    verdict = compare(labelled, "overall", "higher", reps=200)
    words = {(c.label, c.reference): c.word for c in verdict.comparisons}
    assert words[("va-pi", "none")] == "better" and words[("sft", "none")] == UNRESOLVED
    assert words[("va-pi", "sft")] == "better"
    text = "\n".join(verdict_lines(verdict, Path("reports/t.html")))
    assert "within seed 0" in text and "Full report: reports/t.html" in text
    panels = build_panels(pd.DataFrame(summary_rows(verdict, labelled)), {"overall": "higher"})
    va_pi = next(r for r in panels[0].rows if r.label == "va-pi")
    assert va_pi.deltas["none"].word == "better" and panels[0].rows[-1].label == "none"


def test_verdict_without_paired_data_gives_differences_only(tmp_path):
    class Plain:
        key_metrics = (("score", "higher"),)

    rows = lambda label, v: [{"model": "m", "task": "t", "variant": "v", "seed": 0, "score": v}]  # noqa: E731
    labelled = [("none", Result(rows("none", 1.0), Plain(), [0])), ("va-pi", Result(rows("va-pi", 1.5), Plain(), [0]))]
    verdict = compare(labelled, "score", "higher")
    assert [(c.delta, c.ci_low, c.word) for c in verdict.comparisons] == [(0.5, None, UNRESOLVED)]
    assert "no intervals" in verdict.interval
