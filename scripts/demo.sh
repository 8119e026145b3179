#!/usr/bin/env bash
# Set up (if needed) and run the embedded default: the shapes world, base model vs VA-π and baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/vapi-bench run "$@"  # the no-option run is the demo: vapi-bench run == this
