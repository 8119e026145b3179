"""Everything one task's report shows, gathered from the committed CSVs and the collected bundle.

The HTML and Markdown renderers only lay this out; neither reads a file of its own, so both show
the same numbers, images and provenance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import leaderboard as lb
from ..errors import UsageError
from ..lab.results import summary_tables
from . import figures
from .bundle import RECORDS, bundle_dir, load_bundle
from .table import Board, build_board, build_summary


@dataclass
class Figure:
    """A rendered figure: `name` is its file stem when written next to a Markdown page."""

    title: str
    name: str
    png: bytes


@dataclass
class GridRow:
    """One method/variant's samples at the shared indices, with the scorer's verdicts if any."""

    label: str
    run_id: str
    seed: Any
    recipe: dict[str, Any]
    cells: list[dict[str, Any]]  # index, caption, png (bytes), and correct/reason when scored


@dataclass
class ReportContent:
    task: str
    board: Board
    grids: dict[str, list[GridRow]]  # variant -> one row per method
    training: list[Figure]
    curves: list[Figure]
    runs: dict[str, dict[str, Any]]  # run_id -> provenance
    run_json: dict[str, Path]  # run_id -> the collected run.json
    summaries: list[tuple[str, Board]] = field(default_factory=list)  # the lab's aggregated tables (CIs)
    notes: list[str] = field(default_factory=list)


def gather(task: str, results_dir: Path) -> ReportContent:
    """Read results/leaderboard-<task>.csv, results/curve-<task>.csv and results/report/<task>/."""
    results_dir = Path(results_dir)
    df = lb.load(results_dir, task)
    if df.empty:
        raise UsageError(f"No leaderboard rows for task '{task}' in {results_dir}; run `vapi-bench run -t {task}` "
                         "or `vapi-bench lab compare` first.")
    bundle = load_bundle(results_dir, task)
    runs = bundle.get("runs", {})
    notes = []
    if not bundle.get("grids"):
        notes.append(f"No samples, training curves or provenance collected for '{task}' yet: run "
                     f"`vapi-bench report -t {task} --collect` where its runs/ directory is.")
    run_ids = df.get("run_id", pd.Series(dtype=object)).dropna()  # a row from before run ids names none
    missing = [r for r in run_ids.astype(str).unique() if runs and r not in runs]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        notes.append(f"{len(missing)} leaderboard run(s) have no collected provenance or samples ({shown}); "
                     f"collect again where they were made.")
    root = bundle_dir(results_dir, task)
    return ReportContent(
        task=task,
        board=build_board(df, budgets=_budgets(bundle)),
        grids=_grids(bundle, root),
        training=_training(bundle),
        curves=_curves(results_dir, task),
        runs=runs,
        run_json={rid: root / RECORDS / f"{rid}.json" for rid in runs if (root / RECORDS / f"{rid}.json").exists()},
        summaries=_summaries(results_dir, task),
        notes=notes,
    )


def _summaries(results_dir: Path, task: str) -> list[tuple[str, Board]]:
    """`lab tune`'s per-method tables (results/lab-<model>-<task>.csv): tuned lr, mean ± std and
    the paired differences against the base, SFT and the temperature control with their intervals."""
    return [(name, build_summary(table)) for name, table in summary_tables(results_dir, task)]


def finetune_budget(spec: dict[str, Any], steps: list[dict[str, float]]) -> str:
    """'60 steps × 16 images, lr 6e-06' for a fine-tuned run ('no fine-tuning' for the base model).

    A parameter left to the method's recipe is None in the spec; the training log then says what
    was used (its lr column; the batch is images_per_s × step_seconds, exactly, by construction).
    """
    if spec.get("method_identity"):
        return "no fine-tuning"
    params, last = spec.get("method_params", {}), (steps[-1] if steps else {})
    n_steps = int(last["step"]) if "step" in last else params.get("steps")
    batch = params.get("batch_size")
    if batch is None and "images_per_s" in last and "step_seconds" in last:
        batch = round(last["images_per_s"] * last["step_seconds"])
    lr = params.get("lr") if params.get("lr") is not None else (steps[0].get("lr") if steps else None)
    parts = []
    if n_steps is not None:
        parts.append(f"{n_steps} steps" + (f" × {batch} images" if batch else ""))
    if lr is not None:
        parts.append(f"lr {lr:g}" if isinstance(lr, (int, float)) else f"lr {lr}")
    return ", ".join(parts)


def _budgets(bundle: dict[str, Any]) -> dict[str, str]:
    logs = {log["finetune_key"]: log["steps"] for log in bundle.get("training", [])}
    return {rid: finetune_budget(run.get("spec", {}), logs.get((run.get("stage_keys") or {}).get("finetune"), []))
            for rid, run in bundle.get("runs", {}).items()}


def _grids(bundle: dict[str, Any], root: Path) -> dict[str, list[GridRow]]:
    grids: dict[str, list[GridRow]] = {}
    for grid in bundle.get("grids", []):
        label = " · ".join(dict.fromkeys(str(grid[k]) for k in ("method", "label", "config") if grid.get(k)))
        models = {g.get("model") for g in bundle["grids"]}
        if len(models) > 1:
            label = f"{grid['model']} · {label}"
        cells = [{**{k: v for k, v in cell.items() if k != "image"}, "png": (root / cell["image"]).read_bytes()}
                 for cell in grid["cells"]]
        grids.setdefault(str(grid["variant"]), []).append(
            GridRow(label=label, run_id=grid["run_id"], seed=grid.get("seed"), recipe=grid.get("recipe", {}),
                    cells=cells))
    return grids


def _training(bundle: dict[str, Any]) -> list[Figure]:
    by_method: dict[str, list[dict[str, Any]]] = {}
    for log in bundle.get("training", []):
        by_method.setdefault(str(log["method"]), []).append(log)
    return [Figure(f"training: {method}", f"training-{method}", figures.training_figure(method, logs))
            for method, logs in by_method.items()]


def _curves(results_dir: Path, task: str) -> list[Figure]:
    path = results_dir / f"curve-{task}.csv"
    if not path.exists() or path.stat().st_size == 0:
        return []
    df = pd.read_csv(path)
    return [Figure(f"{metric} against fine-tune steps", f"curve-{metric}", figures.metric_curve_figure(df, metric))
            for metric in figures.curve_metrics(df)]
