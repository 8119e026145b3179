"""The report's leaderboard: one row per configuration, mean ± std over seeds, intervals where present.

A row groups every CSV row that shares a configuration (model, method, variant, the lab's `config`
when it writes one, the sampling recipe and the sample budget) and averages over seeds; settings
that differ are never averaged. Confidence intervals are shown for any column pair named
`<name>_ci_low` / `<name>_ci_high`, whatever the lab calls `<name>` (a metric, or a paired
difference such as `delta_fid_vs_none`), so the page needs no change when the lab adds one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..leaderboard import LEAD_COLUMNS, TAIL_COLUMNS
from .directions import metric_of

RECIPE_COLUMNS = ["cfg_scale", "temperature", "top_k", "top_p", "cfg_interval"]
#: columns that tell configurations apart (all that are present are grouped on)
IDENTITY_COLUMNS = [*LEAD_COLUMNS, "label", "config", "lr", "lr_grid", *RECIPE_COLUMNS, "n_samples"]
#: identity columns shown as the row's name
LABEL_COLUMNS = ["model", "method", "label", "variant", "config"]
CI_PATTERN = re.compile(r"^(?P<name>.+)_ci_(?P<end>low|high)$")
#: columns that are neither a metric nor identity: per-run bookkeeping
BOOKKEEPING = set(TAIL_COLUMNS) | {"seeds"}


@dataclass
class Cell:
    """One table cell: what it shows and the number it sorts by (None: sorts as text)."""

    text: str
    sort: float | None = None
    significant: bool | None = None  # an interval that excludes 0 (for differences)
    better: bool | None = None  # for a significant difference: an improvement by the metric's direction?


@dataclass
class Board:
    """The aggregated leaderboard as the page renders it."""

    columns: list[str]
    rows: list[dict[str, Cell]]
    run_ids: list[list[str]] = field(default_factory=list)  # per row: the runs averaged in it
    directions: dict[str, str] = field(default_factory=dict)  # metric -> lower | higher (the headers' ↓/↑)


def interval_names(columns: list[str]) -> list[str]:
    """Names X with both X_ci_low and X_ci_high columns, in column order."""
    ends: dict[str, set[str]] = {}
    for col in columns:
        m = CI_PATTERN.match(col)
        if m:
            ends.setdefault(m["name"], set()).add(m["end"])
    return [name for name, found in ends.items() if found == {"low", "high"}]


def is_difference(name: str) -> bool:
    """A paired difference (shown with a significance mark when its interval excludes 0)."""
    return name.startswith(("delta_", "diff_")) or name.endswith(("_delta", "_diff"))


def _metric_columns(df: pd.DataFrame) -> list[str]:
    """The board's metric columns: numeric, neither identity, bookkeeping nor an interval's end."""
    intervals = interval_names(list(df.columns))
    ci_cols = {f"{n}_ci_{end}" for n in intervals for end in ("low", "high")}
    identity = [c for c in IDENTITY_COLUMNS if c in df.columns]
    metrics = [c for c in df.columns if c not in identity and c not in BOOKKEEPING and c not in ci_cols
               and c not in intervals and pd.api.types.is_numeric_dtype(df[c])]
    # a metric's own within-run spread (kid_std over subsets, inception_score_std over splits) stays
    # in the CSV: next to the spread over seeds it would read as a second error bar
    return [c for c in metrics if not (c.endswith("_std") and c[:-4] in metrics)]


def main_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows the main table shows, and a note for each kind it leaves out.

    Left out: rows without a recorded configuration (`config` blank: written before rows recorded
    one, so nothing says what they ran, e.g. the withdrawn 2026-11-28 rows), and rows repeating
    another row value for value (same model, label, variant, seed and every metric) under a second
    config hash, e.g. a setting recorded once set and once blank: one run counted twice would
    shrink the spread over seeds. The later of two duplicates is kept.
    """
    notes = []
    if "config" in df and df["config"].isna().any() and df["config"].notna().any():
        unrecorded = df["config"].isna()
        notes.append(f"{int(unrecorded.sum())} row(s) without a recorded configuration (written before rows "
                     "recorded one) are left out of the tables; they stay in the CSV.")
        df = df[~unrecorded]
    key = [c for c in ("model", "method", "label", "variant", "seed") if c in df] + _metric_columns(df)
    if "seed" in df and key:
        repeated = df.duplicated(subset=key, keep="last")
        if repeated.any():
            notes.append(f"{int(repeated.sum())} row(s) repeating another row value for value under a second "
                         "config hash are counted once.")
            df = df[~repeated]
    return df, notes


