"""The verdict panel: the report's first screen, one per base model and sampling setting.

Built from the lab's summary tables (results/lab-<model>-<task>.csv): per method, its mean ± std
over seeds and its difference to each reference that was run — the base (`none`), SFT, the base
at the temperature matching the method's entropy (`control`) and the base at its tuned temperature
(`tuned_t`) — with the interval and a word: better / worse / not resolved, by the metric's
direction. Two interval kinds exist: newer tables give a seed-level paired-t interval with a
Holm-adjusted p and `real_vs_*` deciding; older ones only the paired bootstrap. The panel uses the
seed-level one where the table has it and says which it used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..lab.results import CONTROL_PREFIX, CURVE_PREFIX, MATCHED_LR_MARK
from ..verdict import UNRESOLVED, verdict_word
from .directions import DELTA

#: the lab's references, in the panel's column order, with the name a reader knows them by
REFERENCES = {"none": "base", "sft": "SFT", "tuned_t": "base at tuned T", "control": "base at matched T"}
#: labels that are references or controls, not methods: shown as rows only where they answer something
BASELINE_LABELS = ("none", "tuned-T")
VARIANTS = {"no-cfg": "without CFG", "cfg": "with CFG"}
SEED_LEVEL = "seed-level paired t interval, Holm-adjusted p < 0.05"
BOOTSTRAP = "paired bootstrap interval (seeds and samples resampled)"
ONE_SEED = "paired bootstrap interval over the samples of one seed (seed-to-seed variation not included)"


@dataclass
class Delta:
    """One difference as the panel shows it."""

    reference: str
    delta: float
    low: float | None
    high: float | None
    word: str
    seed_level: bool

    @property
    def text(self) -> str:
        interval = f" [{_num(self.low)}, {_num(self.high)}]" if self.low is not None and self.high is not None else ""
        return f"{_num(self.delta)}{interval}"


@dataclass
class PanelRow:
    label: str
    value: str  # "mean ± std" of the metric
    seeds: str
    deltas: dict[str, Delta] = field(default_factory=dict)  # reference -> difference


@dataclass
class Panel:
    """One base model × sampling setting."""

    title: str
    model: str
    variant: str
    metric: str
    direction: str | None
    references: list[str]
    rows: list[PanelRow]
    interval: str  # SEED_LEVEL or BOOTSTRAP (or both, when rows differ)
    settings: str = ""  # the model's non-default settings, e.g. model.head_scale=1.2


def table_model(name: str, table: pd.DataFrame, task: str) -> str:
    """The base model of a lab table: its `model` column, else its file name lab-<model>-<task>.csv."""
    if "model" in table and len(table) and not pd.isna(table["model"].iloc[0]):
        return str(table["model"].iloc[0])
    return name.removeprefix("lab-").removesuffix(f"-{task}.csv")


def build_panels(table: pd.DataFrame, directions: dict[str, str], settings: str = "", model: str = "") -> list[Panel]:
    """The panels of one lab summary table (of base `model`, with its non-default `settings`): one
    per variant, methods first, baselines after."""
    metric = _metric(table)
    if metric is None or "label" not in table:
        return []
    references = [r for r in REFERENCES if f"delta_{metric}_vs_{r}" in table]
    direction = directions.get(metric)
    model = model or table_model("", table, "")
    panels = []
    variants = table["variant"].dropna().unique() if "variant" in table else [None]
    for variant in variants:
        part = table if variant is None else table[table["variant"] == variant]
        rows = [_row(line, metric, references, direction) for _, line in part.iterrows() if _shown(str(line["label"]))]
        # VA-π (what the suite is about) first, then the other methods in the table's order, the baselines last
        rows.sort(key=lambda r: (r.label in BASELINE_LABELS, r.label == "none", r.label != "va-pi"))
        kinds = {d.seed_level for r in rows for d in r.deltas.values()}
        bootstrap = BOOTSTRAP if any(r.seeds != "1" for r in rows) else ONE_SEED
        interval = " / ".join(k for k, on in ((SEED_LEVEL, True in kinds), (bootstrap, False in kinds)) if on)
        title = f"{model}{' (' + settings + ')' if settings else ''} · {VARIANTS.get(str(variant), str(variant or ''))}"
        panels.append(Panel(title=title, model=model, variant=str(variant or ""), metric=metric, direction=direction,
                            references=references, rows=rows, interval=interval or BOOTSTRAP, settings=settings))
    return panels


def _metric(table: pd.DataFrame) -> str | None:
    """The table's compared metric: the X of its delta_X_vs_none column."""
    for column in table.columns:
        match = DELTA.match(column)
        if match and match["ref"] == "none":
            return match["metric"]
    return None


def _shown(label: str) -> bool:
    """Methods and the two baselines; T-controls, their curve points and matched-lr rows stay in the
    full tables."""
    return not label.startswith((CONTROL_PREFIX, CURVE_PREFIX)) and MATCHED_LR_MARK not in label


def _row(line: pd.Series, metric: str, references: list[str], direction: str | None) -> PanelRow:
    mean, std = line.get(f"{metric}_mean"), line.get(f"{metric}_std")
    value = "" if pd.isna(mean) else f"{mean:.3f}" + ("" if pd.isna(std) else f" ± {std:.3f}")
    seeds = "" if pd.isna(line.get("seeds")) else str(int(line["seeds"]))
    row = PanelRow(label=str(line["label"]), value=value, seeds=seeds)
    for ref in references:
        delta = _delta(line, f"delta_{metric}_vs_{ref}", ref, direction)
        if delta is not None:
            row.deltas[ref] = delta
    return row


def _delta(line: pd.Series, name: str, ref: str, direction: str | None) -> Delta | None:
    """The difference with the seed-level interval when the table has one, else the bootstrap's."""
    value = _float(line.get(name))
    if value is None:
        return None
    t_low, t_high = _float(line.get(f"{name}_t_low")), _float(line.get(f"{name}_t_high"))
    seed_level = t_low is not None and t_high is not None
    low, high = (t_low, t_high) if seed_level else (_float(line.get(f"{name}_ci_low")), _float(line.get(f"{name}_ci_high")))
    word = verdict_word(value, low, high, direction)
    real = line.get(f"real_vs_{ref}")
    if seed_level and _is_false(real):  # the interval alone does not decide: Holm's p must agree
        word = UNRESOLVED
    return Delta(reference=ref, delta=value, low=low, high=high, word=word, seed_level=seed_level)


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(number) else number


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false") or value == 0


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}".replace("-", "−")
