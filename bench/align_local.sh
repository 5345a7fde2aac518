#!/usr/bin/env bash
# Issue 5 acceptance, timed: a short guardian-in-the-loop run with the local GGUF model (target,
# judge and reviser), its export, LoRA SFT + DPO for a few steps on a tiny local model, and
# evaluate base vs adapter in one command. Prints `[time] N s: command` per step.
#
#   bash bench/align_local.sh            # MEDES_HOME defaults to a fresh temp dir
#   N=8 THRESHOLD=0.4 bash bench/align_local.sh   # N drafts; with the 0.5B model ~1 pair per 8
#   MEDES_HOME=/tmp/medes-align-local.XXXX bash bench/align_local.sh   # resume: a finished loop is skipped
#
# THRESHOLD: the 0.5B model as judge rarely awards more than Q1 (0.4), so the default 0.7 would
# export nothing to train on; a real judge (any openai: endpoint) should keep 0.7.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh local,train,dev  # from a clean clone: compiles llama-cpp-python once (~5 min)
. .venv/bin/activate
N=${N:-8} THRESHOLD=${THRESHOLD:-0.4} ROUNDS=${ROUNDS:-2}
models=${MEDES_MODEL_DIR:-$HOME/.cache/medes/models}
export MEDES_HOME=${MEDES_HOME:-$(mktemp -d /tmp/medes-align-local.XXXX)}
export MEDES_MODEL_DIR=$models
out=$MEDES_HOME/out
mkdir -p "$out"
t() { local s=$(date +%s); "$@"; echo "[time] $(( $(date +%s) - s )) s: $*"; }

t medes models pull
[ -f "$MEDES_HOME/index/manifest.json" ] || t medes index build --out "$MEDES_HOME/index"
t medes loop --rounds 1 -n "$N" --mutations 1 --align-rounds "$ROUNDS" --threshold "$THRESHOLD" \
  --concurrency 1 --loop-id acc --out "$out/report"
runs=$(python - <<'PY'
import os
from medes.store import Store
runs = Store(os.path.join(os.environ["MEDES_HOME"], "medes.sqlite")).runs()
print(next(r["id"] for r in reversed(runs) if r["kind"] == "align"), next(r["id"] for r in reversed(runs) if r["kind"] == "generate"))
PY
)
align_run=${runs% *} gen_run=${runs#* }
t medes export --run "$align_run" --out "$out/export" --min-final "$THRESHOLD" --format jsonl
t medes train tiny-model --out "$out/tiny"
for kind in sft dpo; do
  python - "$kind" "$out" <<'PY'
import pathlib, sys, yaml
kind, out = sys.argv[1], pathlib.Path(sys.argv[2])
cfg = yaml.safe_load(open(f"configs/{kind}.yaml"))
folder = "sft" if kind == "sft" else "preference"
files = [out / "export" / folder / f"{s}.jsonl" for s in ("train", "validation", "test")]
splits = [f.stem for f in files if f.exists() and f.stat().st_size]
if not splits:
    sys.exit(f"the export has no {folder} rows: nothing to train {kind} on")
cfg["model"] = {"name_or_path": str(out / "tiny")}
cfg["data"].update({"dir": str(out / "export"), "train_split": splits[0], "eval_split": None})
cfg["lora"].update({"r": 4, "lora_alpha": 8})
cfg["trainer"].update({"output_dir": str(out / kind), "max_steps": 3, "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 1, "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no",
    "gradient_checkpointing": False, "max_length": 512, "warmup_steps": 0})
yaml.safe_dump(cfg, open(out / f"{kind}.yaml", "w"), allow_unicode=True)
print(f"{kind}: training on the {splits[0]} split")
PY
  t medes train "$kind" --config "$out/$kind.yaml"
done
gguf=$(ls "$models"/*.gguf | head -1)
t medes evaluate --model "hf:$out/tiny" --model "hf:$out/tiny+$out/sft" --run "$gen_run" --limit 2 \
  --judge "llamacpp:$gguf" --index "$MEDES_HOME/index" --out "$out/compare"
echo "outputs under $out"