def build_board(df: pd.DataFrame, budgets: dict[str, str] | None = None,
                directions: dict[str, str] | None = None) -> Board:
    """Aggregate CSV rows into a Board; `budgets` maps run_id -> the fine-tune budget text,
    `directions` metric -> lower | higher (colours a significant difference as better or worse)."""
    if df.empty:
        return Board(columns=[], rows=[])
    intervals = interval_names(list(df.columns))
    identity = [c for c in IDENTITY_COLUMNS if c in df.columns]
    metrics = _metric_columns(df)
    labels = [c for c in LABEL_COLUMNS if c in identity]
    columns = labels + metrics + [f"{n} (95% CI)" for n in intervals] + ["seeds", "recipe", "budget"]
    rows, run_ids = [], []
    for _, group in df.groupby(identity, dropna=False, sort=False):
        first = group.iloc[0]
        row = {c: Cell(_text(first[c])) for c in labels}
        for m in metrics:
            row[m] = _mean_std(group[m])
        for name in intervals:
            row[f"{name} (95% CI)"] = _interval(group, name, directions or {})
        seeds = group["seed"].nunique() if "seed" in group else len(group)
        row["seeds"] = Cell(str(seeds), float(seeds))
        row["recipe"] = Cell(recipe_text(first))
        ids = [str(r) for r in group["run_id"].dropna()] if "run_id" in group else []
        row["budget"] = Cell(_budget(first, group, ids, budgets or {}))
        rows.append(row)
        run_ids.append(ids)
    return Board(columns=columns, rows=rows, run_ids=run_ids, directions=dict(directions or {}))


def build_summary(df: pd.DataFrame, directions: dict[str, str] | None = None) -> Board:
    """A table the lab already aggregated (one row per line): `<m>_mean`/`<m>_std` pairs become
    'mean ± std', `<x>_ci_low`/`<x>_ci_high` pairs an interval, other columns stay as they are
    (`real_vs_*` flags are left out: the interval's mark says the same)."""
    intervals = interval_names(list(df.columns))
    means = [c[:-5] for c in df.columns if c.endswith("_mean") and f"{c[:-5]}_std" in df.columns]
    hidden = ({f"{n}_ci_{e}" for n in intervals for e in ("low", "high")} | set(intervals)
              | {f"{m}_{s}" for m in means for s in ("mean", "std")} | {c for c in df.columns if c.startswith("real_vs_")})
    plain = [c for c in df.columns if c not in hidden]
    columns = plain + means + [f"{n} (95% CI)" for n in intervals]
    rows = []
    for _, line in df.iterrows():
        row = {c: Cell(_text(line[c]), float(line[c]) if _is_number(line[c]) else None) for c in plain}
        for m in means:
            mean, std = line[f"{m}_mean"], line[f"{m}_std"]
            row[m] = (Cell("") if pd.isna(mean) else
                      Cell(f"{mean:.4g}" + ("" if pd.isna(std) else f" ± {std:.2g}"), float(mean)))
        for name in intervals:
            row[f"{name} (95% CI)"] = _interval(line.to_frame().T, name, directions or {})
        rows.append(row)
    return Board(columns=columns, rows=rows, directions=dict(directions or {}))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not pd.isna(value)


def recipe_text(row: pd.Series | dict[str, Any]) -> str:
    """The sampling recipe in one line, e.g. 'cfg 2, T 1, top-k 0, top-p 1'."""
    names = {"cfg_scale": "cfg", "temperature": "T", "top_k": "top-k", "top_p": "top-p", "cfg_interval": "cfg until"}
    parts = [f"{label} {_text(row[col])}" for col, label in names.items()
             if col in row and not pd.isna(row[col]) and not (col == "cfg_interval" and row[col] == -1)]
    return ", ".join(parts)


def _budget(first: pd.Series, group: pd.DataFrame, run_ids: list[str], budgets: dict[str, str]) -> str:
    parts = []
    if "n_samples" in first and not pd.isna(first["n_samples"]):
        parts.append(f"{int(first['n_samples'])} samples")
    trained = next((budgets[r] for r in run_ids if r in budgets), "")
    if trained:
        parts.append(trained)
    if "lr" in first and not pd.isna(first["lr"]):  # the lab's tuned lr and the grid it was chosen from
        grid = f" (chosen from {first['lr_grid']})" if "lr_grid" in first and not pd.isna(first["lr_grid"]) else ""
        parts.append(f"tuned lr {_text(first['lr'])}{grid}")
    if "tune_minutes" in group and group["tune_minutes"].fillna(0).max() > 0:
        parts.append(f"{group['tune_minutes'].mean():.2g} min tuning")
    return "; ".join(parts)


def _mean_std(values: pd.Series) -> Cell:
    values = values.dropna()
    if values.empty:
        return Cell("")
    mean = float(values.mean())
    text = f"{mean:.4g}" if len(values) < 2 else f"{mean:.4g} ± {float(values.std()):.2g}"
    return Cell(text, mean)


def _interval(group: pd.DataFrame, name: str, directions: dict[str, str]) -> Cell:
    low = pd.to_numeric(group[f"{name}_ci_low"], errors="coerce").dropna()
    high = pd.to_numeric(group[f"{name}_ci_high"], errors="coerce").dropna()
    if low.empty or high.empty:
        return Cell("")
    lo, hi = float(low.mean()), float(high.mean())
    centre = (float(pd.to_numeric(group[name], errors="coerce").dropna().mean())
              if name in group and pd.to_numeric(group[name], errors="coerce").notna().any() else (lo + hi) / 2)
    significant = (lo > 0 or hi < 0) if is_difference(name) else None
    direction = directions.get(metric_of(name))
    better = None if not significant or direction is None else (centre < 0) == (direction == "lower")
    return Cell(f"{centre:.3g} [{lo:.3g}, {hi:.3g}]", centre, significant, better)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:g}"
    return str(value)
