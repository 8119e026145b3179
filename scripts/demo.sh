#!/usr/bin/env bash
# Set up (if needed) and run the demo: `vapi-bench run` with no options. On the shapes world's
# head-scaled control (a base with headroom): base vs VA-π vs SFT vs the base at a tuned
# temperature, then the verdict lines and runs/reports/shapes-fid.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m vapi_bench.cli run "$@"  # the no-option run is the demo: vapi-bench run == this
