"""`vapi-bench report`: one static page per task (leaderboard, side-by-side samples, curves, provenance).

`collect` copies what the page needs from runs/ into results/report/<task>/ (small, committable);
`write_report` builds the page from results/ alone, so a clean clone rebuilds the committed page.
"""
from __future__ import annotations

from pathlib import Path

from .. import store
from ..errors import UsageError
from .bundle import collect, tasks_on_board
from .content import gather
from .html_page import render_html
from .markdown_page import render_markdown

FORMATS = ("html", "md")


def write_report(task: str, results_dir: Path, out_dir: Path, fmt: str = "html") -> Path:
    """Build `<out_dir>/<task>.<fmt>` from results_dir; returns the page's path."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'.")
    content = gather(task, Path(results_dir))
    page = Path(out_dir) / f"{task}.{fmt}"
    text = render_html(content, page) if fmt == "html" else render_markdown(content, page)
    store.atomic_write_text(page, text)
    page.chmod(0o644)  # readable by a web server, like any static page
    return page


__all__ = ["FORMATS", "collect", "tasks_on_board", "write_report"]
