"""The demo: what `vapi-bench run` runs when nothing is named.

The embedded default needs no options and no downloads: the shapes world, on a base with headroom,
compared the way the lab compares (the base, VA-π, SFT and the base at a tuned temperature), so the
first screen a newcomer sees already says who wins, by how much and how sure.
"""
from __future__ import annotations

from dataclasses import dataclass

#: the embedded default: the shapes world runs with no options and no downloads. `vapi-bench run`
#: with no options is the demo: the head-scaled control (a base with headroom: the calibrated
#: shapes-c2i has none, so no method could show anything on it), base vs VA-π vs SFT vs the base at
#: a tuned temperature, without CFG, at the lrs `lab tune` chose for this base on the validation
#: reference (results/head-scale/lab-shapes-c2i-shapes-fid.csv), then the verdict lines.
DEFAULT_MODEL = "shapes-c2i"
DEFAULT_METHODS = ["none", "va-pi", "sft"]
DEFAULT_TASK = "shapes-fid"
DEFAULT_SETS = ["model.head_scale=1.2", "task.cfg=without"]
#: per-method lrs of the demo, applied to those of its methods that ran
DEFAULT_METHOD_SETS = {"va-pi": ["va-pi.lr=3e-5"], "sft": ["sft.lr=3e-5"]}
#: the head-scaled base's temperature as `lab tune` chose it (tuned-T: validation FID 0.376 / 0.385 /
#: 0.816 at T = 0.8 / 0.9 / 1.0, mean over tune seeds 1000 and 1001; the test-reference sweep in
#: results/head-scale/temperature-shapes-c2i-shapes-fid.csv: 0.29 at 0.8, 0.60 at 0.7, 0.89 at 1.0)
DEFAULT_TUNED_TEMPERATURE = 0.8


@dataclass(frozen=True)
class Plan:
    """What a `run` invocation runs once the demo's defaults are filled in."""

    model: str
    methods: list[str]
    task: str
    sets: list[str]
    tuned_temperature: float | None
    demo: bool


def plan_run(model: str | None, methods: list[str], task: str | None, sets: list[str],
             tuned_temperature: float | None) -> Plan:
    """The demo when nothing is named (no model, method, task or --set); otherwise what was named,
    the defaults filling only what was left out (and no demo settings)."""
    if model is None and not methods and task is None and not sets:
        demo_sets = DEFAULT_SETS + [s for m in DEFAULT_METHODS for s in DEFAULT_METHOD_SETS.get(m, [])]
        temperature = DEFAULT_TUNED_TEMPERATURE if tuned_temperature is None else tuned_temperature
        return Plan(DEFAULT_MODEL, list(DEFAULT_METHODS), DEFAULT_TASK, demo_sets, temperature, True)
    return Plan(model or DEFAULT_MODEL, list(methods) or ["none", "va-pi"], task or DEFAULT_TASK, list(sets),
                tuned_temperature, False)
