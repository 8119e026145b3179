"""The build's stages: a progress bar and a wall time per stage (`zoo build`, `zoo build --only`)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from vapi_bench.progress import add_task, advance

from .train import OptimConfig


class Stages:
    """Progress bars and wall times of the build's stages."""

    def __init__(self, progress: Any):
        self.progress = progress
        self.walls: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Any]:
        task = add_task(self.progress, name, total)
        start = time.time()

        def step(n: int = 1, rate: str = "") -> None:
            advance(self.progress, task, n, rate)

        yield step
        self.walls[name] = round(time.time() - start, 2)


def loss_bar(step: Any, every: int = 10):
    """A training loop's on_step that advances `step` every `every` steps, showing the loss."""
    def on_step(index: int, record: dict[str, float]) -> None:
        if index % every == every - 1:
            step(every, f"loss {record['loss']:.4f}")

    return on_step


def finish_bar(step: Any, optim: OptimConfig, every: int = 10) -> None:
    """Advance the steps `loss_bar` left over (steps % every)."""
    step(optim.steps % every)
