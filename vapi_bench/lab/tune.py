"""`lab tune` end to end: tune every method alike, run the chosen settings, the controls and the CIs.

Writes, under the results directory (<m> = model, <t> = task; the format: results.py):
- lab-<m>-<t>-validation.csv: every grid point's validation rows (label, lr, lr_grid, chosen);
- lab-<m>-<t>-seeds.csv: the test rows per seed of the base, every method at its chosen lr and the
  temperature controls (with the teacher-forced entropy / held-out CE of each fine-tuned policy);
- lab-<m>-<t>.csv: per label and variant, mean and std over seeds, the chosen lr and the grid, and
  the paired differences delta_<metric>_vs_none / _vs_sft / _vs_control with their 95% bootstrap
  interval (..._ci_low, ..._ci_high) and real_vs_* (the interval excludes 0); <metric> is fid for
  tasks that give per-sample features (shapes-fid: seeds and images resampled) and overall for
  GenEval tasks (per-prompt correctness: seeds and prompts resampled, prompts within their tag);
and appends the test rows (with label, lr, lr_grid) to the task's leaderboard.
Every run goes through the ordinary runner, so an interrupted or repeated `lab tune` reuses every
finished stage; methods can be tuned in separate processes and the report redone by one call with
all of them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import UsageError
from ..hashing import stable_hash
from ..leaderboard import append_rows, leaderboard_path
from ..progress import console
from ..store import atomic_write_json, write_csv
from ..training.losses import teacher_forced_ce
from ..training.recipes import recipe_lr as lookup_recipe_lr
from .protocol import LabMethod, choose, lr_grid, parse_lab_method
from .results import REFERENCES, SUMMARY_METRICS, lab_paths
from .significance import PairedDelta, Statistic, fid_statistic, group_mean_statistic, paired_bootstrap


@dataclass
class TuneSetup:
    model: str
    task: str
    methods: list[str]
    lr_factors: list[float]
    lr_center: Optional[float]
    tune_seed: int
    seeds: list[int]
    select_metric: str
    select_variant: Optional[str]
    select_mode: str
    validate: dict[str, str]
    overrides: dict[str, str]
    controls: bool
    control_n: int
    ci_reps: int
    runs_dir: Path
    results_dir: Path
    device: str
    batch_size: int
    precision: str = "auto"


RunFn = Callable[..., list[dict[str, Any]]]


def _model_params(overrides: dict[str, str]) -> dict[str, str]:
    return {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("model.")}


def _generator(setup: TuneSetup) -> Any:
    from .. import load_generator
    from ..params import resolve_params
    from ..registry import get_registry

    entry = get_registry().get("generators", setup.model)
    params = resolve_params(entry.params, _model_params(setup.overrides), f"model '{setup.model}'")
    return load_generator(setup.model, device=setup.device, **params)


def recipe_lr(generator: Any, method: str) -> float:
    """The centre of a method's lr grid: the lr its recipe lookup gives this generator (on the
    shapes world every method follows the same rule, vapi_bench.training.post_training_lr)."""
    from ..registry import get_registry

    return lookup_recipe_lr(get_registry().get("methods", method).name, generator)


def load_task_of(name: str, overrides: dict[str, str]) -> Any:
    """The task as the lab's test runs build it: its parameters with the task.* overrides."""
    from .. import load_task

    return load_task(name, **{k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("task.")})


def _pick(rows: list[dict[str, Any]], variant: Optional[str], where: str) -> dict[str, Any]:
    if variant is None:
        if len(rows) == 1:
            return rows[0]
        raise UsageError(f"lab tune: {where} has several variants ({[r['variant'] for r in rows]}); "
                         "pass --select-variant.")
    for row in rows:
        if row["variant"] == variant:
            return row
    raise UsageError(f"lab tune: {where} has no '{variant}' row (variants: {[r['variant'] for r in rows]}); "
                     "check --select-variant and --validate.")


