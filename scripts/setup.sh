#!/usr/bin/env bash
# Creates .venv and installs medes. torch comes first from the local CPU wheel (torch==2.13.0) so
# nothing later pulls a CUDA build. Extras: pass e.g. `train,dev` as $1 (default: dev).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-dev}
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
case ",$extras," in *,train,*) python -m pip install -q "torch==2.13.0" ;; esac
python -m pip install -q -e ".[$extras]"
