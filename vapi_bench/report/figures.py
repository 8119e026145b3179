"""The report's figures as PNG bytes: training curves per method and metric-vs-step curves.

PNG (not SVG) because matplotlib's PNGs carry no timestamp, so the same inputs give the same bytes
and a rebuilt page is identical to the committed one.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from .. import store

#: training-log keys in the order a reader looks for them; any other numeric key follows
PREFERRED = ["reward_mean", "reward_std", "reward_mse", "reward_perceptual", "ce", "kl", "entropy", "clip_frac",
             "clip_fraction", "grad_norm", "images_per_s", "loss"]
#: per-step bookkeeping that is not a curve worth a panel
SKIPPED = {"step", "step_seconds", "lr"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def curve_keys(logs: list[dict[str, Any]]) -> list[str]:
    """The per-step metrics worth a panel, preferred ones first."""
    found: list[str] = []
    for log in logs:
        for step in log["steps"]:
            found += [k for k in step if k not in found and k not in SKIPPED]
    return [k for k in PREFERRED if k in found] + sorted(k for k in found if k not in PREFERRED)


def training_figure(method: str, logs: list[dict[str, Any]]) -> bytes:
    """One panel per metric; one line per run of `method` (a label and model), named by label and seed."""
    plt = _pyplot()
    keys = curve_keys(logs)
    cols = min(4, max(len(keys), 1))
    rows = max(1, (len(keys) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for log in logs:
            points = [(s["step"], s[key]) for s in log["steps"] if key in s and "step" in s]
            if points:
                ax.plot(*zip(*points), label=f"{log.get('label', log['method'])} seed {log['seed']}", linewidth=1.2)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("step", fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if len(logs) > 1 and keys:
        axes.flat[0].legend(fontsize=6)
    fig.suptitle(method, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def metric_curve_figure(df: pd.DataFrame, metric: str) -> bytes:
    """Metric against optimizer steps, one panel per variant, one line per method (seeds averaged)."""
    plt = _pyplot()
    variants = sorted(df["variant"].dropna().unique()) if "variant" in df else [None]
    fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 3.0), squeeze=False)
    for ax, variant in zip(axes.flat, variants):
        part = df if variant is None else df[df["variant"] == variant]
        for method, rows in part.groupby("method", sort=True):
            mean = rows.groupby("steps")[metric].mean()
            ax.plot(mean.index, mean.values, marker="o", markersize=3, label=str(method))
        ax.set_title(f"{metric}" + (f" ({variant})" if variant else ""), fontsize=9)
        ax.set_xlabel("fine-tune steps", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def curve_metrics(df: pd.DataFrame) -> list[str]:
    """The metric columns of a results/curve-<task>.csv (everything but method/variant/steps/seed)."""
    return [c for c in df.columns if c not in {"method", "variant", "steps", "seed", "model", "config"}
            and pd.api.types.is_numeric_dtype(df[c])]


def write_training_curves(jsonl: Path, png: Path) -> None:
    """A fine-tune's own curves.png: every numeric per-step metric of its training log, one panel each."""
    records = list(store.read_jsonl(jsonl))
    keys = [k for k in records[-1] if k != "step" and isinstance(records[-1][k], (int, float))] if records else []
    if not keys:
        return
    plt = _pyplot()
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    steps = [r.get("step", i) for i, r in enumerate(records)]
    for ax, k in zip(axes.flat, keys):
        ax.plot(steps, [r.get(k, float("nan")) for r in records])
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    store.atomic_write_bytes(png, _png(fig))
