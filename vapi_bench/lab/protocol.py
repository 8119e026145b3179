"""The fair-lab protocol behind `vapi-bench lab tune`: the same tries for every method.

Every method (and every variant a method declares, e.g. VA-π's Table 4 rows) gets the same
learning-rate grid factors around its recipe's lr (on the shapes world one lr for every method,
vapi_bench.training.post_training_lr), the same steps and images. Each grid point runs on every
tune seed and is scored on a VALIDATION setting of the task (shapes-fid: reference_split=val, a
reference set disjoint from the test one); the mean over tune seeds chooses (`choose`), since one
seed's choice was a draw. A choice on the grid's edge grows every grid by one point (`on_edge`,
`grow_grid`). The chosen point then runs on the test seeds, which never include a tune seed
(`check_seeds`): a shared seed would score the choice on the samples that made it. No method gets
more tries than another (the base's sampling temperature gets as many), and the test setting
never chooses anything.

What "validation" means and which metric selects is the task's to say (`Task.validation`):
shapes-fid chooses by the lowest no-CFG FID on its validation reference, shapes-geneval by the
highest overall on its val prompts. The user's --validate / --select-* options override it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..errors import UsageError


@dataclass(frozen=True)
class LabMethod:
    """A method as the lab runs it: a registered method plus fixed method settings, under a label."""

    label: str
    method: str
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def overrides(self) -> dict[str, str]:
        return {f"method.{k}": v for k, v in self.settings.items()}


def parse_lab_method(spec: str, registry: Any = None) -> LabMethod:
    """'sft' -> sft; 'va-pi:reward-only' -> va-pi with the settings of the variant its registry
    entry declares (Entry.variants)."""
    name, _, variant = spec.partition(":")
    if not variant:
        return LabMethod(spec, spec)
    from ..registry import get_registry

    entry = (registry or get_registry()).get("methods", name)
    if variant not in entry.variants:
        declared = ", ".join(f"{entry.name}:{v}" for v in entry.variants) or "none"
        raise UsageError(f"lab method {spec!r}: method '{entry.name}' declares no variant '{variant}' "
                         f"(its variants: {declared}).")
    return LabMethod(spec, name, dict(entry.variants[variant]))


def lr_grid(center: float, factors: Sequence[float]) -> list[float]:
    """Learning rates center x factor, rounded to 3 significant digits, ascending and distinct."""
    if not center > 0:
        raise UsageError(f"lab tune: the lr grid needs a positive centre, got {center!r}.")
    if len(factors) < 3 or any(not f > 0 for f in factors):
        raise UsageError(f"lab tune: give at least three positive lr factors, got {list(factors)}.")
    grid = sorted({float(f"{center * f:.3g}") for f in factors})
    if len(grid) != len(factors):
        raise UsageError(f"lab tune: lr factors {list(factors)} give repeated learning rates.")
    return grid


def choose(scores: dict[float, float], mode: str, conservative: Any = None) -> float:
    """The grid point with the best validation score ('min' or 'max'); NaN (a diverged run) never
    wins; a tie goes to the more conservative point: by default the smaller lr (the smaller
    update), `conservative(x)` ranks others (the base's temperature: the one closest to 1)."""
    if mode not in ("min", "max"):
        raise UsageError(f"lab tune: --select-mode must be min or max, got {mode!r}.")
    finite = {x: s for x, s in scores.items() if s is not None and not math.isnan(s)}
    if not finite:
        raise UsageError("lab tune: every grid point failed to produce a validation score.")
    sign = 1.0 if mode == "min" else -1.0
    rank = conservative or (lambda x: x)
    return min(finite, key=lambda x: (sign * finite[x], rank(x)))


def check_seeds(tune_seeds: Sequence[int], test_seeds: Sequence[int]) -> None:
    """Tune seeds choose; test seeds report. A seed in both would score the chosen point on the very
    samples that chose it (the validation and test FIDs of one sample set correlate at 0.99), so
    the test row would be selected for luck: refuse the overlap."""
    overlap = sorted(set(tune_seeds) & set(test_seeds))
    if overlap:
        raise UsageError(f"lab tune: tune seeds {list(tune_seeds)} and test seeds {list(test_seeds)} share "
                         f"{overlap}; a choice's samples must never be a test row (default tune seeds: 1000,1001).")
    if not tune_seeds:
        raise UsageError("lab tune: give at least one --tune-seeds.")
    if len(set(test_seeds)) < 2:
        raise UsageError(f"lab tune: the seed-level interval needs at least 2 test seeds (5 or more to resolve "
                         f"much), got {list(test_seeds)}.")


def on_edge(chosen: float, grid: Sequence[float]) -> Optional[str]:
    """'low' / 'high' when the chosen point is the grid's smallest / largest, else None."""
    if chosen == min(grid):
        return "low"
    if chosen == max(grid):
        return "high"
    return None


def grow_grid(grid: Sequence[float], side: str, geometric: bool = True) -> list[float]:
    """The grid with one more point beyond its `side` end, at the spacing of its last two points
    there (a ratio for learning rates, a difference for temperatures); a temperature that would not
    be positive is not added."""
    points = sorted(grid)
    end, inner = (points[0], points[1]) if side == "low" else (points[-1], points[-2])
    if geometric:
        new = float(f"{end * end / inner:.3g}")
    else:
        new = round(2 * end - inner, 3)
        if new <= 0:
            return points
    return sorted({*points, new})


@dataclass(frozen=True)
class Selection:
    """How grid points are compared: the validation overrides, the metric, min/max, the variant
    row read (None: the run's only row)."""

    validate: dict[str, str]
    metric: str
    mode: str
    variant: Optional[str]


def resolve_selection(task: Any, task_name: str, validate: Optional[dict[str, str]], metric: Optional[str],
                      mode: Optional[str], variant: Optional[str]) -> Selection:
    """Each option the user gave, else the task's declared `validation`; a task that declares none
    needs --validate, --select-metric and --select-mode."""
    declared = getattr(task, "validation", None)
    if declared is None and (validate is None or metric is None or mode is None):
        raise UsageError(f"lab tune: task '{task_name}' declares no validation setting; pass --validate, "
                         "--select-metric and --select-mode.")
    return Selection(
        validate=dict(declared.overrides) if validate is None else dict(validate),
        metric=declared.metric if metric is None else metric,
        mode=declared.mode if mode is None else mode,
        variant=(declared.variant if declared is not None else None) if variant is None else variant,
    )