def run_tune(setup: TuneSetup, run: RunFn) -> None:
    labs = [parse_lab_method(m) for m in setup.methods]
    base = _generator(setup)
    common = dict(runs_dir=setup.runs_dir, results_dir=setup.results_dir, device=setup.device,
                  leaderboard=False, batch_size=setup.batch_size, precision=setup.precision)
    base_over = {k: v for k, v in setup.overrides.items() if k.startswith(("task.", "model."))}
    validation_rows: list[dict[str, Any]] = []
    test_rows: list[dict[str, Any]] = []
    for seed in setup.seeds:
        test_rows += [{**r, "label": "none", "lr": "", "lr_grid": ""}
                      for r in run(setup.model, "none", setup.task, seed, base_over, **common)]
    # the base on the validation setting too: what the grid points are read against
    validation_rows += [{**r, "label": "none", "lr": "", "lr_grid": "", "chosen": ""}
                        for r in run(setup.model, "none", setup.task, setup.tune_seed,
                                     {**base_over, **{k: v for k, v in setup.validate.items() if k.startswith("task.")}},
                                     **common)]
    for lab in labs:
        grid = lr_grid(setup.lr_center or recipe_lr(base, lab.method), setup.lr_factors)
        grid_text = " ".join(f"{lr:g}" for lr in grid)
        scores: dict[float, float] = {}
        tried = []
        for lr in grid:
            over = {**setup.overrides, **lab.overrides, "method.lr": f"{lr:g}", **setup.validate}
            rows = run(setup.model, lab.method, setup.task, setup.tune_seed, over, **common)
            scores[lr] = float(_pick(rows, setup.select_variant, f"{lab.label} lr={lr:g}")[setup.select_metric])
            tried += [{**r, "label": lab.label, "lr": lr, "lr_grid": grid_text} for r in rows]
        chosen = choose(scores, setup.select_mode)
        validation_rows += [{**r, "chosen": r["lr"] == chosen} for r in tried]
        console.print(f"{lab.label}: validation {setup.select_metric} "
                      + ", ".join(f"lr {lr:g} {s:.4g}" for lr, s in scores.items()) + f" -> lr {chosen:g}")
        for seed in setup.seeds:
            over = {**setup.overrides, **lab.overrides, "method.lr": f"{chosen:g}"}
            test_rows += [{**r, "label": lab.label, "lr": chosen, "lr_grid": grid_text}
                          for r in run(setup.model, lab.method, setup.task, seed, over, **common)]
    if setup.controls:
        test_rows += temperature_controls(setup, base, labs, test_rows, run, common, base_over, validation_rows)
    for row in test_rows:
        row["tuned_on"] = " ".join(f"{k}={v}" for k, v in setup.validate.items()) if row["lr"] != "" else ""
    write_report(setup, base, validation_rows, test_rows)
    append_rows(leaderboard_path(setup.results_dir, setup.task),
                [{k: v for k, v in r.items() if k not in ("entropy", "heldout_ce", "matched_temperature")}
                 for r in test_rows])


# ---- the temperature control ------------------------------------------------------------------


def _run_record(runs_dir: Path, run_id: str) -> dict[str, Any]:
    return json.loads((runs_dir / run_id / "run.json").read_text())


def _heldout(setup: TuneSetup, generator: Any) -> tuple[Any, list[Any]]:
    """The generator's default dataset, held-out 'test' split, first control_n items."""
    from ..params import resolve_params
    from ..registry import get_registry
    from .temperature import heldout_set

    entry = get_registry().get("datasets", generator.default_dataset)
    names = {p.name for p in entry.params}
    if "split" not in names:
        raise UsageError(f"lab tune --controls: dataset '{entry.name}' has no held-out split; use --no-controls.")
    given = {"split": "test", "n": str(setup.control_n)}
    for size_key in ("image_size", "size"):
        if size_key in names:
            given[size_key] = str(generator.image_size)
    dataset = entry.factory(**resolve_params(entry.params, {k: v for k, v in given.items() if k in names}, entry.name))
    return heldout_set(dataset, setup.control_n)


