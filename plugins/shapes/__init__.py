"""The shapes world (entry point `shapes`): procedural data, the model zoo and its generators.

Registers the generators `shapes-c2i` / `shapes-t2i` and their variants (`shapes-c2i-small`,
`shapes-c2i-small-ls`, `shapes-t2i-ls`; tiny LlamaGen models from the zoo) and `shapes-var` (a
tiny VAR from the zoo), the datasets `shapes-c2i` / `shapes-captions`, the scorers
`shapes-perceptual`, `shapes-class-prob` and `shapes-geneval` (the last two are verifiable rewards),
its models' families (families.py) and the `vapi-bench zoo` command group.
Modules are imported inside the hooks, so importing the package stays cheap and a broken
dependency surfaces as a skipped plugin with its reason.
"""
from __future__ import annotations

from typing import Any

from vapi_bench.hookspecs import hookimpl


@hookimpl
def register_generators(register: Any) -> None:
    from .generators import entries

    for entry in entries():
        register(entry)


@hookimpl
def register_datasets(register: Any) -> None:
    from .datasets import register_datasets_impl

    register_datasets_impl(register)


@hookimpl
def register_scorers(register: Any) -> None:
    from .perceptual import register_scorers_impl
    from .rewards import reward_entries

    register_scorers_impl(register)
    for entry in reward_entries():
        register(entry)


@hookimpl
def register_families(register: Any) -> None:
    from .families import families

    for family in families():
        register(family)


@hookimpl
def register_commands(app: Any) -> None:
    from .zoo.commands import zoo_app

    app.add_typer(zoo_app, name="zoo")
