"""vapi-bench: post-training benchmark suite for autoregressive image generators.

Public API:
    load_generator(name, checkpoint=None, device=None, **overrides) -> interfaces.Generator
    load_method / load_task / load_scorer / load_dataset(name, **overrides)
    hookimpl, Entry, Family, Recipe, Param: for plugin authors (vapi_bench.testing: the conformance kit;
    vapi_bench.training: the post-training kit a method trains through)
"""
from __future__ import annotations

from typing import Any

from .hookspecs import hookimpl
from .interfaces import (Entry, Family, Generator, Method, Recipe, SampleItem, SamplingRecipe, Scorer, StageContext, Task,
                         TaskResult)
from .params import Param

__version__ = "0.1.0"

__all__ = [
    "Entry", "Family", "Generator", "Method", "Param", "Recipe", "SampleItem", "SamplingRecipe", "Scorer", "StageContext",
    "Task", "TaskResult", "hookimpl", "load_dataset", "load_generator", "load_method", "load_scorer",
    "load_task", "__version__",
]


def _build(kind: str, name: str, overrides: dict[str, Any], **fixed: Any) -> Any:
    from .params import resolve_params
    from .registry import get_registry

    entry = get_registry().get(kind, name)
    params = resolve_params(entry.params, overrides, where=f"{kind[:-1]} '{entry.name}'")
    return entry.factory(**fixed, **params)


def load_generator(name: str, checkpoint: str | None = None, device: Any = None, **overrides: Any) -> Generator:
    """Build a registered generator; `checkpoint` is a local path, URL or Hugging Face id."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _build("generators", name, overrides, checkpoint=checkpoint, device=dev)


def load_method(name: str, **overrides: Any) -> Method:
    return _build("methods", name, overrides)


def load_task(name: str, **overrides: Any) -> Task:
    return _build("tasks", name, overrides)


def load_scorer(name: str, **overrides: Any) -> Scorer:
    return _build("scorers", name, overrides)


def load_dataset(name: str, **overrides: Any) -> Any:
    return _build("datasets", name, overrides)