def temperature_controls(setup: TuneSetup, base: Any, labs: list[LabMethod], test_rows: list[dict[str, Any]],
                         run: RunFn, common: dict[str, Any], base_over: dict[str, str],
                         validation_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per trained label: the mean teacher-forced entropy of its fine-tuned policies, the base
    temperature with that entropy, and the base sampled there on every test seed. Every grid point
    of the validation table gets its entropy and matched temperature too (how far each lr moved
    the policy)."""
    from .temperature import TemperatureCurve, cached_policy_stats, policy_stats, teacher_forced_logits

    images, conditions = _heldout(setup, base)
    heldout_key = stable_hash({"dataset": base.default_dataset, "split": "test", "n": setup.control_n,
                               "image_size": base.image_size, "model": _model_params(setup.overrides),
                               "device": next(base.policy.parameters()).device.type})
    base_logits, base_tokens = teacher_forced_logits(base, images, conditions)
    curve = TemperatureCurve(base_logits)
    base_stats = {"entropy": curve.entropy(1.0), "heldout_ce": float(teacher_forced_ce(base_logits, base_tokens))}
    for row in test_rows + validation_rows:
        if row["label"] == "none":
            row.update(base_stats)

    def annotate(rows: list[dict[str, Any]], label: str) -> list[Any]:
        stats = []
        for run_id in dict.fromkeys(r["run_id"] for r in rows if r["label"] == label):
            stage = setup.runs_dir / "finetune" / _run_record(setup.runs_dir, run_id)["stage_keys"]["finetune"]

            def compute(weights: Path = stage / "weights") -> Any:
                tuned = _generator(setup)
                tuned.load_finetuned(weights)
                return policy_stats(tuned, images, conditions)

            stats.append((run_id, cached_policy_stats(stage, heldout_key, compute)))
        matched = {run_id: round(curve.temperature_for(s.entropy), 3) for run_id, s in stats}
        for row in rows:
            for run_id, s in stats:
                if row["run_id"] == run_id:
                    row["entropy"], row["heldout_ce"] = s.entropy, s.heldout_ce
                    row["matched_temperature"] = matched[run_id]
        return stats

    out = []
    for lab in labs:
        annotate(validation_rows, lab.label)
        stats = annotate(test_rows, lab.label)
        entropy = float(np.mean([s.entropy for _, s in stats]))
        temperature = round(curve.temperature_for(entropy), 2)
        console.print(f"{lab.label}: teacher-forced entropy {entropy:.4f} = base at T={temperature:g}")
        if temperature == 1.0:
            continue  # the base itself is the control (to two decimals)
        over = {**base_over, "sampling.temperature": f"{temperature:g}"}
        for seed in setup.seeds:
            out += [{**r, "label": f"T-control:{lab.label}", "lr": "", "lr_grid": "", "control_temperature": temperature}
                    for r in run(setup.model, "none", setup.task, seed, over, **common)]
    return out


# ---- the report -------------------------------------------------------------------------------


@dataclass
class PairedMetric:
    """What the paired bootstrap needs of a task: row -> its per-unit data (one array per run),
    the statistic of a data array, the column of the data that labels each unit's stratum (None:
    unstratified) and the metric's name in the delta_<metric>_vs_* columns."""

    metric: str
    data: Callable[[dict[str, Any]], np.ndarray]
    statistic: Statistic
    strata_column: Optional[int] = None


def _variant_keys(runs_dir: Path, row: dict[str, Any]) -> dict[str, str]:
    """The stage keys (sample, score) of a leaderboard row's variant."""
    record = _run_record(runs_dir, row["run_id"])
    variants = [r["variant"] for r in record["results"]]
    return record["stage_keys"]["variants"][variants.index(row["variant"])]


def _paired_data(setup: TuneSetup, base: Any) -> Optional[PairedMetric]:
    """The task's paired data: FID features per sample, or GenEval correctness per prompt; None
    when the task offers neither."""
    from ..store import read_jsonl

    task = load_task_of(setup.task, setup.overrides)
    if hasattr(task, "sample_features"):
        items = task.items(base)

        def features(row: dict[str, Any]) -> np.ndarray:
            key = _variant_keys(setup.runs_dir, row)["sample"]
            return task.sample_features(setup.runs_dir / "samples" / key, items, setup.device)

        reference = task.reference_stats(task.output_size(base) or base.image_size, setup.device)
        return PairedMetric("fid", features, fid_statistic(*reference))
    if hasattr(task, "prompt_accuracy"):
        def correctness(row: dict[str, Any]) -> np.ndarray:
            key = _variant_keys(setup.runs_dir, row)["score"]
            return task.prompt_accuracy(read_jsonl(setup.runs_dir / "scores" / key / "per-sample.jsonl"))

        return PairedMetric("overall", correctness, group_mean_statistic, strata_column=0)
    return None


