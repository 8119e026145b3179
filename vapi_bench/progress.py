"""Rich progress bars (rates and ETA) shared by every long stage, each ending in a one-line summary.

Bars are shown only to a person watching: never under --quiet, and not when stdout is not a
terminal (logs, CI, pipes), where a redrawn bar would only add noise.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)  # progress, notes and errors
out = Console(width=None if sys.stdout.isatty() else 160)  # results: tables a user may redirect


def interactive() -> bool:
    """True when someone watches: stdout and the progress console are terminals."""
    return sys.stdout.isatty() and console.is_terminal


def columns() -> tuple:
    """The bar's columns, sized to fit 80: description, a 20-wide bar, done/total, rate, ETA (the
    percentage and the elapsed time say nothing the count and the ETA do not)."""
    return (TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(compact=True))


def make_progress(disable: bool = False) -> Progress:
    """The shared bar display; disabled under `disable` (--quiet) or when not interactive."""
    return Progress(*columns(), console=console, disable=disable or not interactive(), transient=False)


def add_task(progress: Progress | None, description: str, total: int | None) -> int | None:
    """Add a bar (no-op when progress is None); returns its id."""
    if progress is None:
        return None
    return progress.add_task(description, total=total, rate="")


def advance(progress: Progress | None, task_id: int | None, n: int = 1, rate: str = "") -> None:
    if progress is None or task_id is None:
        return
    progress.update(task_id, advance=n, rate=rate)


def summary(progress: Progress | None, text: str) -> None:
    """One line that stays when a stage ends (shown only where its bar was)."""
    if progress is not None and not progress.disable:
        progress.console.print(f"[green]✓[/green] {text}", highlight=False)


@contextmanager
def stage(progress: Progress | None, description: str, total: int | None, unit: str = "img") -> Iterator[Callable[[int], None]]:
    """A bar for one stage; yields `step(n)`, which advances it with the running rate. On a normal
    exit the bar closes — removed when nothing was done (a cached stage), else stopped at what was
    done (a resumed stage does less than its total) — and a line says
    '<description>: N <unit> in S s (R <unit>/s)', or ': cached'."""
    task = add_task(progress, description, total)
    start, done = time.perf_counter(), [0]

    def step(n: int) -> None:
        done[0] += n
        advance(progress, task, n, rate=f"{done[0] / max(time.perf_counter() - start, 1e-9):.1f} {unit}/s")

    yield step
    seconds = time.perf_counter() - start
    if progress is not None and task is not None:  # close the bar: an unfinished one would tick on
        if not done[0]:
            progress.remove_task(task)
        else:
            progress.update(task, total=done[0], completed=done[0])
            progress.stop_task(task)
    if not done[0]:
        summary(progress, f"{description}: cached")
        return
    summary(progress, f"{description}: {done[0]} {unit} in {seconds:.1f}s ({done[0] / max(seconds, 1e-9):.1f} {unit}/s)")
