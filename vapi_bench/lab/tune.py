"""`lab tune` end to end: tune every method alike, run the chosen settings, the controls and the CIs.

The protocol (protocol.py says why each rule is there):
1. every method (and the base's sampling temperature: `tuned-T`) gets the same number of tries
   on the VALIDATION setting, each try on every tune seed, chosen by the mean over tune seeds;
   tune seeds are never test seeds, so no sample set that chose anything is scored as a test row;
2. a method whose choice lands on the edge of the grid grows the grid by one point on that side for
   every method (and one more temperature for the base), once: the same tries for all;
3. the chosen setting of each method, the tuned-T base and the base run on every test seed;
4. matched-lr rows: every other method also at the reference method's chosen lr (`--matched-lr-to`);
5. temperature controls around each method's entropy match (controls.py);
6. the tables (summary.py) with bootstrap and seed-level intervals, Holm over each table.
Files: results.py. Every run goes through the ordinary runner, so an interrupted or repeated
`lab tune` reuses every finished stage; methods can be tuned in separate processes and the tables
rebuilt by one call with all of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import UsageError
from ..leaderboard import append_rows, leaderboard_path
from ..progress import console
from ..training.recipes import recipe_defaults
from ..training.recipes import recipe_lr as lookup_recipe_lr
from .protocol import LabMethod, check_seeds, choose, grow_grid, lr_grid, on_edge, parse_lab_method
from .results import MATCHED_LR_MARK, TUNED_T
from .summary import paired_data, write_summary


@dataclass
class TuneSetup:
    model: str
    task: str
    methods: list[str]
    lr_factors: list[float]
    lr_center: Optional[float]
    tune_seeds: list[int]
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
    temperatures: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.8])
    matched_lr_to: Optional[str] = "va-pi"
    control_curve: float = 0.02
    budget_images: Optional[int] = None

    def __post_init__(self) -> None:
        check_seeds(self.tune_seeds, self.seeds)
        if len(self.temperatures) != len(self.lr_factors):
            raise UsageError(f"lab tune: the base gets the tries of a method: give as many --temperatures "
                             f"({len(self.temperatures)}) as --lr-factors ({len(self.lr_factors)}).")

    @property
    def model_overrides(self) -> dict[str, str]:
        return {k.split(".", 1)[1]: v for k, v in self.overrides.items() if k.startswith("model.")}


RunFn = Callable[..., list[dict[str, Any]]]


def _generator(setup: TuneSetup) -> Any:
    from .. import load_generator
    from ..params import resolve_params
    from ..registry import get_registry

    entry = get_registry().get("generators", setup.model)
    params = resolve_params(entry.params, setup.model_overrides, f"model '{setup.model}'")
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


class _Lab:
    """One `lab tune`: the runs it makes, their rows, and each label's choice."""

    def __init__(self, setup: TuneSetup, run: RunFn) -> None:
        self.setup, self.run = setup, run
        self.labs = [parse_lab_method(m) for m in setup.methods]
        self.base = _generator(setup)
        self.common = dict(runs_dir=setup.runs_dir, results_dir=setup.results_dir, device=setup.device,
                           leaderboard=False, batch_size=setup.batch_size, precision=setup.precision)
        self.base_over = {k: v for k, v in setup.overrides.items() if k.startswith(("task.", "model."))}
        self.validation_rows: list[dict[str, Any]] = []
        self.test_rows: list[dict[str, Any]] = []
        self.grids: dict[str, list[float]] = {}
        self.scores: dict[str, dict[float, float]] = {}

    # ---- validation ----------------------------------------------------------------------------
    def _validate(self, label: str, method: str, over: dict[str, str], setting: float, column: str,
                  grid_text: str) -> float:
        """One try: the setting on every tune seed, scored on validation; the mean over tune seeds."""
        values = []
        for seed in self.setup.tune_seeds:
            rows = self.run(self.setup.model, method, self.setup.task, seed, {**over, **self.setup.validate},
                            **self.common)
            values.append(float(_pick(rows, self.setup.select_variant, f"{label} {column}={setting:g}")
                                [self.setup.select_metric]))
            self.validation_rows += [{**r, "label": label, column: setting, "lr_grid": grid_text} for r in rows]
        return float(sum(values) / len(values))

    def _method_overrides(self, lab: LabMethod, lr: float) -> dict[str, str]:
        over = {**self.setup.overrides, **lab.overrides, "method.lr": f"{lr:g}"}
        if self.setup.budget_images:
            over.setdefault("method.steps", str(self._budget_steps(lab)))
        return over

    def _budget_steps(self, lab: LabMethod) -> int:
        """Optimiser steps that show the method `budget_images` training images at its batch size."""
        batch = self.setup.overrides.get("method.batch_size") or recipe_defaults(lab.method, self.base)[0].get(
            "batch_size")
        if batch is None:
            raise UsageError(f"lab tune --budget-images: method '{lab.method}' has no recipe batch size; "
                             "set method.batch_size.")
        return math.ceil(self.setup.budget_images / int(batch))

    def tune_methods(self) -> None:
        for lab in self.labs:
            centre = self.setup.lr_center or recipe_lr(self.base, lab.method)
            self.grids[lab.label] = lr_grid(centre, self.setup.lr_factors)
            self.scores[lab.label] = {}
            self._try_grid(lab)
        for side in ("low", "high"):  # once per side, for every method: the same tries for all
            if any(on_edge(self.chosen(lab.label), self.grids[lab.label]) == side for lab in self.labs):
                console.print(f"a choice fell on the {side} edge of its grid: every grid grows by one point there")
                for lab in self.labs:
                    self.grids[lab.label] = grow_grid(self.grids[lab.label], side)
                    self._try_grid(lab)

    def _try_grid(self, lab: LabMethod) -> None:
        grid_text = " ".join(f"{lr:g}" for lr in self.grids[lab.label])
        for lr in self.grids[lab.label]:
            if lr not in self.scores[lab.label]:
                self.scores[lab.label][lr] = self._validate(lab.label, lab.method, self._method_overrides(lab, lr), lr,
                                                            "lr", grid_text)

    def chosen(self, label: str) -> float:
        return choose(self.scores[label], self.setup.select_mode)

    def tune_temperature(self) -> float:
        """The base's sampling temperature chosen like an lr, with as many tries as the largest lr
        grid: the initial temperatures, then one more at a time beyond the chosen edge (colder when
        the choice is inside)."""
        temperatures, scores = sorted(self.setup.temperatures), {}
        tries = max((len(g) for g in self.grids.values()), default=len(temperatures))
        while True:
            for t in temperatures:
                if t not in scores:
                    scores[t] = self._validate(TUNED_T, "none", {**self.base_over, "sampling.temperature": f"{t:g}"},
                                               t, "sampling_temperature", "")
            chosen = choose(scores, self.setup.select_mode, conservative=lambda t: abs(1.0 - t))
            grown = grow_grid(temperatures, on_edge(chosen, temperatures) or "low", geometric=False)
            if len(scores) >= tries or grown == temperatures:
                break
            temperatures = grown
        console.print(f"{TUNED_T}: validation {self.setup.select_metric} "
                      + ", ".join(f"T {t:g} {s:.4g}" for t, s in sorted(scores.items())) + f" -> T {chosen:g}")
        return chosen

    # ---- test ----------------------------------------------------------------------------------
    def on_test_seeds(self, label: str, method: str, over: dict[str, str], **extra: Any) -> list[dict[str, Any]]:
        """The rows of one setting on every test seed, labelled."""
        return [{**r, "label": label, **extra} for seed in self.setup.seeds
                for r in self.run(self.setup.model, method, self.setup.task, seed, over, **self.common)]

    def test(self, label: str, method: str, over: dict[str, str], **extra: Any) -> None:
        self.test_rows += self.on_test_seeds(label, method, over, **extra)

    def matched_lr_rows(self) -> dict[str, str]:
        """Every other trained method at the reference method's chosen lr; {row label: reference label}.
        A method that chose that lr itself is its own matched row (no extra runs)."""
        reference = next((lab for lab in self.labs if lab.label == self.setup.matched_lr_to), None)
        if reference is None:
            return {}
        lr, matched = self.chosen(reference.label), {}
        for lab in self.labs:
            if lab is reference:
                continue
            if self.chosen(lab.label) == lr:
                matched[lab.label] = reference.label
                continue
            label = f"{lab.label}{MATCHED_LR_MARK}{lr:g}"
            self.test(label, lab.method, self._method_overrides(lab, lr), lr=lr, lr_grid="")
            matched[label] = reference.label
        return matched


