"""What `vapi-bench run` prints: the task's key metrics, each with its Δ vs the run's base.

A run's full row has a dozen metrics plus bookkeeping (config hash, recipe, evaluator...): at 80
columns every cell of that table was cut. The terminal shows only what the task declares as its
key metrics (`Task.key_metrics`, with the direction that is better, shown as ↓/↑ in the header)
and the difference to the base model of the same run and variant; everything else is in the CSV.
"""
from __future__ import annotations

from typing import Any, Sequence

from rich.table import Table

#: the label of the base model's rows (method `none`)
BASE = "none"
#: shown when a task declares no key metrics: this many of the row's numeric metrics
FALLBACK_METRICS = 3
ARROWS = {"lower": "↓", "higher": "↑"}


def row_label(row: dict[str, Any]) -> str:
    """The name of a comparison's row: its lab or run label if it has one, else its method."""
    label = row.get("label")
    return str(label) if label not in (None, "") else str(row.get("method", ""))


def key_metrics(declared: Sequence[tuple[str, str]], rows: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """The (metric, direction) pairs to show: the task's declared ones present in the rows; without
    a declaration, the first few numeric columns of the rows, direction unknown (None)."""
    present = {k for row in rows for k in row}
    if declared:
        return [(name, direction) for name, direction in declared if name in present]
    from .leaderboard import LEAD_COLUMNS, TAIL_COLUMNS

    numeric = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in LEAD_COLUMNS and k not in TAIL_COLUMNS and not k.endswith("_std")] if rows else []
    return [(name, None) for name in numeric[:FALLBACK_METRICS]]


def is_better(delta: float, direction: str | None) -> bool | None:
    """Whether a difference is an improvement under the metric's direction (None: unknown or 0)."""
    if direction is None or delta == 0:
        return None
    return (delta < 0) if direction == "lower" else (delta > 0)


def signed(value: float) -> str:
    """A difference with its sign always written and a true minus sign, to 3 decimals (the same
    places in every line, so a column of them lines up); very large ones to 4 significant digits."""
    text = f"{value:+.3f}" if abs(value) < 1000 else f"{value:+.4g}"
    return text.replace("-", "−")


def results_table(rows: list[dict[str, Any]], declared: Sequence[tuple[str, str]], title: str = "results") -> Table:
    """One line per row: each key metric as 'value (Δ vs the base of the same variant and seed)'."""
    metrics = key_metrics(declared, rows)
    table = Table(title=title, title_justify="left", caption=_caption(rows, metrics), caption_justify="left")
    table.add_column("method")
    table.add_column("variant")
    for name, direction in metrics:
        table.add_column(f"{name} {ARROWS.get(direction or '', '')}".strip(), justify="right")
    base = {_pair_key(r): r for r in rows if row_label(r) == BASE}
    for row in rows:
        cells = [row_label(row), str(row.get("variant", ""))]
        reference = base.get(_pair_key(row))
        for name, direction in metrics:
            cells.append(_cell(row.get(name), None if reference is None or reference is row else reference.get(name),
                               direction))
        table.add_row(*cells)
    return table


def _pair_key(row: dict[str, Any]) -> tuple[str, str]:
    """Rows compared with each other: the same variant under the same seed (paired samples)."""
    return str(row.get("variant")), str(row.get("seed"))


def _cell(value: Any, reference: Any, direction: str | None) -> str:
    if not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    text = f"{value:.4g}"
    if not isinstance(reference, (int, float)):
        return text
    delta = float(value) - float(reference)
    better = is_better(delta, direction)
    colour = {True: "green", False: "red", None: "default"}[better]
    return f"{text} [{colour}]({signed(delta)})[/{colour}]"


def _caption(rows: list[dict[str, Any]], metrics: list[tuple[str, str | None]]) -> str:
    parts = ["(Δ vs base)" if any(row_label(r) == BASE for r in rows) and len(rows) > 1 else ""]
    if any(d for _, d in metrics):
        parts.append("↓/↑: lower/higher is better")
    seeds = sorted({r.get("seed") for r in rows if r.get("seed") is not None})
    if seeds:
        parts.append(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(str(s) for s in seeds)}")
    parts.append("all metrics: the CSV")
    return " · ".join(p for p in parts if p)
