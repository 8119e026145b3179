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
from .directions import directions
from .panel import Panel, build_panels, table_model
from .table import Board, build_board, build_summary, main_rows


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
    panels: list[Panel] = field(default_factory=list)  # the verdict panels: the page's first screen
    settings: dict[str, str] = field(default_factory=dict)  # model -> its non-default settings
    directions: dict[str, str] = field(default_factory=dict)  # metric -> lower | higher


def gather(task: str, results_dir: Path) -> ReportContent:
    """Read results/leaderboard-<task>.csv, results/curve-<task>.csv and results/report/<task>/."""
    results_dir = Path(results_dir)
    df = lb.load(results_dir, task)
    if df.empty:
        raise UsageError(f"No leaderboard rows for task '{task}' in {results_dir}; run `vapi-bench run -t {task}` "
                         "or `vapi-bench lab compare` first.")
    df, notes = main_rows(df)
    bundle = load_bundle(results_dir, task)
    runs = {rid: run for rid, run in bundle.get("runs", {}).items() if _on_board(df, rid)}
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
    known = directions(task)
    settings = model_settings(df)
    labels = _labels(df)
    return ReportContent(
        task=task,
        board=build_board(df, budgets=_budgets(bundle), directions=known),
        grids=_grids(bundle, root, labels, set(runs)),
        training=_training(bundle, labels, set(runs)),
        curves=_curves(results_dir, task),
        runs=runs,
        run_json={rid: root / RECORDS / f"{rid}.json" for rid in runs if (root / RECORDS / f"{rid}.json").exists()},
        summaries=_summaries(results_dir, task, known, settings),
        notes=notes,
        panels=[p for name, table in summary_tables(results_dir, task)
                for p in build_panels(table, known, settings.get(table_model(name, table, task), ""),
                                      table_model(name, table, task))],
        settings=settings,
        directions=known,
    )


def _on_board(df: pd.DataFrame, run_id: str) -> bool:
    """Whether a collected run still has a row in the main table (superseded runs are left out)."""
    return "run_id" not in df or bool((df["run_id"].astype(str) == run_id).any())


def model_settings(df: pd.DataFrame) -> dict[str, str]:
    """model -> the `model.*` settings its rows ran with that are not the model's defaults (e.g.
    'model.head_scale=1.2': the head-scaled control is another base and the page must say so)."""
    if "settings" not in df:
        return {}
    found: dict[str, list[str]] = {}
    for model, settings in zip(df["model"], df["settings"].fillna("")):
        for token in str(settings).split():
            if token.startswith("model.") and token not in found.setdefault(str(model), []):
                found[str(model)].append(token)
    return {model: " ".join(tokens) for model, tokens in found.items() if tokens}


def _labels(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(run_id, variant) -> the row's label (the lab's name: 'va-pi:reward-only', 'T-control:sft')."""
    if "run_id" not in df or "label" not in df:
        return {}
    return {(str(r), str(v)): str(label) for r, v, label in zip(df["run_id"], df["variant"], df["label"])
            if not pd.isna(label)}


def _summaries(results_dir: Path, task: str, known: dict[str, str],
               settings: dict[str, str]) -> list[tuple[str, Board]]:
    """`lab tune`'s per-method tables (results/lab-<model>-<task>.csv): tuned lr, mean ± std and
    the paired differences against the base, SFT and the temperature controls with their
    intervals, titled by the base model (and its non-default settings) they compare on."""
    titled = []
    for name, table in summary_tables(results_dir, task):
        model = table_model(name, table, task)
        extra = f" ({settings[model]})" if model in settings else ""
        titled.append((f"{model}{extra}: every label, tuned lr, paired differences", build_summary(table, known)))
    return titled


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


def _grids(bundle: dict[str, Any], root: Path, labels: dict[tuple[str, str], str],
           runs: set[str]) -> dict[str, list[GridRow]]:
    """Per variant, one row per collected run on the board, named by its label (a T-control and
    the base differ by their label, not only by a hash), then its method if that differs."""
    grids: dict[str, list[GridRow]] = {}
    shown = [g for g in bundle.get("grids", []) if not runs or g["run_id"] in runs]
    models = {g.get("model") for g in shown}
    for grid in shown:
        label = labels.get((str(grid["run_id"]), str(grid["variant"])), grid.get("label") or grid.get("method"))
        label = " · ".join(dict.fromkeys(str(x) for x in (label, grid.get("method")) if x))
        if len(models) > 1:
            label = f"{grid['model']} · {label}"
        cells = [{**{k: v for k, v in cell.items() if k != "image"}, "png": (root / cell["image"]).read_bytes()}
                 for cell in grid["cells"]]
        grids.setdefault(str(grid["variant"]), []).append(
            GridRow(label=label, run_id=grid["run_id"], seed=grid.get("seed"), recipe=grid.get("recipe", {}),
                    cells=cells))
    return grids


def _training(bundle: dict[str, Any], labels: dict[tuple[str, str], str], runs: set[str]) -> list[Figure]:
    """One figure per base × label (the lab's variants of one method apart), a line per seed."""
    by_label: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for log in bundle.get("training", []):
        if runs and log.get("run_id") not in runs:
            continue
        label = next((v for (rid, _), v in labels.items() if rid == log.get("run_id")), str(log["method"]))
        by_label.setdefault((str(log.get("model")), label), []).append({**log, "label": label})
    several = len({model for model, _ in by_label}) > 1
    return [Figure(f"training: {label}" + (f" on {model}" if several else ""),
                   _figure_name(model, label, several),
                   figures.training_figure(f"{label} on {model}", logs))
            for (model, label), logs in by_label.items()]


def _figure_name(model: str, label: str, several: bool) -> str:
    """A file stem for the figure: training-<label> (with the model when the page has several)."""
    stem = f"training-{model}-{label}" if several else f"training-{label}"
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in stem)


def _curves(results_dir: Path, task: str) -> list[Figure]:
    path = results_dir / f"curve-{task}.csv"
    if not path.exists() or path.stat().st_size == 0:
        return []
    df = pd.read_csv(path)
    return [Figure(f"{metric} against fine-tune steps", f"curve-{metric}", figures.metric_curve_figure(df, metric))
            for metric in figures.curve_metrics(df)]
