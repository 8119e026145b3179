"""What a comparison run does after its runs: the verdict, the table the report reads, the page.

A `run` with two or more labels (methods, or the tuned-temperature base) ends with verdict lines;
its verdict is kept as the lab's summary table in your own results folder, where the report's
verdict panel reads it, and the page is built there (never in the committed evidence, which only
`report --collect` writes).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from .progress import console, out


def build_report(task: str, runs_dir: Path, quiet: bool) -> Path:
    """The task's page from your own rows (<runs-dir>/results, collected from runs_dir). Only for
    your own folder: the committed evidence is collected only by `report --collect`."""
    from . import leaderboard as lb
    from . import report as rp
    from .runner import default_results_dir

    own = default_results_dir(runs_dir)
    with _quiet_notes(quiet):
        rp.collect(lb.load(own, task), task, runs_dir, own, 12)
    return rp.write_report(task, own, Path(runs_dir) / "reports", "html")


@contextmanager
def _quiet_notes(quiet: bool) -> Iterator[None]:
    """Collect's notes (rows from before run ids) are about your older rows, not this run: --quiet hides them."""
    if not quiet:
        yield
        return
    with console.capture():
        yield


def verdict_of(results: list[Any], device: str) -> Any:
    """The run's verdict when more than one label ran and the task names its headline metric."""
    from .verdict import compare, labelled_results

    labelled = labelled_results(results)
    task = next((r.task for r in results if r.task is not None), None)
    declared = getattr(task, "key_metrics", ())
    if len({label for label, _ in labelled}) < 2 or not declared:
        return None
    metric, direction = declared[0]
    return compare(labelled, metric, direction, device)


def keep_verdict(verdict: Any, results: list[Any], runs_dir: Path) -> None:
    """Write the verdict as the lab's summary table in your results folder, where the report's
    verdict panel reads it (lab-<model>-<task>.csv: the latest comparison of that model and task)."""
    import pandas as pd

    from . import store
    from .lab.results import lab_paths
    from .runner import default_results_dir
    from .verdict import labelled_results, summary_rows

    rows = summary_rows(verdict, labelled_results(results))
    if rows:
        path = lab_paths(default_results_dir(runs_dir), str(rows[0]["model"]), verdict.task).summary
        store.atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def print_verdict(verdict: Any, page: Optional[Path]) -> None:
    """The verdict lines, then where the full report is."""
    from .verdict import verdict_lines

    lines = verdict_lines(verdict, page) if verdict is not None else []
    for line in lines or ([f"Full report: {page}"] if page is not None else []):
        out.print(line, highlight=False)
