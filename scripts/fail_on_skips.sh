#!/usr/bin/env bash
# Exit 1 when a pytest log (the output of `pytest -q -rs`) reports a skipped test, or has no
# summary line to tell: where every test needs the hardware at hand (scripts/gpu_selfcheck.sh), a
# skip is a check that did not run.
#   scripts/fail_on_skips.sh pytest.log
set -euo pipefail
log=${1:?usage: $0 PYTEST_LOG}
summary=$(grep -E "[0-9]+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed)\b.* in [0-9.]+s" "$log" | tail -n 1 || true)
if [[ -z "$summary" ]]; then
  echo "error: $log has no pytest summary line (did pytest run?)" >&2
  exit 1
fi
if grep -qE "[0-9]+ skipped" <<<"$summary"; then
  echo "error: tests were skipped ($summary; see $log): no skips allowed here" >&2
  exit 1
fi
