"""The `va-pi` method plugin (entry point `va_pi`): Variational Policy Alignment."""
from __future__ import annotations

from vapi_bench import Entry, hookimpl

from .method import VAPI_PARAMS, VaPi
from .recipes import families


@hookimpl
def register_methods(register) -> None:
    register(Entry(
        "va-pi", factory=VaPi, params=VAPI_PARAMS,
        summary="VA-π: teacher-forced group sampling, pixel reward -(MSE + perceptual), PPO-clip + β·CE "
                "(Liao et al. 2025)",
    ))


@hookimpl
def register_families(register) -> None:
    for family in families():
        register(family)


@hookimpl
def register_commands(app) -> None:
    from .lab import lab_app

    app.add_typer(lab_app, name="lab")
