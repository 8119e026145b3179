"""The report as Markdown (for a paper's appendix or a PR), images written next to it.

Markdown cannot frame single images, so each method/variant's samples become one PNG strip whose
frames are green (correct) or red (incorrect) when the task judged them, with the count below.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .. import store
from ..imageio import image_grid
from .content import GridRow, ReportContent
from .directions import header
from .panel import REFERENCES, Panel
from .table import Board, Cell

FRAME = 3
COLOURS = {True: (46, 158, 68), False: (221, 51, 51), None: (255, 255, 255)}


def render_markdown(content: ReportContent, page_path: Path) -> str:
    """The Markdown page; its images are written to `<page stem>-assets/` next to it."""
    assets = page_path.parent / f"{page_path.stem}-assets"
    lines = [f"# {content.task}: who wins, by how much, how sure", ""]
    lines += [f"**{model} runs with non-default model settings: {settings}.**" for model, settings
              in content.settings.items()] + ([""] if content.settings else [])
    for panel in content.panels:
        lines += panel_markdown(panel)
    if content.grids:
        lines += ["## Samples", "", "Same sample indices and seed in every row; frames: green correct, red incorrect.", ""]
        for variant, rows in content.grids.items():
            indices = ", ".join(str(c["index"]) for c in rows[0].cells)
            lines += [f"### {variant}", "", f"Sample indices: {indices}", ""]
            for row in rows:
                name = f"samples-{variant}-{row.run_id}.png"
                _write(assets / name, _strip(row))
                verdicts = [c["correct"] for c in row.cells if "correct" in c]
                score = f" ({sum(verdicts)}/{len(verdicts)} correct)" if verdicts else ""
                lines += [f"**{row.label}** (seed {row.seed}){score}", "", f"![{row.label} {variant}]({_rel(assets / name, page_path)})", ""]
    for title, figures in (("Training curves", content.training), ("Metric against fine-tune steps", content.curves)):
        if figures:
            lines += [f"## {title}", ""]
            for fig in figures:
                _write(assets / f"{fig.name}.png", fig.png)
                lines += [f"![{fig.title}]({_rel(assets / f'{fig.name}.png', page_path)})", ""]
    lines += [f"> {note}" for note in content.notes] + ([""] if content.notes else [])
    lines += ["## Leaderboard", "", "Mean ± std over seeds; intervals are 95% confidence intervals (* excludes 0: "
              "**better**, ✗ worse by the metric's direction; ↓ lower / ↑ higher is better).", ""]
    lines += board_markdown(content.board)
    for name, board in content.summaries:
        lines += [f"## {name}", "", "95% intervals; * excludes 0.", ""] + board_markdown(board)
    if content.runs:
        lines += ["## Provenance", "", "| run | model | method | seed | git commit | device | total |", "|---|---|---|---|---|---|---|"]
        for rid, run in sorted(content.runs.items(), key=lambda kv: (str(kv[1].get("spec", {}).get("method")), kv[0])):
            spec = run.get("spec", {})
            link = f"[{rid}]({_rel(content.run_json[rid], page_path)})" if rid in content.run_json else rid
            lines.append(f"| {link} | {spec.get('model', '')} | {spec.get('method', '')} | {spec.get('seed', '')} | "
                         f"{str(run.get('git_commit', ''))[:12]} | {run.get('device', '')} | "
                         f"{float(run.get('total_seconds') or 0):.1f}s |")
        lines.append("")
    return "\n".join(lines)


def panel_markdown(panel: Panel) -> list[str]:
    """A verdict panel as a Markdown table: differences with intervals and their word in bold."""
    arrow = {"lower": "↓", "higher": "↑"}.get(panel.direction or "", "")
    columns = ["method", f"{panel.metric} {arrow} (mean ± sd)",
               *(f"Δ vs {REFERENCES[r]}" for r in panel.references), "seeds"]
    lines = [f"## {panel.title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in panel.rows:
        deltas = [f"{d.text} **{d.word}**" if d is not None and d.word != "not resolved at this n"
                  else (f"{d.text} not resolved" if d is not None else "") for d in (row.deltas.get(r) for r in panel.references)]
        lines.append("| " + " | ".join([row.label, row.value, *deltas, row.seeds]) + " |")
    better = {"lower": "lower is better", "higher": "higher is better"}.get(panel.direction or "", "")
    return lines + ["", f"{panel.metric}: {better}; Δ = method − reference with its 95% {panel.interval}.", ""]


def board_markdown(board: Board) -> list[str]:
    """A board as a Markdown table, headers with ↓/↑, significant differences marked."""
    lines = ["| " + " | ".join(header(c, board.directions) for c in board.columns) + " |",
             "|" + "---|" * len(board.columns)]
    for row in board.rows:
        lines.append("| " + " | ".join(_mark(row[c]) for c in board.columns) + " |")
    return lines + [""]


def _mark(cell: Cell) -> str:
    """A cell's text, a significant difference marked * and, by direction, bold (better) or ✗ (worse)."""
    if not cell.significant:
        return cell.text
    return f"**{cell.text}** *" if cell.better else (f"{cell.text} * ✗" if cell.better is False else f"{cell.text} *")


def _strip(row: GridRow) -> bytes:
    """The row's samples side by side, each framed by its verdict's colour."""
    tiles = []
    for cell in row.cells:
        pixels = np.asarray(Image.open(io.BytesIO(cell["png"])).convert("RGB"))
        colour = np.array(COLOURS[cell.get("correct")], dtype=np.uint8)
        framed = np.empty((pixels.shape[0] + 2 * FRAME, pixels.shape[1] + 2 * FRAME, 3), dtype=np.uint8)
        framed[:] = colour
        framed[FRAME:-FRAME, FRAME:-FRAME] = pixels
        tiles.append(framed)
    buf = io.BytesIO()
    Image.fromarray(image_grid(tiles, columns=len(tiles))).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    store.atomic_write_bytes(path, data)


def _rel(target: Path, page_path: Path) -> str:
    return Path(os.path.relpath(target, page_path.parent)).as_posix()
