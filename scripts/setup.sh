#!/usr/bin/env bash
# Create .venv and install vapi-bench (editable). Idempotent, and instant when nothing changed.
#   bash scripts/setup.sh          what `vapi-bench run` needs (the demo)
#   bash scripts/setup.sh --dev    also the test extras and the two third-party test plugins
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODE=core
[ "${1:-}" = "--dev" ] && MODE=dev
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# a stamp per mode and content of the install recipes: re-running skips pip when they are unchanged
STAMP=".venv/.setup-$MODE-$(cat pyproject.toml tests/*/pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  WHAT=(-e .)
  [ "$MODE" = dev ] && WHAT=(-e ".[dev]" -e tests/fixture_plugin -e tests/gru_plugin)
  # pip's build chatter goes to a log; it is shown only when the install fails
  .venv/bin/pip install -q "${WHAT[@]}" > .venv/setup.log 2>&1 || { tail -40 .venv/setup.log; exit 1; }
  .venv/bin/python -c "import vapi_bench, torch" && touch "$STAMP"
fi
.venv/bin/python -c "import vapi_bench, torch; print('vapi-bench', vapi_bench.__version__, '| torch', torch.__version__)"