def run_tune(setup: TuneSetup, run: RunFn) -> None:
    lab = _Lab(setup, run)
    lab.validation_rows += [{**r, "label": "none", "lr": "", "lr_grid": "", "chosen": ""}
                            for seed in setup.tune_seeds
                            for r in run(setup.model, "none", setup.task, seed,
                                         {**lab.base_over, **{k: v for k, v in setup.validate.items()
                                                              if k.startswith("task.")}}, **lab.common)]
    lab.tune_methods()
    temperature = lab.tune_temperature()
    for row in lab.validation_rows:
        label = row["label"]
        if label in lab.scores:
            row["chosen"] = row["lr"] == lab.chosen(label)
        elif label == TUNED_T:
            row["chosen"] = row["sampling_temperature"] == temperature
    lab.test("none", "none", lab.base_over, lr="", lr_grid="")
    lab.test(TUNED_T, "none", {**lab.base_over, "sampling.temperature": f"{temperature:g}"}, lr="", lr_grid="",
             sampling_temperature=temperature)
    for item in lab.labs:
        chosen = lab.chosen(item.label)
        console.print(f"{item.label}: validation {setup.select_metric} "
                      + ", ".join(f"lr {lr:g} {s:.4g}" for lr, s in lab.scores[item.label].items())
                      + f" -> lr {chosen:g}")
        lab.test(item.label, item.method, lab._method_overrides(item, chosen), lr=chosen,
                 lr_grid=" ".join(f"{lr:g}" for lr in lab.grids[item.label]))
    matched = lab.matched_lr_rows()
    if setup.controls:
        from .controls import temperature_controls

        def sample_base(label: str, t: float) -> list[dict[str, Any]]:
            return lab.on_test_seeds(label, "none", {**lab.base_over, "sampling.temperature": f"{t:g}"}, lr="",
                                     lr_grid="")

        lab.test_rows += temperature_controls(setup, lab.base, lambda: _generator(setup), lab.labs, lab.test_rows,
                                              lab.validation_rows, sample_base)
    tuned_on = " ".join(f"{k}={v}" for k, v in setup.validate.items())
    for row in lab.test_rows:
        row["tuned_on"] = tuned_on if row["lr"] != "" or row["label"] == TUNED_T else ""
        row["tune_seeds"] = " ".join(map(str, setup.tune_seeds))
    paired = paired_data(load_task_of(setup.task, setup.overrides), lab.base, setup.runs_dir, setup.device)
    write_summary(setup, paired, lab.validation_rows, lab.test_rows, matched)
    append_rows(leaderboard_path(setup.results_dir, setup.task),
                [{k: v for k, v in r.items() if k not in ("entropy", "heldout_ce", "matched_temperature")}
                 for r in lab.test_rows])
