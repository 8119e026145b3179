"""Collect what a task's report needs from runs/ into a small, committable bundle under results/.

runs/ is never committed (images, weights, caches), so a report built straight from it could not
be rebuilt on a clean clone. `collect` copies the few things the page shows into
`results/report/<task>/`:

    bundle.json                  grids (which run, variant, sample indices, captions, verdicts),
                                 training logs (train.jsonl numbers) and provenance per run
    samples/<run>-<variant>/<index>.png   the grid images themselves (a few KB each)
    run-records/<run_id>.json    each run's run.json (linked from the page)

Grids use the SAME sample indices for every method and variant: sample i is drawn with seed
derive_seed(seed, i), so two runs with the same seed show the same class or prompt under the same
noise, and only the weights differ. The report itself reads only this bundle and the CSVs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from .. import store
from ..errors import UsageError

BUNDLE_NAME = "bundle.json"
#: the copies of run.json (not "runs/": .gitignore keeps every runs/ folder out of git)
RECORDS = "run-records"
#: run.json fields the page shows (the rest, e.g. the per-row results, is in the CSV already)
RECIPE_KEYS = ("cfg_scale", "temperature", "top_k", "top_p")
PROVENANCE_KEYS = ("run_id", "spec", "stage_keys", "versions", "git_commit", "host", "platform", "device",
                   "device_name", "world_size", "wall_seconds", "total_seconds", "seed_policy")


def bundle_dir(results_dir: Path, task: str) -> Path:
    return Path(results_dir) / "report" / task


def load_bundle(results_dir: Path, task: str) -> dict[str, Any]:
    """The collected bundle of a task, or an empty one (the page then says how to collect)."""
    path = bundle_dir(results_dir, task) / BUNDLE_NAME
    if not path.exists():
        return {"task": task, "grids": [], "training": [], "runs": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); re-create it with `vapi-bench report --collect`.") from None


def collect(rows: pd.DataFrame, task: str, runs_dir: Path, results_dir: Path, images_per_grid: int = 16) -> Path:
    """Copy grids, training logs and provenance of the runs behind `rows` into the task's bundle.

    Runs whose run.json is missing under `runs_dir` are skipped (the page names them);
    when none is found the call fails, because an empty bundle would silently hide the samples.
    """
    runs_dir, out = Path(runs_dir), bundle_dir(results_dir, task)
    run_ids = list(dict.fromkeys(str(r) for r in rows["run_id"].dropna())) if "run_id" in rows else []
    records = {rid: json.loads((runs_dir / rid / "run.json").read_text())
               for rid in run_ids if (runs_dir / rid / "run.json").exists()}
    if not records:
        raise UsageError(f"None of the {len(run_ids)} runs on the '{task}' leaderboard has a run.json under "
                         f"{runs_dir}; collect where the runs were made (or pass --runs-dir).")
    if out.exists():
        shutil.rmtree(out)
    (out / RECORDS).mkdir(parents=True)
    for rid, record in records.items():
        shutil.copyfile(runs_dir / rid / "run.json", out / RECORDS / f"{rid}.json")
    bundle = {
        "task": task,
        "runs": {rid: {k: record.get(k) for k in PROVENANCE_KEYS} for rid, record in records.items()},
        "grids": _collect_grids(records, runs_dir, out, images_per_grid),
        "training": _collect_training(records, runs_dir),
    }
    store.atomic_write_json(out / BUNDLE_NAME, bundle)
    return out


# ---- grids ---------------------------------------------------------------------------------------
def _grid_runs(records: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """One (run_id, row, stage keys) per configuration (model, method, lab label, variant, config,
    recipe), all at the seed every configuration has if there is one.

    Picking a seed every group shares is what makes the grids line up sample for sample.
    """
    by_group: dict[tuple, dict[int, tuple[str, dict[str, Any], dict[str, Any]]]] = {}
    for rid, record in records.items():
        variants = record.get("stage_keys", {}).get("variants", [])
        for row, keys in zip(record.get("results", []), variants):
            group = (row.get("model"), row.get("method"), row.get("label"), row.get("variant"), row.get("config"),
                     *(row.get(k) for k in RECIPE_KEYS))
            by_group.setdefault(group, {}).setdefault(int(row.get("seed", 0)), (rid, row, keys))
    shared = set.intersection(*(set(seeds) for seeds in by_group.values())) if by_group else set()
    chosen = []
    for group in sorted(by_group, key=lambda g: tuple(str(x) for x in g)):
        seeds = by_group[group]
        chosen.append(seeds[min(shared) if shared else min(seeds)])
    return chosen


def _collect_grids(records: dict[str, dict[str, Any]], runs_dir: Path, out: Path, count: int) -> list[dict[str, Any]]:
    runs = _grid_runs(records)
    samples = {rid_variant: _sample_records(runs_dir, keys) for rid_variant, keys in
               (((rid, row["variant"]), keys) for rid, row, keys in runs)}
    common = set.intersection(*(set(s) for s in samples.values())) if samples else set()
    indices = spread(sorted(common), count)
    grids = []
    for rid, row, keys in runs:
        per_index = samples[(rid, row["variant"])]
        folder = f"samples/{rid}-{row['variant']}"
        cells = []
        for index in indices:
            record = per_index[index]
            name = f"{folder}/{index:06d}.png"
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(runs_dir / "samples" / keys["sample"] / record["image"], out / name)
            cells.append({"index": index, "image": name, "caption": caption(record), **verdict(record)})
        grids.append({"run_id": rid, "model": row.get("model"), "method": row.get("method"),
                      "label": row.get("label"), "variant": row.get("variant"), "config": row.get("config"),
                      "seed": row.get("seed"), "recipe": {k: row.get(k) for k in RECIPE_KEYS},
                      "cells": cells})
    return grids


def _sample_records(runs_dir: Path, keys: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """index -> the sample's record, with the scorer's per-sample verdict merged in when there is one."""
    merged = {r["index"]: r for r in store.read_jsonl(runs_dir / "samples" / keys["sample"] / "samples.jsonl")}
    if keys.get("score"):
        for r in store.read_jsonl(runs_dir / "scores" / keys["score"] / "per-sample.jsonl"):
            merged[r["index"]] = {**merged.get(r["index"], {}), **r}
    return merged


def spread(indices: list[int], count: int) -> list[int]:
    """`count` indices evenly spread over `indices` (all of them when there are fewer): the grid then
    shows many classes or GenEval tags rather than only the first few."""
    if len(indices) <= count:
        return list(indices)
    step = (len(indices) - 1) / (count - 1) if count > 1 else 0
    return [indices[round(i * step)] for i in range(count)]


def caption(record: dict[str, Any]) -> str:
    """What was asked for: the prompt, else the class."""
    for key in ("prompt", "meta.prompt"):
        if record.get(key):
            return str(record[key])
    cls = record.get("meta.class", record.get("class", record.get("condition")))
    return f"class {cls}"


def verdict(record: dict[str, Any]) -> dict[str, Any]:
    """{'correct': bool, 'reason': str} from a scorer's per-sample record, or {} when it has none.

    GenEval-style scorers write `correct` and `reason`; class-conditional ones `class_correct` and
    `predicted_class`.
    """
    if isinstance(record.get("correct"), bool):
        reason = str(record.get("reason") or "").strip()
        return {"correct": record["correct"], "reason": reason or ("correct" if record["correct"] else "incorrect")}
    if isinstance(record.get("class_correct"), bool):
        return {"correct": record["class_correct"],
                "reason": f"classifier says class {record.get('predicted_class')}"}
    return {}


# ---- training logs ---------------------------------------------------------------------------------
def _collect_training(records: dict[str, dict[str, Any]], runs_dir: Path) -> list[dict[str, Any]]:
    """Per fine-tuned run: its method, seed and the numeric per-step records of train.jsonl."""
    seen, logs = set(), []
    for rid, record in records.items():
        key = record.get("stage_keys", {}).get("finetune")
        spec = record.get("spec", {})
        if not key or key in seen or spec.get("method_identity"):
            continue
        seen.add(key)
        steps = [_numbers(r) for r in store.read_jsonl(runs_dir / "finetune" / key / "train.jsonl")]
        if steps:
            logs.append({"run_id": rid, "model": spec.get("model"), "method": spec.get("method"),
                         "seed": spec.get("seed"), "finetune_key": key, "steps": steps})
    return sorted(logs, key=lambda log: (str(log["method"]), str(log["model"]), log["seed"] or 0))


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(f"{v:.6g}") for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def tasks_on_board(results_dir: Path) -> list[str]:
    """Every task with a leaderboard CSV under results_dir."""
    return sorted(p.name[len("leaderboard-"):-len(".csv")] for p in Path(results_dir).glob("leaderboard-*.csv"))

