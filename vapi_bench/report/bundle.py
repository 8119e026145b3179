"""Collect what a task's report needs from runs/ into a small, committable bundle under results/.

runs/ is never committed (images, weights, caches), so a report built straight from it could not
be rebuilt on a clean clone. `collect` copies the few things the page shows into
`results/report/<task>/`:

    bundle.json                  grids (which run, variant, sample indices, captions, verdicts),
                                 training logs (train.jsonl numbers) and provenance per run
    samples/<run>-<variant>/<index>.png   the grid images themselves (a few KB each)
    run-records/<run_id>.json    each run's run.json (linked from the page)

A new bundle is built in a folder beside the old one and swapped in only when complete, so a
failed collect (a sample image deleted since) keeps the previous bundle. Every path it reads comes
from the board or a run record and is checked to stay inside the runs folder.

Grids use the SAME sample indices for every method and variant: sample i is drawn with seed
derive_seed(seed, i), so two runs with the same seed show the same class or prompt under the same
noise, and only the weights differ. The report itself reads only this bundle and the CSVs.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path, PurePath
from typing import Any

import pandas as pd
from rich.markup import escape

from .. import store
from ..errors import DataError, UsageError

BUNDLE_NAME = "bundle.json"
#: the copies of run.json (not "runs/": .gitignore keeps every runs/ folder out of git)
RECORDS = "run-records"
#: run.json fields the page shows (the rest, e.g. the per-row results, is in the CSV already)
RECIPE_KEYS = ("cfg_scale", "temperature", "top_k", "top_p")
PROVENANCE_KEYS = ("run_id", "spec", "stage_keys", "versions", "git_commit", "host", "platform", "device",
                   "device_name", "world_size", "wall_seconds", "reused", "total_seconds", "seed_policy")


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
    run_ids = _run_ids(rows, task, runs_dir)
    found = [runs_dir / rid / "run.json" for rid in run_ids if (runs_dir / rid / "run.json").exists()]
    records = {path.parent.name: _read_record(path) for path in found}
    if not records:
        raise UsageError(f"None of the {len(run_ids)} runs on the '{task}' leaderboard has a run.json under "
                         f"{runs_dir}; collect where the runs were made (or pass --runs-dir).")
    staging = out.with_name(f".{out.name}.{os.getpid()}.new")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / RECORDS).mkdir(parents=True)
        for rid, record in records.items():
            _copy(runs_dir / rid / "run.json", staging / RECORDS / f"{rid}.json")
        bundle = {
            "task": task,
            "runs": {rid: {k: record.get(k) for k in PROVENANCE_KEYS} for rid, record in records.items()},
            "grids": _collect_grids(records, runs_dir, staging, images_per_grid),
            "training": _collect_training(records, runs_dir),
        }
        store.atomic_write_json(staging / BUNDLE_NAME, bundle)
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _run_ids(rows: pd.DataFrame, task: str, runs_dir: Path) -> list[str]:
    """The distinct run ids of the board's rows, each a plain folder name of `runs_dir`.

    A row without one (written before rows recorded their run) names no run to collect: skipped,
    with a note. A run id that is a path (absolute, or holding '/' or '..') would make the collect
    read and copy outside the runs folder: refused, naming the row.
    """
    if "run_id" not in rows:
        return []
    ids = rows["run_id"]
    unnamed = int(ids.isna().sum())
    if unnamed:
        _note(f"{unnamed} row(s) of the '{task}' leaderboard have no run_id (written before rows recorded their "
              "run): skipped, as they name no run to collect.")
    for position, rid in enumerate(ids):
        if not pd.isna(rid) and not _is_plain_name(str(rid)):
            raise DataError(f"Row {position + 1} of the '{task}' leaderboard has run_id {str(rid)!r}, which is a "
                            f"path, not a run folder name; `report --collect` reads only inside {runs_dir}. Correct "
                            "or remove that row.")
    return list(dict.fromkeys(str(rid) for rid in ids.dropna()))


def _is_plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and not PurePath(name).is_absolute()


def _inside(root: Path, relative: Any, source: Path) -> Path:
    """root/relative for a relative path read from `source` (a run record, a samples list), refused
    when it would lead outside root."""
    parts = PurePath(str(relative))
    if not str(relative) or parts.is_absolute() or ".." in parts.parts:
        raise DataError(f"{source} names {str(relative)!r}, a path outside {root}; `report --collect` refuses it. "
                        "Run that run's command again to rewrite the file, or remove its rows from the board.")
    return root / parts


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); run that run's command again to rewrite it (finished "
                        "stages are reused), or remove its rows from the board.") from None
    if not isinstance(record, dict):
        raise DataError(f"{path} is not a run record (a JSON object); run that run's command again to rewrite it.")
    return record


def _copy(source: Path, target: Path) -> None:
    """Copy one file into the new bundle; a missing source is named (the old bundle stays as it was)."""
    if not source.is_file():
        raise DataError(f"{source} is missing, so the report bundle was not collected (the previous one is kept). "
                        "Run that run's command again to redraw it (finished stages are reused), then collect again.")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _swap_in(new: Path, out: Path) -> None:
    """Replace the bundle `out` by the complete folder `new` (two renames; the old one is then removed)."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def _note(text: str) -> None:
    from ..progress import console

    console.print(f"[yellow]note:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)


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
    samples = {(rid, row["variant"]): _sample_records(runs_dir, rid, keys) for rid, row, keys in runs}
    common = set.intersection(*(set(s) for s in samples.values())) if samples else set()
    indices = spread(sorted(common), count)
    grids = []
    for rid, row, keys in runs:
        per_index = samples[(rid, row["variant"])]
        folder = f"samples/{rid}-{row['variant']}"
        sdir = _inside(runs_dir / "samples", keys["sample"], runs_dir / rid / "run.json")
        cells = []
        for index in indices:
            record = per_index[index]
            name = f"{folder}/{index:06d}.png"
            _copy(_inside(sdir, record["image"], sdir / "samples.jsonl"), out / name)
            cells.append({"index": index, "image": name, "caption": caption(record), **verdict(record)})
        grids.append({"run_id": rid, "model": row.get("model"), "method": row.get("method"),
                      "label": row.get("label"), "variant": row.get("variant"), "config": row.get("config"),
                      "seed": row.get("seed"), "recipe": {k: row.get(k) for k in RECIPE_KEYS},
                      "cells": cells})
    return grids


def _sample_records(runs_dir: Path, rid: str, keys: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """index -> the sample's record, with the scorer's per-sample verdict merged in when there is one."""
    record = runs_dir / rid / "run.json"
    samples = _inside(runs_dir / "samples", keys["sample"], record) / "samples.jsonl"
    merged = {r["index"]: r for r in store.read_jsonl(samples)}
    if keys.get("score"):
        for r in store.read_jsonl(_inside(runs_dir / "scores", keys["score"], record) / "per-sample.jsonl"):
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
        log = _inside(runs_dir / "finetune", key, runs_dir / rid / "run.json") / "train.jsonl"
        steps = [_numbers(r) for r in store.read_jsonl(log)]
        if steps:
            logs.append({"run_id": rid, "model": spec.get("model"), "method": spec.get("method"),
                         "seed": spec.get("seed"), "finetune_key": key, "steps": steps})
    return sorted(logs, key=lambda log: (str(log["method"]), str(log["model"]), log["seed"] or 0))


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(f"{v:.6g}") for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def tasks_on_board(results_dir: Path) -> list[str]:
    """Every task with a leaderboard CSV under results_dir."""
    return sorted(p.name[len("leaderboard-"):-len(".csv")] for p in Path(results_dir).glob("leaderboard-*.csv"))

