"""Which way each metric improves, so the page can say ↓/↑ in a header and colour a difference by
whether it is better or worse (a significant FID increase is bad news, not a green cell).

The task's own declaration (`Task.key_metrics`) wins; the common metrics below cover the columns
every task shares and the lab's tables of tasks that declare nothing.
"""
from __future__ import annotations

import re

COMMON = {"fid": "lower", "sfid": "lower", "kid": "lower", "fd_dinov2": "lower", "clean_fid": "lower",
          "inception_score": "higher", "precision": "higher", "recall": "higher", "class_accuracy": "higher",
          "overall": "higher", "correct_images": "higher", "correct_prompts": "higher", "clip_score": "higher",
          "hpsv2": "higher", "hpsv2.1": "higher"}
ARROWS = {"lower": "↓", "higher": "↑"}
#: a lab difference column: delta_<metric>_vs_<reference>
DELTA = re.compile(r"^delta_(?P<metric>.+)_vs_(?P<ref>.+)$")


def directions(task: str) -> dict[str, str]:
    """metric -> 'lower' | 'higher' for `task` (its declared key metrics over the common ones)."""
    found = dict(COMMON)
    try:
        from ..registry import get_registry

        entry = get_registry().get("tasks", task)
    except Exception:  # an unknown or unloadable task: its page still renders with the common ones
        return found
    found.update(dict(getattr(entry.factory, "key_metrics", ()) or ()))
    return found


def metric_of(column: str) -> str:
    """The metric a column is about: `fid` for fid, fid_mean and delta_fid_vs_none alike."""
    match = DELTA.match(column)
    if match:
        return match["metric"]
    for suffix in ("_mean", "_std"):
        if column.endswith(suffix):
            return column[: -len(suffix)]
    return column


def header(column: str, known: dict[str, str]) -> str:
    """The column's header with the better direction: 'fid ↓', 'delta_fid_vs_none (95% CI) ↓'."""
    arrow = ARROWS.get(known.get(metric_of(column.removesuffix(" (95% CI)")), ""), "")
    return f"{column} {arrow}" if arrow else column
