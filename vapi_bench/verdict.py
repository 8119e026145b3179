"""The verdict lines that end a comparison run: who wins, by how much, how sure.

A table of means does not say whether a difference is more than noise. For every method of the run
this compares the task's headline metric (its first `key_metrics` entry) against each reference
that ran with it — the base model (`none`), SFT, and the base at a tuned sampling temperature
(`tuned-T`) — as a paired difference with a 95% interval, and says in words whether it is better,
worse, or not resolved at this number of samples and seeds.

Samples are index-seeded (sample i of seed s has the same condition and noise whatever the
weights), so two runs pair row by row. The interval is the lab's paired bootstrap
(lab/significance.py): over the samples within each seed and, with several seeds, over the seeds
too. With one seed it says nothing about seed-to-seed variation, and the closing line says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .lab.significance import PairedDelta, Statistic, fid_statistic, group_mean_statistic, paired_bootstrap
from .run_output import ARROWS, BASE, row_label, signed

#: the references every other row is compared against, in this order, when they ran
REFERENCES = (BASE, "sft", "tuned-T")
REFERENCE_NAMES = {BASE: "base", "sft": "sft", "tuned-T": "tuned-T"}
#: bootstrap replicates: enough for a 95% percentile interval to settle to ~2 digits, cheap on a CPU
REPS = 400
UNRESOLVED = "not resolved at this n"


def verdict_word(delta: float, low: float | None, high: float | None, direction: str | None) -> str:
    """'better' / 'worse' when the interval excludes 0 (by the metric's direction), else unresolved."""
    if low is None or high is None or direction is None or (low <= 0 <= high):
        return UNRESOLVED
    improved = delta < 0 if direction == "lower" else delta > 0
    return "better" if improved else "worse"


@dataclass(frozen=True)
class Comparison:
    """One row of the verdict: `label` minus `reference` on `metric` for one sampling variant."""

    label: str
    reference: str
    variant: str
    metric: str
    direction: str | None
    delta: float
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def word(self) -> str:
        return verdict_word(self.delta, self.ci_low, self.ci_high, self.direction)


@dataclass(frozen=True)
class Verdict:
    """Every comparison of a run, and what its intervals are (for the closing line)."""

    task: str
    comparisons: list[Comparison]
    seeds: list[int]
    samples: int
    interval: str  # how the intervals were made, or why there are none


PairedData = tuple[Callable[[Any, str], np.ndarray], Statistic]


def paired_data(task: Any, metric: str, results: Sequence[Any], device: Any = "cpu") -> Optional[PairedData]:
    """How to read one run's per-sample data for `metric` and the statistic that turns it into the
    metric: shapes-fid's features and FID, GenEval's per-prompt correctness and overall; None when
    the task offers neither (the verdict then gives differences without intervals)."""
    if metric == "fid" and hasattr(task, "sample_features") and hasattr(task, "reference_stats"):
        from .imageio import load_png

        first = results[0]
        size = load_png(task.image_path(next(iter(first.sample_dirs.values())), first.items[0])).shape[0]
        statistic = fid_statistic(*task.reference_stats(size, device))
        return (lambda result, variant: task.sample_features(result.sample_dirs[variant], result.items, device),
                statistic)
    if metric == "overall" and hasattr(task, "prompt_accuracy"):
        from .store import read_jsonl

        return (lambda result, variant: task.prompt_accuracy(read_jsonl(result.score_dirs[variant] / "per-sample.jsonl")),
                group_mean_statistic)
    return None


def compare(labelled: Sequence[tuple[str, Any]], metric: str, direction: str | None, device: Any = "cpu",
            reps: int = REPS) -> Verdict:
    """The verdict of a run: `labelled` holds (label, RunResult) for every method and seed."""
    by_label: dict[str, dict[int, Any]] = {}
    for label, result in labelled:
        for row in result.rows[:1]:
            by_label.setdefault(label, {})[int(row.get("seed", 0))] = result
    results = [r for _, r in labelled if r.rows]
    task = results[0].task if results else None
    data = paired_data(task, metric, results, device) if results else None
    cache: dict[tuple[str, int, str], np.ndarray] = {}

    def arrays(label: str, seeds: list[int], variant: str) -> list[np.ndarray]:
        assert data is not None
        for seed in seeds:
            if (label, seed, variant) not in cache:
                cache[(label, seed, variant)] = data[0](by_label[label][seed], variant)
        return [cache[(label, seed, variant)] for seed in seeds]

    comparisons = []
    for label, reference in _pairs(list(by_label)):
        shared = sorted(set(by_label[label]) & set(by_label[reference]))
        for variant in _variants(by_label[label][shared[0]]) if shared else []:
            values = [_metric(by_label[name][s], variant, metric) for s in shared for name in (label, reference)]
            if any(v is None for v in values):
                continue
            delta = float(np.mean([values[i] - values[i + 1] for i in range(0, len(values), 2)]))
            interval: PairedDelta | None = None
            if data is not None:
                interval = paired_bootstrap(data[1], arrays(label, shared, variant), arrays(reference, shared, variant),
                                            reps=reps)
            comparisons.append(Comparison(label, reference, variant, metric, direction,
                                          interval.delta if interval else delta,
                                          interval.ci_low if interval else None,
                                          interval.ci_high if interval else None))
    seeds = sorted({s for per_seed in by_label.values() for s in per_seed})
    samples = len(results[0].items) if results else 0
    return Verdict(task=str(results[0].rows[0].get("task", "")) if results else "", comparisons=comparisons,
                   seeds=seeds, samples=samples, interval=_interval_text(data is not None, seeds, samples))


def _pairs(labels: list[str]) -> list[tuple[str, str]]:
    """(label, reference) for each method against each reference that ran, then the other
    references against the base (does SFT, does sampling colder, beat it?): methods first, in run order."""
    references = [r for r in REFERENCES if r in labels]
    methods = [label for label in labels if label not in REFERENCES]
    pairs = [(m, r) for m in methods for r in references]
    pairs += [(r, BASE) for r in references if r != BASE and BASE in labels]
    return pairs


def _variants(result: Any) -> list[str]:
    return [str(row.get("variant")) for row in result.rows]


def _metric(result: Any, variant: str, metric: str) -> float | None:
    for row in result.rows:
        if str(row.get("variant")) == variant and isinstance(row.get(metric), (int, float)):
            return float(row[metric])
    return None


def _interval_text(paired: bool, seeds: list[int], samples: int) -> str:
    if not paired:
        return "no intervals: this task gives no per-sample data to pair, so only the differences are shown."
    if len(seeds) == 1:
        return (f"95% intervals: paired bootstrap over the {samples} samples within seed {seeds[0]}; with one seed "
                "they leave out seed-to-seed variation (add --seed 1 --seed 2 to include it).")
    return (f"95% intervals: paired bootstrap over seeds {', '.join(map(str, seeds))} and the {samples} samples "
            "within each.")


def verdict_lines(verdict: Verdict, report: Path | None = None) -> list[str]:
    """The lines a person reads (rich markup): one per comparison, then how sure, then where to look."""
    if not verdict.comparisons:
        return []
    first = verdict.comparisons[0]
    arrow = ARROWS.get(first.direction or "", "")
    better = {"lower": ", lower is better", "higher": ", higher is better"}.get(first.direction or "", "")
    variants = list(dict.fromkeys(c.variant for c in verdict.comparisons))
    where = f" ({variants[0]})" if len(variants) == 1 else ""
    lines = [f"[bold]Verdict[/bold] on {verdict.task}{where}: Δ {first.metric} {arrow}{better}, 95% interval"]
    width = max(len(c.label) for c in verdict.comparisons)
    for c in verdict.comparisons:
        colour = {"better": "green", "worse": "red"}.get(c.word, "yellow")
        interval = (f"[{signed(c.ci_low)}, {signed(c.ci_high)}]" if c.ci_low is not None and c.ci_high is not None
                    else "")
        vs = f"vs {REFERENCE_NAMES.get(c.reference, c.reference)}"
        variant = f" {c.variant:<6}" if len(variants) > 1 else ""
        lines.append(f"  {c.label:<{width}} {vs:<10}{variant} {signed(c.delta):>7} {interval:<17} "
                     f"[{colour}]{c.word}[/{colour}]")
    lines.append(verdict.interval)
    if report is not None:
        lines.append(f"Full report: {report}")
    return lines


#: the lab's column names for the references (lab/results.py): delta_<metric>_vs_<name>
LAB_REFERENCES = {BASE: "none", "sft": "sft", "tuned-T": "tuned_t"}


def summary_rows(verdict: Verdict, labelled: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The verdict in the lab's summary format (lab/results.py: one row per label and variant,
    mean ± std over seeds, delta_<metric>_vs_<ref> with _ci_low/_ci_high and real_vs_<ref>), so the
    report's verdict panel shows a run's comparison exactly as it shows a lab's."""
    metric = verdict.comparisons[0].metric if verdict.comparisons else None
    if metric is None:
        return []
    values: dict[tuple[str, str], list[float]] = {}
    first: dict[str, dict[str, Any]] = {}
    for label, result in labelled:
        for row in result.rows:
            first.setdefault(label, row)
            if isinstance(row.get(metric), (int, float)):
                values.setdefault((label, str(row.get("variant"))), []).append(float(row[metric]))
    rows = []
    for (label, variant), found in values.items():
        line: dict[str, Any] = {"model": first[label].get("model"), "task": verdict.task, "label": label,
                                "variant": variant, "seeds": len(found), f"{metric}_mean": float(np.mean(found)),
                                f"{metric}_std": float(np.std(found, ddof=1)) if len(found) > 1 else None}
        for c in verdict.comparisons:
            if c.label == label and c.variant == variant:
                name = f"delta_{metric}_vs_{LAB_REFERENCES[c.reference]}"
                line.update({name: c.delta, f"{name}_ci_low": c.ci_low, f"{name}_ci_high": c.ci_high,
                             f"real_vs_{LAB_REFERENCES[c.reference]}": c.word != UNRESOLVED})
        rows.append(line)
    return rows


def labelled_results(results: Sequence[Any]) -> list[tuple[str, Any]]:
    """(label, RunResult) for results with rows, labelled as their rows are."""
    return [(row_label(r.rows[0]), r) for r in results if r.rows]
