#!/usr/bin/env bash
# The small real shapes-world runs behind README's report screenshot (docs/report-example/), then
# their report bundle and the screenshot itself. Stages are cached under runs/ (resumable).
#   shapes-fid:     shapes-c2i, none / va-pi / sft, 256 samples, seeds 0 and 1
#   shapes-geneval: shapes-t2i, none / va-pi, one image per prompt (183 prompts), seed 0
set -euo pipefail
cd "$(dirname "$0")/.."
VB=.venv/bin/vapi-bench
OUT=docs/report-example/results
$VB run -m shapes-c2i -a none -a va-pi -a sft -t shapes-fid --seed 0 --seed 1 --set task.n=256 --results-dir $OUT
$VB run -m shapes-t2i -a none -a va-pi -t shapes-geneval --seed 0 --set task.images_per_prompt=1 \
  --results-dir $OUT
$VB report --collect --results-dir $OUT --out reports
.venv/bin/python scripts/report_screenshot.py --results-dir $OUT
