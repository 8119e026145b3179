"""The report as one self-contained HTML page: inline CSS and JS, images as data URIs.

Nothing is fetched: the page opens from disk or from any static host. The only links are relative
ones to the collected run.json files. A few lines of inline JS sort the leaderboard by a clicked
column (or by `#sort=<column>` in the address, so a sorted view can be linked) and record each
image's rendered size, and where the verdict panel's title and cells land and in which colours,
on the page, which the browser test reads back.
"""
from __future__ import annotations

import base64
import json
import os
from html import escape
from pathlib import Path
from typing import Any

from .content import Figure, GridRow, ReportContent
from .directions import header
from .panel import REFERENCES, Panel
from .table import Board, recipe_text

#: long descriptive columns, set small so the metrics keep the width
META_COLUMNS = ("recipe", "budget")
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d1d1f;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px}th,td{padding:4px 6px;border-bottom:1px solid #eee;text-align:left}
table.sortable th{cursor:pointer;background:#f5f5f7;user-select:none;white-space:nowrap}
table.sortable th[data-dir=asc]::after{content:" ▲"}table.sortable th[data-dir=desc]::after{content:" ▼"}
td:first-child{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.meta{font-size:11px;min-width:150px;color:#444}td.sig{font-weight:bold}table.sortable td.sig::after{content:" *"}
td.better{color:#0a6}td.worse{color:#b00;background:#fdecea}table.sortable td.worse::after{content:" ✗"}
.verdict{border:2px solid #1d1d1f;border-radius:6px;padding:8px 12px;margin:10px 0 16px;display:inline-block;max-width:100%;box-sizing:border-box}
.verdict h2{margin:2px 0 6px;border:none;font-size:1.1em}.verdict table{font-size:14px}
.verdict span.word{font-size:11px;display:block}.settings{font-weight:bold;color:#a40}
.note{background:#fff8e1;border-left:4px solid #f5a623;padding:6px 10px;margin:8px 0}
table.grid td{vertical-align:top;border:none;padding:2px}table.grid th{font-weight:normal;font-size:11px;
max-width:70px;overflow-wrap:anywhere;vertical-align:bottom;background:none;border:none}
figure.cell{margin:0;position:relative;display:inline-block}
figure.cell img{width:64px;height:64px;image-rendering:pixelated;display:block;border:3px solid transparent}
figure.cell.ok img{border-color:#2e9e44}figure.cell.bad img{border-color:#d33}
figure.cell figcaption{position:absolute;top:3px;right:5px;font-size:12px;font-weight:bold}
figure.cell.ok figcaption{color:#2e9e44}figure.cell.bad figcaption{color:#d33}
figure.cell div.why{width:70px;white-space:pre-line;font-size:9px;line-height:1.15;color:#b22;overflow-wrap:anywhere}
td.rowlabel{font-size:12px;white-space:normal;min-width:130px;max-width:170px;padding-right:10px;vertical-align:middle}
img.figure{max-width:100%;display:block;margin:6px 0 14px}
details{margin:4px 0}pre{font-size:11px;background:#f5f5f7;padding:8px;overflow:auto;max-height:320px}
.muted{color:#777;font-size:12px}
"""

SCRIPT = """
function sortBy(th){const table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex;
 const dir=th.dataset.dir==='asc'?'desc':'asc';table.querySelectorAll('th').forEach(h=>delete h.dataset.dir);
 th.dataset.dir=dir;const key=c=>c.dataset.sort!==undefined?parseFloat(c.dataset.sort):null;
 const rows=Array.from(body.rows);rows.sort((a,b)=>{const x=key(a.cells[i]),y=key(b.cells[i]);
  let d=(x!==null&&y!==null)?x-y:(x===null)-(y===null)||a.cells[i].textContent.localeCompare(b.cells[i].textContent);
  return dir==='asc'?d:-d;});rows.forEach(r=>body.appendChild(r));}
document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
window.addEventListener('load',()=>{const m=location.hash.match(/sort=([^&]+)/);
 if(m){const th=Array.from(document.querySelectorAll('table.sortable th')).find(h=>h.dataset.col===decodeURIComponent(m[1]));
  if(th)sortBy(th);}
 document.querySelectorAll('img').forEach(img=>{const r=img.getBoundingClientRect();
  img.dataset.renderedWidth=Math.round(r.width);img.dataset.renderedHeight=Math.round(r.height);
  img.dataset.naturalWidth=img.naturalWidth;});
 document.querySelectorAll('.verdict h2,td[data-verdict]').forEach(el=>{const r=el.getBoundingClientRect();
  el.dataset.top=Math.round(r.top);el.dataset.bottom=Math.round(r.bottom);el.dataset.right=Math.round(r.right);
  el.dataset.colour=getComputedStyle(el).color;el.dataset.background=getComputedStyle(el).backgroundColor;});
 document.body.dataset.rendered='true';});
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(content: ReportContent, page_path: Path) -> str:
    """The whole page; `page_path` is where it will be written (run.json links are relative to it)."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width\">"
             f"<title>vapi-bench report: {escape(content.task)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(content.task)}: who wins, by how much, how sure</h1>"]
    parts += [f"<p class=\"settings\">{escape(model)} runs with non-default model settings: {escape(settings)}"
              f"{escape(SETTING_NOTES.get(settings.split('=')[0], ''))}.</p>" for model, settings in content.settings.items()]
    parts += [_panel(panel, i) for i, panel in enumerate(content.panels)]
    parts.append(_grids(content.grids))
    parts.append(_figures("Training curves", "training", content.training,
                          "No fine-tuned run collected (the base model has no training log)."))
    if content.curves:
        parts.append(_figures("Metric against fine-tune steps", "curves", content.curves, ""))
    parts += [f"<p class=\"note\">{escape(note)}</p>" for note in content.notes]
    parts.append(_leaderboard(content.board))
    parts += [_table(name, board, f"summary-{i}",
                     "The lab's tuned comparison: mean ± std over seeds and each paired difference with its 95% "
                     "interval; * marks an interval that excludes 0, green when it is an improvement by the "
                     "metric's direction (↓ lower / ↑ higher is better), red ✗ when it is worse.")
              for i, (name, board) in enumerate(content.summaries)]
    parts.append(_provenance(content, page_path))
    parts.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


#: what a non-default model setting means, said next to it
SETTING_NOTES = {"model.head_scale": " (the head-scaled control: the base's output logits scaled, a base with headroom "
                                     "that the calibrated model lacks)"}


def _panel(panel: Panel, index: int) -> str:
    """One verdict box: per method its value and each difference with interval and word."""
    arrow = {"lower": "↓", "higher": "↑"}.get(panel.direction or "", "")
    better = {"lower": "lower is better", "higher": "higher is better"}.get(panel.direction or "", "")
    head = (f"<th data-col=\"label\">method</th><th data-col=\"{escape(panel.metric)}\">{escape(panel.metric)} {arrow} "
            f"(mean ± sd)</th>")
    head += "".join(f"<th data-col=\"vs-{ref}\">Δ {escape(panel.metric)} {arrow} vs {escape(REFERENCES[ref])}</th>"
                    for ref in panel.references)
    head += "<th data-col=\"seeds\">seeds</th>"
    body = []
    for row in panel.rows:
        cells = [f"<td><b>{escape(row.label)}</b></td>", f"<td class=\"num\">{escape(row.value)}</td>"]
        for ref in panel.references:
            delta = row.deltas.get(ref)
            if delta is None:
                cells.append("<td></td>")
                continue
            kind = {"better": " sig better", "worse": " sig worse"}.get(delta.word, "")
            cells.append(f"<td class=\"num{kind}\" data-verdict=\"{escape(delta.word)}\">{escape(delta.text)}"
                         f"<span class=\"word\"> {escape(delta.word)}</span></td>")
        cells.append(f"<td class=\"num\">{escape(row.seeds)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    legend = (f"{panel.metric}: {better}. Δ = method − reference, mean over seeds, with its 95% {panel.interval}; "
              "better / worse only when the interval excludes 0, else not resolved at this number of seeds.")
    return (f"<section class=\"verdict\" id=\"verdict-{index}\"><h2>{escape(panel.title)}</h2>"
            f"<table id=\"panel-{index}\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p class=\"muted\">{escape(legend)}</p></section>")


def _leaderboard(board: Board) -> str:
    if not board.rows:
        return "<h2>Leaderboard</h2><p>No rows.</p>"
    legend = ("Mean ± std over seeds; one row per configuration (model, method, variant, sampling recipe, "
              "sample budget). Click a column to sort. Intervals are 95% confidence intervals from the CSV; a "
              "difference marked * excludes 0. Within-run spreads (e.g. kid_std) are in the CSV.")
    return _table("Leaderboard", board, "leaderboard", legend)


def _table(title: str, board: Board, table_id: str, legend: str) -> str:
    head = "".join(f"<th data-col=\"{escape(c)}\">{escape(header(c, board.directions))}</th>" for c in board.columns)
    body = []
    for row in board.rows:
        cells = []
        for col in board.columns:
            cell = row[col]
            attrs = f" data-sort=\"{cell.sort!r}\"" if cell.sort is not None else ""
            classes = ["num"] if cell.sort is not None else ["meta"] if col in META_COLUMNS else []
            if cell.significant:
                classes += ["sig"] + ([] if cell.better is None else ["better" if cell.better else "worse"])
            if classes:
                attrs += f" class=\"{' '.join(classes)}\""
            cells.append(f"<td{attrs}>{escape(cell.text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<h2>{escape(title)}</h2><p class=\"muted\">{escape(legend)}</p><table class=\"sortable\" "
            f"id=\"{escape(table_id)}\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _grids(grids: dict[str, list[GridRow]]) -> str:
    if not grids:
        return "<h2>Samples</h2><p>No samples collected.</p>"
    parts = ["<h2>Samples</h2><p class=\"muted\">Every row uses the same sample indices and seed, so each column "
             "is the same class or prompt under the same noise; only the weights differ. A green/red frame is "
             "the task's per-sample verdict, with the reason under an incorrect one.</p>"]
    for variant, rows in grids.items():
        first = rows[0].cells
        head = "<th></th>" + "".join(f"<th title=\"{escape(c['caption'])}\">#{c['index']}<br>{escape(c['caption'])}</th>"
                                     for c in first)
        body = []
        for row in rows:
            recipe = recipe_text({k: v for k, v in row.recipe.items() if v is not None})
            cells = "".join(_cell(c) for c in row.cells)
            body.append(f"<tr data-run=\"{escape(row.run_id)}\"><td class=\"rowlabel\"><b>{escape(row.label)}</b><br>"
                        f"<span class=\"muted\">seed {escape(str(row.seed))}; {escape(recipe)}</span></td>{cells}</tr>")
        parts.append(f"<h3>{escape(variant)}</h3><table class=\"grid\" data-variant=\"{escape(variant)}\">"
                     f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    return "\n".join(parts)


def _cell(cell: dict[str, Any]) -> str:
    scored = "correct" in cell
    state = ("ok" if cell["correct"] else "bad") if scored else ""
    mark = f"<figcaption>{'✓' if cell['correct'] else '✗'}</figcaption>" if scored else ""
    if scored and not cell["correct"]:
        mark += f"<div class=\"why\">{escape(cell['reason'])}</div>"
    title = f"#{cell['index']} {cell['caption']}" + (f" — {cell['reason']}" if scored else "")
    return (f"<td><figure class=\"cell {state}\" data-index=\"{cell['index']}\" title=\"{escape(title)}\">"
            f"<img alt=\"sample {cell['index']}\" src=\"{data_uri(cell['png'])}\">{mark}</figure></td>")


def _figures(title: str, section: str, figures: list[Figure], empty: str) -> str:
    if not figures:
        return f"<h2>{escape(title)}</h2><p>{escape(empty)}</p>"
    imgs = "".join(f"<h3>{escape(f.title)}</h3><img class=\"figure\" data-figure=\"{escape(f.name)}\" "
                   f"alt=\"{escape(f.title)}\" src=\"{data_uri(f.png)}\">" for f in figures)
    return f"<h2>{escape(title)}</h2><div id=\"{section}\">{imgs}</div>"


def wall_text(stage: str, seconds: float, reused: dict[str, bool] | None) -> str:
    """'finetune 41.2s', or 'finetune cached' for a stage the run reused. Runs recorded before
    run.json said which stages were reused: a stage under 0.05 s can only have been reused."""
    cached = reused.get(stage, False) if reused is not None else seconds < 0.05
    return f"{stage} cached" if cached else f"{stage} {seconds:.1f}s"


def _provenance(content: ReportContent, page_path: Path) -> str:
    if not content.runs:
        return "<h2>Provenance</h2><p>No runs collected.</p>"
    head = "".join(f"<th data-col=\"{c}\">{c}</th>" for c in
                   ("run", "model", "method", "seed", "git commit", "device", "wall time per stage", "total", "run.json"))
    rows = []
    for rid, run in sorted(content.runs.items(), key=lambda kv: (str(kv[1].get("spec", {}).get("method")), kv[0])):
        spec = run.get("spec", {})
        walls = ", ".join(wall_text(k, v, run.get("reused")) for k, v in (run.get("wall_seconds") or {}).items()
                          if not (k == "finetune" and spec.get("method_identity")))  # the base trains nothing
        device = " ".join(str(x) for x in (run.get("device"), run.get("device_name")) if x)
        link = ""
        if rid in content.run_json:
            href = Path(os.path.relpath(content.run_json[rid], page_path.parent)).as_posix()
            link = f"<a href=\"{escape(href)}\">run.json</a>"
        details = escape(json.dumps({k: run.get(k) for k in ("spec", "stage_keys", "versions")}, indent=1,
                                    sort_keys=True))
        rows.append(f"<tr><td><details><summary>{escape(rid)}</summary><pre>{details}</pre></details></td>"
                    f"<td>{escape(str(spec.get('model', '')))}</td><td>{escape(str(spec.get('method', '')))}</td>"
                    f"<td>{escape(str(spec.get('seed', '')))}</td><td>{escape(str(run.get('git_commit', ''))[:12])}</td>"
                    f"<td>{escape(device)}</td><td>{escape(walls)}</td>"
                    f"<td class=\"num\" data-sort=\"{float(run.get('total_seconds') or 0)!r}\">"
                    f"{float(run.get('total_seconds') or 0):.1f}s</td><td>{link}</td></tr>")
    return (f"<h2>Provenance</h2><table class=\"sortable\" id=\"provenance\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")
