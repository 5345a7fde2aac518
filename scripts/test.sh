#!/usr/bin/env bash
# Sets up (.venv, extras dev+train) and runs the test suite: unit and reliability tiers, the
# ../shared checks (skipped with a reason when absent) and the tiny-model train tier.
# MEDES_INTEGRATION=1 also installs the `local` extra, pulls the default GGUF model and runs the
# integration tier with it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=dev,train
if [ "${MEDES_INTEGRATION:-0}" = "1" ]; then extras=dev,train,local; fi
bash scripts/setup.sh "$extras"
. .venv/bin/activate
markers="not integration and not slow"
if [ "${MEDES_INTEGRATION:-0}" = "1" ]; then
  medes models pull
  markers="not slow"
fi
set +e
python -m pytest -m "$markers" -q "$@"
rc=$?
set -e
# pytest exits 5 when no test was collected: that is a failure here, not a pass.
if [ $rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi
exit $rc
