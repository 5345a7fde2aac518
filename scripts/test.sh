#!/usr/bin/env bash
# Sets up (.venv, extras dev+train) and runs the test suite: unit tier, plus the ../shared checks
# and the train tier. Integration tests with the local GGUF model run when MEDES_INTEGRATION=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,train
. .venv/bin/activate
markers="not integration"
if [ "${MEDES_INTEGRATION:-0}" = "1" ]; then markers=""; fi
set +e
python -m pytest -m "$markers" -q "$@"
rc=$?
set -e
# pytest exits 5 when no test was collected: that is a failure here, not a pass.
if [ $rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi
exit $rc
