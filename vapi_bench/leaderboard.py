"""Leaderboard CSVs (one per task under results/): locked appends, rendering as table/CSV/MD/JSON.

Appends take a file lock and add whole lines, so concurrent runs never lose or interleave a row; a
new column (a task whose metrics change) rewrites the file atomically with the union of columns,
every old value kept as the string it was. Boards are read without type guessing for identity
columns (TEXT_COLUMNS), so a config hash `077362267027` or run id `0012` stays what it is; a torn
last line (a writer killed mid-line) is named and never read as a row.

A row carries its configuration identity (`config`, see spec.config_identity) next to readable
descriptions of it; summaries average over the seeds of one configuration only, and a re-run of
the same seed and configuration counts once.
"""
from __future__ import annotations

import csv
import difflib
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from filelock import FileLock

from .errors import DataError, UsageError
from .integrity import warn
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
#: columns read as the strings on disk, never as numbers (a hash or run id of digits is not one)
TEXT_COLUMNS = frozenset([*LEAD_COLUMNS, IDENTITY_COLUMN, "settings", "evaluator", "evaluator_version", "run_id",
                          "date"])
_INTEGER = re.compile(r"[+-]?\d+")


def leaderboard_path(results_dir: Path, task: str) -> Path:
    return Path(results_dir) / f"leaderboard-{task}.csv"


@dataclass
class _Lines:
    """A board as written: its header and every complete row, each value the string on disk."""

    header: list[str]
    rows: list[list[str]]
    torn: bool  # its last line was torn (and is not in `rows`)


def _board_error(path: Path, what: str) -> DataError:
    return DataError(f"The leaderboard {path} is not a readable CSV ({what}). Repair it (or move it aside) and "
                     "try again; each run's rows are also kept in its runs/<run-id>/run.json.")


def _read_lines(path: Path) -> _Lines:
    """Parse a board without interpreting any value.

    A last line without its newline, or with another number of fields than the header, is what a
    writer stopped mid-line leaves: it is named in a warning and left out. Any other malformed line
    is a DataError naming it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _board_error(path, f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise DataError(f"Cannot read the leaderboard {path} ({exc.strerror or exc}).") from None
    complete, tail = text, ""
    if "\n" in text.rstrip("\n") and not text.endswith("\n"):  # more than a header, and the end cut off
        complete, tail = text[:text.rindex("\n") + 1], text[text.rindex("\n") + 1:]
    (_, header), *rows = _records(path, complete)
    torn_line, why = (text.count("\n") + 1, "no newline at its end") if tail else (None, "")
    if rows and not tail and len(rows[-1][1]) != len(header):
        torn_line, why = rows[-1][0], f"{len(rows[-1][1])} fields where the header has {len(header)}"
        rows.pop()
    for line, fields in rows:
        if len(fields) != len(header):
            raise _board_error(path, f"line {line} has {len(fields)} fields where the header has {len(header)}")
    if torn_line is not None:
        warn(f"{path} line {torn_line} is torn ({why}; a writer stopped mid-line?): it is not read as a row, "
             "and an append rewrites the board without it.")
    return _Lines(header, [fields for _, fields in rows], torn_line is not None)


def _records(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank CSV record of `text`, the header first."""
    reader = csv.reader(io.StringIO(text), strict=True)
    records = []
    try:
        for fields in reader:
            if fields:
                records.append((reader.line_num, fields))
    except csv.Error as exc:
        raise _board_error(path, f"line {reader.line_num}: {exc}") from None
    if not records:
        raise _board_error(path, "no header line")
    return records