def write_report(setup: TuneSetup, base: Any, validation_rows: list[dict[str, Any]],
                 test_rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    paths = lab_paths(setup.results_dir, setup.model, setup.task)
    setup.results_dir.mkdir(parents=True, exist_ok=True)
    if validation_rows:
        write_csv(paths.validation, _uniform(validation_rows))
    write_csv(paths.seeds, _uniform(test_rows))
    df = pd.DataFrame(test_rows)
    paired = _paired_data(setup, base)
    summary = []
    cache: dict[tuple[str, str], list[np.ndarray]] = {}

    def rows_of(label: str, variant: str) -> list[dict[str, Any]]:
        return df[(df["label"] == label) & (df["variant"] == variant)].sort_values("seed").to_dict("records")

    def per_seed(label: str, variant: str) -> list[np.ndarray]:
        if (label, variant) not in cache:
            cache[(label, variant)] = [paired.data(r) for r in rows_of(label, variant)]  # type: ignore[union-attr]
        return cache[(label, variant)]

    def compare(label: str, other: str, variant: str) -> PairedDelta:
        """The paired bootstrap of label vs other, kept under runs/bootstrap/ by the score stages it
        read: a second `lab tune` over the same runs (the one that merges parallel jobs) reuses it."""
        ident = {"metric": paired.metric, "task": setup.task, "reps": setup.ci_reps, "seed": 0,  # type: ignore[union-attr]
                 "a": [_variant_keys(setup.runs_dir, r)["score"] for r in rows_of(label, variant)],
                 "b": [_variant_keys(setup.runs_dir, r)["score"] for r in rows_of(other, variant)]}
        path = setup.runs_dir / "bootstrap" / f"{stable_hash(ident)}.json"
        if path.exists():
            return PairedDelta(**json.loads(path.read_text()))
        mine = per_seed(label, variant)
        strata = None if paired.strata_column is None else mine[0][:, paired.strata_column]  # type: ignore[union-attr]
        delta = paired_bootstrap(paired.statistic, mine, per_seed(other, variant),  # type: ignore[union-attr]
                                 reps=setup.ci_reps, seed=0, strata=strata)
        atomic_write_json(path, asdict(delta))
        return delta

    for (label, variant), part in df.groupby(["label", "variant"], sort=False):
        row: dict[str, Any] = {"model": setup.model, "task": setup.task, "label": label, "variant": variant,
                               "seeds": int(part["seed"].nunique()), "lr": part["lr"].iloc[0],
                               "lr_grid": part["lr_grid"].iloc[0]}
        for metric in SUMMARY_METRICS + ("entropy", "heldout_ce", "matched_temperature", "control_temperature"):
            if metric in part and pd.api.types.is_numeric_dtype(part[metric]) and part[metric].notna().any():
                row[f"{metric}_mean"], row[f"{metric}_std"] = part[metric].mean(), part[metric].std()
        if paired is not None and label != "none":
            # a method against the base, SFT and its own temperature control; a control against the base
            control = label.startswith("T-control:")
            others = {"none": "none"} if control else {**{ref: ref for ref in REFERENCES}, "control": f"T-control:{label}"}
            for name, other in others.items():
                if other == label or not ((df["label"] == other) & (df["variant"] == variant)).any():
                    continue
                delta = compare(label, other, variant)
                column = f"delta_{paired.metric}_vs_{name}"
                row[column], row[f"{column}_ci_low"], row[f"{column}_ci_high"] = delta.delta, delta.ci_low, delta.ci_high
                row[f"real_vs_{name}"] = delta.real
        summary.append(row)
    write_csv(paths.summary, _uniform(summary))
    console.print(f"wrote {paths.summary} (+ {paths.seeds.name}, {paths.validation.name})")


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the union of keys in first-seen order (missing = empty), for one CSV header."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k, "") for k in keys} for r in rows]
