"""Rebuild the shapes report from the committed results and refresh README's screenshot of it.

    python scripts/report_screenshot.py                # results/ -> docs/report-shapes-fid.png
    python scripts/report_screenshot.py --results-dir docs/report-example/results

Run `vapi-bench report --collect` first where the runs are, so results/report/<task>/ holds the
grids, curves and provenance. The page is rendered by headless Chromium, as the browser test does.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

from vapi_bench.report import write_report
from vapi_bench.report.browser import screenshot

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="shapes-fid")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: docs/report-<task>.png)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900, help="the first screen: 900 px")
    args = parser.parse_args()
    out = args.out or ROOT / "docs" / f"report-{args.task}.png"
    with tempfile.TemporaryDirectory() as tmp:
        page = write_report(args.task, args.results_dir, Path(tmp), "html")
        screenshot(page, out, width=args.width, height=args.height)
    with Image.open(out) as shot:  # 256 colours: a third of the bytes, no visible change for a page
        shot.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"{out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
