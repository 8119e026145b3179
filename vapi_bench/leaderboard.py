"""Leaderboard CSVs (one per task under results/): locked appends, rendering as table/CSV/MD/JSON.

Appends take a file lock and rewrite the file atomically with the union of columns, so concurrent
runs never lose or interleave a row and a task whose metrics change still keeps every old row.

A row carries its configuration identity (`config`, see spec.config_identity) next to readable
descriptions of it; summaries average over the seeds of one configuration only, and a re-run of
the same seed and configuration counts once.
"""
from __future__ import annotations

import difflib
import io
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from filelock import FileLock

from .errors import DataError, UsageError
from .store import atomic_write_text

#: columns shown first, in this order; every other column (the metrics) follows
LEAD_COLUMNS = ["model", "method", "task", "variant"]
#: the configuration identity of a row (a hash: spec.config_identity)
IDENTITY_COLUMN = "config"
#: readable facts of a configuration: constant within one `config`, shown once per summary row.
#: A helper adding such a column (a chosen learning rate, a tuning grid) appends it here.
DESCRIPTIVE_COLUMNS = [
    "settings", "lr", "n_samples", "cfg_scale", "temperature", "top_k", "top_p", "cfg_interval",
    "evaluator", "evaluator_version",
]
#: the descriptive columns a summary shows (the others only keep configurations apart)
SUMMARY_COLUMNS = ["settings", "lr"]
#: facts of one run, not of its configuration (never averaged, never grouped by)
PER_RUN_COLUMNS = ["seed", "tune_minutes", "run_id", "date"]
TAIL_COLUMNS = [IDENTITY_COLUMN, *DESCRIPTIVE_COLUMNS, *PER_RUN_COLUMNS]
#: what a row written before configuration identity existed is marked with in summaries
UNRECORDED = "unrecorded"


def leaderboard_path(results_dir: Path, task: str) -> Path:
    return Path(results_dir) / f"leaderboard-{task}.csv"


def read_board(path: Path) -> pd.DataFrame:
    """One leaderboard CSV; a file that is not a readable CSV raises DataError naming it."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"The leaderboard {path} is not a readable CSV ({first}). Repair it (or move it "
                        "aside) and try again; each run's rows are also kept in its runs/<run-id>/run.json.") from None
    except OSError as exc:
        raise DataError(f"Cannot read the leaderboard {path} ({exc.strerror or exc}).") from None


def check_task_name(results_dir: Path, task: str, known: list[str]) -> None:
    """An unknown task name (neither a registered task nor a board in results_dir) is a UsageError
    with the nearest names, as every other unknown name is."""
    boards = [p.name[len("leaderboard-"):-len(".csv")] for p in Path(results_dir).glob("leaderboard-*.csv")]
    names = sorted(set(known) | set(boards))
    if task in names:
        return
    near = difflib.get_close_matches(task, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    raise UsageError(f"Unknown task '{task}'.{hint} Known tasks: {', '.join(names) or 'none'}.")


def _ordered(columns: Iterable[str]) -> list[str]:
    cols = list(dict.fromkeys(columns))
    metrics = [c for c in cols if c not in LEAD_COLUMNS and c not in TAIL_COLUMNS]
    return [c for c in LEAD_COLUMNS if c in cols] + metrics + [c for c in TAIL_COLUMNS if c in cols]


def append_rows(path: Path, rows: list[dict[str, Any]],
                identity: tuple[str, ...] = ("run_id", "variant")) -> None:
    """Append rows to the CSV at `path` under a lock (atomic rewrite with the union of columns).

    A row whose `identity` columns (default: run_id, variant) match a row already on the board
    replaces it: re-running a cached spec refreshes its row instead of counting the same run twice.
    A table where one run may stand in several rows (an ablation's shared base model) adds the
    columns that tell those rows apart.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        frames = []
        if path.exists() and path.stat().st_size > 0:
            frames.append(read_board(path))
        frames.append(pd.DataFrame(rows))
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        key = [c for c in identity if c in df.columns]
        if "run_id" in key:
            df = df.drop_duplicates(subset=key, keep="last").reset_index(drop=True)
        df = df[_ordered(df.columns)]
        atomic_write_text(path, df.to_csv(index=False))


def load(results_dir: Path, task: str | None = None) -> pd.DataFrame:
    """All rows of one task (or of every task) as a DataFrame."""
    files = [leaderboard_path(results_dir, task)] if task else sorted(Path(results_dir).glob("leaderboard-*.csv"))
    frames = [read_board(f) for f in files if f.exists() and f.stat().st_size > 0]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    return df[_ordered(df.columns)]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over the distinct seeds of each configuration.

    Groups by model, method, task, variant, `config` and the descriptive columns present; a seed
    run twice with one configuration counts once (the latest row). Rows written before `config`
    existed are grouped by what they carry, marked `unrecorded`, and `attrs["notes"]` says so
    (they may mix settings that nothing recorded apart).
    """
    if df.empty:
        return df
    df = df.copy()
    notes: list[str] = []
    if IDENTITY_COLUMN not in df.columns:
        df[IDENTITY_COLUMN] = pd.NA
    legacy = df[IDENTITY_COLUMN].isna()
    if legacy.any():
        df[IDENTITY_COLUMN] = df[IDENTITY_COLUMN].astype(object).where(~legacy, UNRECORDED)
        notes.append(f"{int(legacy.sum())} row(s) predate configuration identity (no `config` column): they are "
                     f"grouped by model, method, task, variant and the sampling and evaluation columns they carry, "
                     f"so they may mix settings.")
    keys = [c for c in [*LEAD_COLUMNS, IDENTITY_COLUMN, *DESCRIPTIVE_COLUMNS] if c in df.columns]
    if "seed" in df.columns:
        recorded = df[df[IDENTITY_COLUMN] != UNRECORDED]
        latest = recorded.drop_duplicates(subset=[*keys, "seed"], keep="last")
        repeats = len(recorded) - len(latest)
        if repeats:
            notes.append(f"{repeats} row(s) repeat a seed of the same configuration; the latest of each is used.")
        df = pd.concat([latest, df[df[IDENTITY_COLUMN] == UNRECORDED]], ignore_index=True)
    numeric = [c for c in df.columns if c not in keys and c not in TAIL_COLUMNS
               and pd.api.types.is_numeric_dtype(df[c])]
    grouped = df.groupby(keys, dropna=False, sort=False)
    mean, std = grouped[numeric].mean(), grouped[numeric].std()
    out = mean.copy()
    for c in numeric:
        out[c] = [_fmt(m, s) for m, s in zip(mean[c], std[c])]
    out["seeds"] = grouped["seed"].nunique(dropna=False) if "seed" in df.columns else grouped.size()
    out = out.reset_index()
    lead = [c for c in [*LEAD_COLUMNS, IDENTITY_COLUMN] if c in out.columns]
    out = out[lead + numeric + ["seeds"] + [c for c in SUMMARY_COLUMNS if c in keys]]
    out.attrs["notes"] = notes
    return out


def _fmt(mean: float, std: float) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.4g}" if pd.isna(std) else f"{mean:.4g} ± {std:.2g}"


def render(df: pd.DataFrame, fmt: str) -> str:
    """Render as 'csv', 'md' (Markdown) or 'json'; 'table' is handled by the CLI with rich."""
    if fmt == "csv":
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        return buf.getvalue()
    if fmt == "json":
        return df.to_json(orient="records", indent=2)
    if fmt == "md":
        return _markdown(df)
    raise ValueError(f"unknown format {fmt!r}")


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.4g}"
    return str(value)
