"""The `va-pi` method plugin (entry point `va_pi`): Variational Policy Alignment.

It holds VA-π alone: the method (method.py), its context-noise kernel (objective.py), and its
recipes, lab variants and ablations (recipes.py). It trains through the shared kit in
vapi_bench.training, as every other method does.
"""
from __future__ import annotations

from vapi_bench import Entry, hookimpl

from .method import VAPI_PARAMS, VaPi
from .recipes import ABLATIONS, VARIANTS, recipes


@hookimpl
def register_methods(register) -> None:
    register(Entry(
        "va-pi", factory=VaPi, params=VAPI_PARAMS, variants=VARIANTS, ablations=ABLATIONS,
        summary="VA-π: teacher-forced group sampling, pixel reward -(MSE + perceptual), PPO-clip + β·CE "
                "(Liao et al. 2025)",
    ))


@hookimpl
def register_recipes(register) -> None:
    for recipe in recipes():
        register(recipe)
