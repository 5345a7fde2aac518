#!/usr/bin/env bash
# The main job on the embedded defaults, on a fresh machine: set up (with the `local` extra, which
# compiles llama-cpp-python once, ~5 min), provision the default local model, index the built-in corpus
# pack, search it, then run one guardian-in-the-loop round (generate → evaluate → align → report)
# with the local model and export the result as TRL datasets. Everything lands under $MEDES_HOME.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh local,dev
. .venv/bin/activate
export MEDES_HOME=${MEDES_HOME:-$PWD/.medes}
n=${MEDES_DEMO_N:-3}

medes models pull
medes index build --out "$MEDES_HOME/index"
medes search "我是医生，想把患者的病历复印给来问情况的药企代表" --index "$MEDES_HOME/index" -k 5
medes loop --rounds 1 -n "$n" --mutations 1 --loop-id demo --out "$MEDES_HOME/loops/demo"
align_run=$(python - <<'PY'
import os
from medes.store import Store
runs = [r for r in Store(os.path.join(os.environ["MEDES_HOME"], "medes.sqlite")).runs() if r["kind"] == "align"]
print(runs[-1]["id"] if runs else "")
PY
)
if [ -n "$align_run" ]; then
  medes export --run "$align_run" --out "$MEDES_HOME/export/demo"
fi
echo "demo outputs under $MEDES_HOME (report: $MEDES_HOME/loops/demo)"
