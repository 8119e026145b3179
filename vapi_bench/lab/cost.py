"""What a lab table cost: the compute its stages recorded when they were made.

A researcher deciding whether to run a table needs its price before the hours are spent, and a
table rebuilt from the cache would otherwise report seconds. Every cached stage stores how long it
took when it was computed (finetune.json `minutes`, samples.json and score.json `seconds`), and each
run's run.json names its stages, so the price of a table is the sum over the distinct stages its
rows used, however many later runs reused them. Times are wall-clock seconds of one process; on a
shared machine they include the time other processes took the cores.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..store import write_csv

#: stage kind -> (folder under the runs directory, record file, seconds read from the record)
STAGES = {
    "finetune": ("finetune", "finetune.json", lambda record: 60.0 * float(record["minutes"])),
    "sample": ("samples", "samples.json", lambda record: float(record["seconds"])),
    "score": ("scores", "score.json", lambda record: float(record["seconds"])),
}
#: the CSV's columns: a count and the recorded minutes per stage kind, then the total
COLUMNS = ("label", "phase", "runs", *(f"{kind}{suffix}" for kind in STAGES for suffix in ("s", "_minutes")),
           "minutes")


def run_stages(runs_dir: Path, run_id: str) -> set[tuple[str, str]]:
    """The (kind, key) of every computed stage a run used (the base's weights are not a stage); none
    for a row that no runner recorded (a scripted stand-in)."""
    record = runs_dir / run_id / "run.json"
    if not record.exists():
        return set()
    keys = json.loads(record.read_text())["stage_keys"]
    stages = {("finetune", keys["finetune"])} if keys.get("finetune") else set()
    for variant in keys.get("variants", []):
        stages |= {(kind, variant[kind]) for kind in ("sample", "score") if variant.get(kind)}
    return {(kind, key) for kind, key in stages if _record(runs_dir, kind, key).exists()}


def _record(runs_dir: Path, kind: str, key: str) -> Path:
    folder, name, _ = STAGES[kind]
    return runs_dir / folder / key / name


def stage_seconds(runs_dir: Path, kind: str, key: str) -> float:
    return STAGES[kind][2](json.loads(_record(runs_dir, kind, key).read_text()))


def cost_row(runs_dir: Path, label: str, phase: str, run_ids: Iterable[str]) -> dict[str, Any]:
    """One line of the cost table: the distinct stages of these runs, counted and timed."""
    run_ids = set(run_ids)
    stages = set().union(*(run_stages(runs_dir, run_id) for run_id in run_ids)) if run_ids else set()
    row: dict[str, Any] = {"label": label, "phase": phase, "runs": len(run_ids)}
    total = 0.0
    for kind in STAGES:
        seconds = sum(stage_seconds(runs_dir, k, key) for k, key in stages if k == kind)
        row[f"{kind}s"], row[f"{kind}_minutes"] = sum(1 for k, _ in stages if k == kind), round(seconds / 60, 2)
        total += seconds
    row["minutes"] = round(total / 60, 2)
    return row


def table_cost(runs_dir: Path, validation_rows: list[dict[str, Any]],
               test_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per label and phase (validation tries, test rows), then the whole table, each stage counted once."""
    rows = []
    for phase, phase_rows in (("validation", validation_rows), ("test", test_rows)):
        by_label: dict[str, set[str]] = {}
        for row in phase_rows:
            by_label.setdefault(str(row["label"]), set()).add(str(row["run_id"]))
        rows += [cost_row(runs_dir, label, phase, ids) for label, ids in by_label.items()]
    every = {str(r["run_id"]) for r in (*validation_rows, *test_rows)}
    return rows + [cost_row(runs_dir, "table", "all", every)]


def write_cost(path: Path, runs_dir: Path, validation_rows: list[dict[str, Any]],
               test_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the cost CSV; returns the whole table's row."""
    rows = table_cost(runs_dir, validation_rows, test_rows)
    write_csv(path, [{column: row[column] for column in COLUMNS} for row in rows])
    return rows[-1]


def cost_sentence(total: dict[str, Any]) -> str:
    """The whole table's price in one line (the run output and the results page)."""
    return (f"{total['finetunes']} fine-tunes, {total['samples']} sample sets and {total['scores']} scores: "
            f"{total['minutes']:.0f} min of recorded stage time (fine-tunes {total['finetune_minutes']:.0f}, "
            f"sampling {total['sample_minutes']:.0f}, scoring {total['score_minutes']:.0f})")
