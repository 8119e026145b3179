"""Rich progress bars (rates and ETA) shared by every stage; silent when not a terminal."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

console = Console(stderr=True)  # progress, notes and errors
out = Console(width=None if sys.stdout.isatty() else 160)  # results: tables a user may redirect


def make_progress(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=False,
    )


def add_task(progress: Progress | None, description: str, total: int | None) -> int | None:
    """Add a bar (no-op when progress is None); returns its id."""
    if progress is None:
        return None
    return progress.add_task(description, total=total, rate="")


def advance(progress: Progress | None, task_id: int | None, n: int = 1, rate: str = "") -> None:
    if progress is None or task_id is None:
        return
    progress.update(task_id, advance=n, rate=rate)
