#!/usr/bin/env bash
# Create .venv and install vapi-bench (editable) with what the tests need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -e ".[dev]" -e tests/fixture_plugin -e tests/gru_plugin 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import vapi_bench, torch; print('vapi-bench', vapi_bench.__version__, '| torch', torch.__version__)"
