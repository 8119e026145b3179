"""Progress bars: rate and ETA while a stage runs, one summary line when it ends; silent under
--quiet and when stdout is not a terminal."""
from __future__ import annotations

import io
import re
import sys

import pytest
from rich.console import Console

from vapi_bench import progress


@pytest.fixture
def screen(monkeypatch):
    """A terminal-like console capturing what the bars draw."""
    buffer = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buffer, force_terminal=True, width=140))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    return buffer


def plain(buffer: io.StringIO) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())


def test_stage_shows_rate_and_ends_with_a_summary(screen):
    with progress.make_progress() as bars:
        with progress.stage(bars, "features", 10) as step:
            for _ in range(5):
                step(2)
        rate = bars.tasks[0].fields["rate"]
        assert bars.tasks[0].completed == 10 and re.fullmatch(r"[\d.]+ img/s", rate)
    assert re.search(r"✓ features: 10 img in [\d.]+s \([\d.]+ img/s\)", plain(screen))


def test_stage_with_nothing_to_do_says_cached(screen):
    with progress.make_progress() as bars:
        with progress.stage(bars, "reference statistics", 5):
            pass
    assert "✓ reference statistics: cached" in plain(screen)


def test_quiet_prints_nothing(screen):
    with progress.make_progress(disable=True) as bars:
        with progress.stage(bars, "features", 3) as step:
            step(3)
    assert screen.getvalue() == ""


def test_no_bars_when_stdout_is_not_a_terminal(screen, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    with progress.make_progress() as bars:
        with progress.stage(bars, "features", 3) as step:
            step(3)
    assert screen.getvalue() == ""


def test_cached_stage_closes_its_bar_and_a_resumed_one_stops(screen):
    with progress.make_progress() as bars:
        with progress.stage(bars, "sample cfg=1", 1000):
            pass
        assert bars.tasks == []  # no bar left at 0/1000 with its clock running
        with progress.stage(bars, "sample cfg=2", 1000) as step:
            step(300)  # 700 images were already on disk
        done = bars.tasks[0]
        assert done.finished and done.stop_time is not None and done.completed == done.total == 300


def test_a_bar_is_readable_at_80_columns():
    buffer = io.StringIO()
    bars = progress.Progress(*progress.columns(), console=Console(file=buffer, force_terminal=True, width=80))
    task = bars.add_task("sample cfg=1", total=1000, rate="123.4 img/s")
    bars.update(task, advance=500)
    bars.console.print(bars.get_renderable())
    lines = [line for line in plain(buffer).splitlines() if line.strip()]
    assert lines and all(len(line) <= 80 for line in lines)
    assert "sample cfg=1" in lines[0] and "500/1000" in lines[0] and "123.4 img/s" in lines[0]
