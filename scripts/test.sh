#!/usr/bin/env bash
# Set up (if needed) and run the whole test-suite. This is the command CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export OMP_NUM_THREADS=1 VAPI_BENCH_OFFLINE=1
exec .venv/bin/pytest -n 2 --dist loadfile "$@"
