"""The lab tune's tables: per label and variant, the mean over seeds and every comparison.

Each label is compared with the base (`none`), SFT, the base at its validation-tuned temperature
(`tuned-T`), its own temperature control and, for a matched-lr row, the method whose lr it
borrowed. Every comparison carries two intervals (significance.py): the hierarchical bootstrap
over seeds and samples (`..._ci_low/_ci_high`) and the seed-level paired t (`..._t_low/_t_high`,
`..._p`), Holm-adjusted over the table's whole family of comparisons (`..._p_holm`). A difference
is `real_vs_<ref>` only when its Holm-adjusted seed-level p is below 0.05; `mde_<metric>_vs_<ref>`
is the smallest true difference these seeds would detect with power 0.8.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from ..hashing import stable_hash
from ..progress import console
from ..store import atomic_write_json, read_jsonl, write_csv
from .cost import cost_sentence, write_cost
from .results import CONTROL_PREFIX, CURVE_PREFIX, MATCHED_LR_MARK, SUMMARY_METRICS, TUNED_T, lab_paths
from .significance import (PairedDelta, Statistic, fid_statistic, group_mean_statistic, holm, paired_bootstrap,
                           seed_level_interval)

ALPHA = 0.05


@dataclass
class PairedMetric:
    """What the paired bootstrap needs of a task: row -> its per-unit data (one array per run),
    the statistic of a data array, the column of the data that labels each unit's stratum (None:
    unstratified) and the metric's name in the delta_<metric>_vs_* columns."""

    metric: str
    data: Callable[[dict[str, Any]], np.ndarray]
    statistic: Statistic
    strata_column: Optional[int] = None


def run_record(runs_dir: Path, run_id: str) -> dict[str, Any]:
    return json.loads((runs_dir / run_id / "run.json").read_text())


def variant_keys(runs_dir: Path, row: dict[str, Any]) -> dict[str, str]:
    """The stage keys (sample, score) of a leaderboard row's variant."""
    record = run_record(runs_dir, row["run_id"])
    variants = [r["variant"] for r in record["results"]]
    return record["stage_keys"]["variants"][variants.index(row["variant"])]


def paired_data(task: Any, base: Any, runs_dir: Path, device: str) -> Optional[PairedMetric]:
    """The task's paired data: FID features per sample, or GenEval correctness per prompt; None
    when the task offers neither."""
    if hasattr(task, "sample_features"):
        items = task.items(base)

        def features(row: dict[str, Any]) -> np.ndarray:
            key = variant_keys(runs_dir, row)["sample"]
            return task.sample_features(runs_dir / "samples" / key, items, device)

        reference = task.reference_stats(task.output_size(base) or base.image_size, device)
        return PairedMetric("fid", features, fid_statistic(*reference))
    if hasattr(task, "prompt_accuracy"):
        def correctness(row: dict[str, Any]) -> np.ndarray:
            key = variant_keys(runs_dir, row)["score"]
            return task.prompt_accuracy(read_jsonl(runs_dir / "scores" / key / "per-sample.jsonl"))

        return PairedMetric("overall", correctness, group_mean_statistic, strata_column=0)
    return None


def comparisons(label: str, labels: set[str], matched_to: dict[str, str]) -> dict[str, str]:
    """{comparison name: other label} for one label, among the labels the table has: a method
    against the base, SFT, the tuned-T base, its own temperature control and, when it chose the
    matched-lr method's lr itself, that method; the tuned-T base and a control against the base; a
    matched-lr row against the method whose lr it borrowed; the temperature curve's points describe
    the control's neighbourhood and are compared with nothing."""
    if label == "none" or label.startswith(CURVE_PREFIX):
        return {}
    if MATCHED_LR_MARK in label:
        wanted = {"matched": matched_to.get(label)}
    elif label.startswith(CONTROL_PREFIX) or label == TUNED_T:
        wanted = {"none": "none"}
    else:
        wanted = {"none": "none", "sft": "sft", "tuned_t": TUNED_T, "control": f"{CONTROL_PREFIX}{label}",
                  "matched": matched_to.get(label)}
    return {name: other for name, other in wanted.items() if other in labels and other != label}


class _Bootstrap:
    """The paired bootstrap of label vs other, kept under runs/bootstrap/ by the score stages it
    read, so a second `lab tune` over the same runs (the one that merges parallel jobs) reuses it."""

    def __init__(self, paired: PairedMetric, runs_dir: Path, task: str, reps: int) -> None:
        self.paired, self.runs_dir, self.task, self.reps = paired, runs_dir, task, reps
        self.cache: dict[str, list[np.ndarray]] = {}

    def _data(self, rows: list[dict[str, Any]]) -> list[np.ndarray]:
        key = " ".join(r["run_id"] + r["variant"] for r in rows)
        if key not in self.cache:
            self.cache[key] = [self.paired.data(r) for r in rows]
        return self.cache[key]

    def __call__(self, mine: list[dict[str, Any]], other: list[dict[str, Any]]) -> PairedDelta:
        ident = {"metric": self.paired.metric, "task": self.task, "reps": self.reps, "seed": 0,
                 "a": [variant_keys(self.runs_dir, r)["score"] for r in mine],
                 "b": [variant_keys(self.runs_dir, r)["score"] for r in other]}
        path = self.runs_dir / "bootstrap" / f"{stable_hash(ident)}.json"
        if path.exists():
            return PairedDelta(**json.loads(path.read_text()))
        a, b = self._data(mine), self._data(other)
        strata = None if self.paired.strata_column is None else a[0][:, self.paired.strata_column]
        delta = paired_bootstrap(self.paired.statistic, a, b, reps=self.reps, seed=0, strata=strata)
        atomic_write_json(path, asdict(delta))
        return delta