def _text_frame(path: Path) -> pd.DataFrame:
    """A board as strings: every value as written, an empty field as missing (None)."""
    lines = _read_lines(path)
    return pd.DataFrame([[v if v != "" else None for v in row] for row in lines.rows], columns=lines.header,
                        dtype=object)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Numbers where the analysis needs them: TEXT_COLUMNS stay the strings on disk (a config hash
    of digits keeps its leading zero and never becomes a float or inf); every other column whose
    values are all numbers becomes Int64 (all integers) or float64, and stays text otherwise."""
    out = df.copy()
    for column in df.columns:
        if column not in TEXT_COLUMNS:
            out[column] = _numbers(df[column])
    return out


def _numbers(values: pd.Series) -> pd.Series:
    """The column as numbers when every value is one ("nan" and "inf" included), else unchanged."""
    try:
        floats = [math.nan if v is None else float(v) for v in values]
    except ValueError:
        return values
    if all(v is None or _INTEGER.fullmatch(v) for v in values):
        try:
            return pd.Series(pd.array([None if v is None else int(v) for v in values], dtype="Int64"),
                             index=values.index)
        except OverflowError:  # beyond int64: a float is the best it gets
            pass
    return pd.Series(floats, index=values.index, dtype="float64")


def read_board(path: Path) -> pd.DataFrame:
    """One leaderboard CSV, identity columns as written; a file that is not a readable CSV raises
    DataError naming it (and the line)."""
    return _typed(_text_frame(Path(path)))


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
    """Append rows to the CSV at `path` under a lock, leaving every existing line as written.

    A row whose `identity` columns (default: run_id, variant) match a row already on the board
    replaces it: re-running a cached spec refreshes its row instead of counting the same run twice.
    A table where one run may stand in several rows (an ablation's shared base model) adds the
    columns that tell those rows apart. New lines are appended to the file; only a replaced row, a
    new column or a torn last line rewrites it (atomically, every other value kept as its string).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = [{k: _field(v) for k, v in row.items()} for row in rows]
    with FileLock(str(path) + ".lock", timeout=120):
        if not path.exists() or path.stat().st_size == 0:
            header = _ordered(c for row in new for c in row)
            atomic_write_text(path, _csv_text([header, *_aligned(header, _latest(new, identity, header))]))
            return
        board = _read_lines(path)
        old = [dict(zip(board.header, fields)) for fields in board.rows]
        header = board.header
        if any(c not in header for row in new for c in row):
            header = _ordered([*header, *(c for row in new for c in row)])
        new = _latest(new, identity, header)
        replaced = {_key(row, identity, header) for row in new} if _replaces(identity, header) else set()
        kept = [row for row in old if _key(row, identity, header) not in replaced]
        if header == board.header and len(kept) == len(old) and not board.torn:
            _append_text(path, _csv_text(_aligned(header, new)))
        else:
            atomic_write_text(path, _csv_text([header, *_aligned(header, kept + new)]))


def _field(value: Any) -> str:
    """A value as the board stores it: missing as empty, everything else as str() gives it."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value)


def _replaces(identity: tuple[str, ...], header: list[str]) -> bool:
    """Rows replace each other only when the board tells runs apart (it has a run_id column)."""
    return "run_id" in identity and "run_id" in header


def _key(row: dict[str, str], identity: tuple[str, ...], header: list[str]) -> tuple[str, ...]:
    return tuple(row.get(c, "") for c in identity if c in header)


def _latest(rows: list[dict[str, str]], identity: tuple[str, ...], header: list[str]) -> list[dict[str, str]]:
    """The rows, of several with one identity only the last."""
    if not _replaces(identity, header):
        return rows
    last = {_key(row, identity, header): i for i, row in enumerate(rows)}
    return [row for i, row in enumerate(rows) if last[_key(row, identity, header)] == i]


def _aligned(header: list[str], rows: list[dict[str, str]]) -> list[list[str]]:
    return [[row.get(c, "") for c in header] for row in rows]


def _csv_text(lines: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue()


def _append_text(path: Path, text: str) -> None:
    """One write of whole lines, flushed to disk: a reader sees a torn line at worst, never a mix."""
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def load(results_dir: Path, task: str | None = None) -> pd.DataFrame:
    """All rows of one task (or of every task) as a DataFrame (identity columns as text)."""
    files = [leaderboard_path(results_dir, task)] if task else sorted(Path(results_dir).glob("leaderboard-*.csv"))
    frames = [_text_frame(f) for f in files if f.exists() and f.stat().st_size > 0]
    if not frames:
        return pd.DataFrame()
    df = _typed(pd.concat(frames, ignore_index=True))
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
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.4g}"
    return str(value)
