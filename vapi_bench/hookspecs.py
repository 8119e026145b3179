"""pluggy hook specifications (the simonw/llm pattern): each hook receives a `register` callable.

A plugin module (built-in or third-party) exposes functions decorated with `hookimpl` and is
listed under the `vapi_bench` entry-point group:

    from vapi_bench import hookimpl, Entry, Param

    @hookimpl
    def register_generators(register):
        register(Entry("my-model", factory=build_my_model, summary="..."))
"""
from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("vapi_bench")
hookimpl = pluggy.HookimplMarker("vapi_bench")

Register = Callable[[Any], None]


@hookspec
def register_generators(register: Register) -> None:
    """Register generator entries: register(Entry(name, factory(checkpoint=, device=, **params)))."""


@hookspec
def register_methods(register: Register) -> None:
    """Register alignment method entries: factory(**params) -> interfaces.Method."""


@hookspec
def register_tasks(register: Register) -> None:
    """Register evaluation task entries: factory(**params) -> interfaces.Task."""


@hookspec
def register_scorers(register: Register) -> None:
    """Register image scorer entries: factory(**params) -> interfaces.Scorer."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset entries: factory(**params) -> torch Dataset of (image [-1,1], condition)."""


@hookspec
def register_families(register: Register) -> None:
    """A model plugin declares its family's shared post-training defaults:
    register(Family(name, defaults={"lr": 1e-4, "steps": 100, ...})).

    A generator whose `family` attribute names no declared family can still be fine-tuned when the
    user sets every recipe key its methods need; otherwise the run stops before any stage with one
    error listing them (vapi_bench.training.recipes).
    """


@hookspec
def register_recipes(register: Register) -> None:
    """A method plugin declares its own values on a family: register(Recipe(method, family,
    values={...}, source="where they come from")). They override the family's shared defaults."""


@hookspec
def register_commands(app: Any) -> None:
    """Add Typer commands to the `vapi-bench` app."""