def write_summary(setup: Any, paired: Optional[PairedMetric], validation_rows: list[dict[str, Any]],
                  test_rows: list[dict[str, Any]], matched_to: dict[str, str]) -> None:
    """Write the lab CSVs (results.py) from the validation and test rows."""
    paths = lab_paths(setup.results_dir, setup.model, setup.task)
    setup.results_dir.mkdir(parents=True, exist_ok=True)
    if validation_rows:
        write_csv(paths.validation, uniform(validation_rows))
    write_csv(paths.seeds, uniform(test_rows))
    df = pd.DataFrame(test_rows)
    labels = set(df["label"])
    bootstrap = _Bootstrap(paired, setup.runs_dir, setup.task, setup.ci_reps) if paired is not None else None
    metric = paired.metric if paired is not None else setup.select_metric
    summary, family = [], []
    tested: set[frozenset[str]] = set()  # each pair of sample sets is one test, whichever row states it

    def rows_of(label: str, variant: str) -> list[dict[str, Any]]:
        return df[(df["label"] == label) & (df["variant"] == variant)].sort_values("seed").to_dict("records")

    def same_rows(label: str, variant: str) -> str:
        """The label whose samples these are: "none" for a control or tuned-T row at the base's own T."""
        return "none" if _same_samples(setup.runs_dir, rows_of(label, variant), rows_of("none", variant)) else label

    for (label, variant), part in df.groupby(["label", "variant"], sort=False):
        row: dict[str, Any] = {"model": setup.model, "task": setup.task, "label": label, "variant": variant,
                               "seeds": int(part["seed"].nunique()), "lr": part["lr"].iloc[0],
                               "lr_grid": part["lr_grid"].iloc[0]}
        for name in SUMMARY_METRICS + ("entropy", "heldout_ce", "matched_temperature", "control_temperature",
                                       "sampling_temperature"):
            if name in part and pd.api.types.is_numeric_dtype(part[name]) and part[name].notna().any():
                row[f"{name}_mean"], row[f"{name}_std"] = part[name].mean(), part[name].std()
        for name, other in comparisons(label, labels, matched_to).items():
            mine, theirs = rows_of(label, variant), rows_of(other, variant)
            if [r["seed"] for r in mine] != [r["seed"] for r in theirs] or metric not in part:
                continue  # only seed-paired comparisons
            pair = frozenset((variant, same_rows(label, variant), same_rows(other, variant)))
            if len(pair) < 3 or pair in tested:
                continue  # Δ = 0 by construction, or a comparison already made: not a test of its own
            tested.add(pair)
            column = f"delta_{metric}_vs_{name}"
            seed_level = seed_level_interval([a[metric] - b[metric] for a, b in zip(mine, theirs)])
            row[column] = seed_level.delta
            if bootstrap is not None:
                boot = bootstrap(mine, theirs)
                row[column], row[f"{column}_ci_low"], row[f"{column}_ci_high"] = boot.delta, boot.ci_low, boot.ci_high
            row[f"{column}_t_low"], row[f"{column}_t_high"] = seed_level.t_low, seed_level.t_high
            row[f"{column}_p"], row[f"mde_{metric}_vs_{name}"] = seed_level.p, seed_level.mde
            family.append((row, name, column))
        summary.append(row)
    for (row, name, column), adjusted in zip(family, holm([r[f"{c}_p"] for r, _, c in family])):
        row[f"{column}_p_holm"] = adjusted
        row[f"real_vs_{name}"] = bool(adjusted < ALPHA)
    for row in summary:
        row["multiplicity"] = f"holm over {len(family)} comparisons"
    write_csv(paths.summary, uniform(summary))
    total = write_cost(paths.cost, setup.runs_dir, validation_rows, test_rows)
    console.print(f"wrote {paths.summary} (+ {paths.seeds.name}, {paths.validation.name}, {paths.cost.name})")
    console.print(f"this table: {cost_sentence(total)}")


def _same_samples(runs_dir: Path, mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> bool:
    """Whether two labels' rows are the very same sample sets, seed by seed (a method whose entropy
    did not move gets its control at T = 1, which is the base): their comparison tests nothing, and
    counting it would only inflate the Holm family."""
    if not mine or [r["seed"] for r in mine] != [r["seed"] for r in theirs]:
        return False
    if not all((runs_dir / str(r["run_id"]) / "run.json").exists() for r in (*mine, *theirs)):
        return False
    return all(variant_keys(runs_dir, a)["sample"] == variant_keys(runs_dir, b)["sample"] for a, b in zip(mine, theirs))


def uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the union of keys in first-seen order (missing = empty), for one CSV header."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k, "") for k in keys} for r in rows]
