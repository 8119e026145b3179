#!/usr/bin/env bash
# README's screenshot: the first screen (1400 × 900, headless Chromium) of the report the demo
# builds. Runs the demo first (every stage is cached after the first time), then renders
# runs/results' shapes-fid page to docs/report-shapes-fid.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/demo.sh --quiet "$@"
.venv/bin/python scripts/report_screenshot.py --results-dir runs/results --height 900
