#!/usr/bin/env bash
# The serving tests (tests/test_serve.py, tests/test_export_triton.py) in .venv-serve, the
# environment scripts/serve_venv.sh makes (PyTriton needs numpy 1.x; see there). Fails when one of
# them is skipped: here they must run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/serve_venv.sh
log=$(mktemp)
"${SERVE_VENV:-.venv-serve}/bin/python" -m pytest -q -rs tests/test_serve.py tests/test_export_triton.py | tee "$log"
if grep -qE "[0-9]+ skipped" "$log"; then
    echo "serve tests: a test was skipped in the serving environment (see above)" >&2
    exit 1
fi
