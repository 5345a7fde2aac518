"""SFT and DPO with LoRA: build TRL's own configs from a YAML run config, hand them to TRL, train.

A run config has four sections (see configs/sft.yaml, configs/dpo.yaml):

```yaml
model:    {name_or_path: PATH_OR_NAME, dtype: auto, ...}   # extra keys go to from_pretrained
data:     {dir: EXPORT_DIR, kind: sft, train_split: train, eval_split: validation}
lora:     {r: 16, lora_alpha: 32, target_modules: all-linear}   # peft.LoraConfig keywords
trainer:  {output_dir: runs/sft, learning_rate: 2.0e-4, ...}     # SFTConfig / DPOConfig keywords
```

`data.dir` is a `medes export` directory; rows are read from `<dir>/<kind>/<split>.jsonl` and only
the training columns are kept (provenance stays in the export). `eval_split` is optional; when set,
the split must exist. SFT takes `kind: sft`
(conversational `messages`) or `sft_prompt_completion`; DPO takes `preference`.

No wrapper trainer: `build_trainer` returns TRL's `SFTTrainer`/`DPOTrainer`, so anything TRL supports
is one `trainer:` key away. With a PEFT `peft_config`, DPO uses the base model (adapter disabled) as
its reference, so no second model is loaded. On a machine without an accelerator, `use_cpu: true` and
`bf16: false` are filled in unless the config sets them.

Multi-GPU / multi-node: the same command under accelerate (DeepSpeed or FSDP via its config):

    accelerate launch --num_processes 8 -m medes.cli train sft --config configs/sft.yaml

After training, the output directory holds the LoRA adapter (`adapter_model.safetensors`), the
tokenizer and `run_manifest.json` (config, data fingerprint, versions, metrics). `load_hf_chat`
loads a base model, optionally with such an adapter, as a chat target for the benchmark runner.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import yaml

from medes.records import now_utc

Method = Literal["sft", "dpo"]

TRAINING_COLUMNS: dict[str, list[str]] = {
    "sft": ["messages"],
    "sft_prompt_completion": ["prompt", "completion"],
    "preference": ["prompt", "chosen", "rejected"],
}
KINDS_FOR: dict[str, tuple[str, ...]] = {"sft": ("sft", "sft_prompt_completion"), "dpo": ("preference",)}
DEFAULT_KIND: dict[str, str] = {"sft": "sft", "dpo": "preference"}
SECTIONS = ("model", "data", "lora", "trainer")


@dataclass
class RunConfig:
    """The four sections of a run YAML, kept as plain dicts so TRL/PEFT/transformers validate them."""

    model: dict[str, Any]
    data: dict[str, Any]
    lora: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        unknown = set(raw) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown run-config sections {sorted(unknown)}; expected {SECTIONS}")
        if not raw.get("model", {}).get("name_or_path"):
            raise ValueError("run config needs model.name_or_path (a local directory or a model name)")
        if not raw.get("data", {}).get("dir"):
            raise ValueError("run config needs data.dir (a `medes export` output directory)")
        return cls(**{k: dict(raw.get(k) or {}) for k in SECTIONS})

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        raw = yaml.safe_load(Path(path).read_text("utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a run config is a YAML mapping with sections {SECTIONS}")
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SECTIONS}


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def trl_config(method: Method, cfg: RunConfig):
    """TRL's own `SFTConfig`/`DPOConfig` from the `trainer:` section, verbatim."""
    from trl import DPOConfig, SFTConfig

    kwargs = dict(cfg.trainer)
    kwargs.setdefault("output_dir", f"runs/{method}")
    kwargs.setdefault("report_to", "none")
    if not _has_accelerator():
        kwargs.setdefault("use_cpu", True)
        kwargs.setdefault("bf16", False)  # the default would pick bf16 and fail on CPU
    return (SFTConfig if method == "sft" else DPOConfig)(**kwargs)


def lora_config(cfg: RunConfig):
    from peft import LoraConfig

    kwargs = {"task_type": "CAUSAL_LM", "target_modules": "all-linear", **cfg.lora}
    return LoraConfig(**kwargs)


def data_files(method: Method, cfg: RunConfig) -> dict[str, Path]:
    """Split name → JSONL path; the eval split is optional (an export may leave it empty)."""
    kind = cfg.data.get("kind", DEFAULT_KIND[method])
    if kind not in KINDS_FOR[method]:
        raise ValueError(f"{method} trains on data.kind in {KINDS_FOR[method]}, got {kind!r}")
    root = Path(cfg.data["dir"]) / kind
    files = {"train": root / f"{cfg.data.get('train_split', 'train')}.jsonl"}
    if not files["train"].exists():
        raise FileNotFoundError(f"no training data at {files['train']} (run `medes export` first)")
    eval_split = cfg.data.get("eval_split")
    if eval_split:
        files["eval"] = root / f"{eval_split}.jsonl"
        if not files["eval"].exists():
            # small exports often have no validation rows: say so rather than train without the eval asked for
            raise FileNotFoundError(
                f"no {eval_split!r} split at {files['eval']}; set data.eval_split: null and "
                "trainer.eval_strategy: 'no' to train without evaluation"
            )
    return files


def load_rows(path: Path, columns: list[str], max_rows: int | None = None):
    """A `datasets.Dataset` with only the training columns of an export JSONL file."""
    from datasets import Dataset

    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [c for c in columns if c not in row]
            if missing:
                raise ValueError(f"{path}:{n}: missing training columns {missing}")
            rows.append({c: row[c] for c in columns})
            if max_rows is not None and len(rows) >= max_rows:
                break
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return Dataset.from_list(rows)


def fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def load_model_and_tokenizer(cfg: RunConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(cfg.model)
    name = kwargs.pop("name_or_path")
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=kwargs.get("trust_remote_code", False))
    if tokenizer.chat_template is None:
        raise ValueError(f"{name}: the tokenizer has no chat template; the exported rows are conversational")
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    return model, tokenizer


def build_trainer(method: Method, cfg: RunConfig):
    """TRL's trainer, ready to `.train()`: tests inspect it before and after training."""
    from trl import DPOTrainer, SFTTrainer

    kind = cfg.data.get("kind", DEFAULT_KIND[method])
    files = data_files(method, cfg)
    columns = TRAINING_COLUMNS[kind]
    max_rows = cfg.data.get("max_rows")
    train_ds = load_rows(files["train"], columns, max_rows)
    eval_ds = load_rows(files["eval"], columns, max_rows) if "eval" in files else None
    args = trl_config(method, cfg)
    model, tokenizer = load_model_and_tokenizer(cfg)
    trainer_cls = SFTTrainer if method == "sft" else DPOTrainer
    return trainer_cls(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
    )


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("medes", "torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = ""
    return out


def _git_sha() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return ""  # not a checkout (installed wheel): the package version identifies the code
    return done.stdout.strip()


def write_manifest(method: Method, cfg: RunConfig, trainer, metrics: dict[str, Any]) -> Path:
    files = data_files(method, cfg)
    out = Path(trainer.args.output_dir) / "run_manifest.json"
    manifest = {
        "method": method,
        "config": cfg.to_dict(),
        "data": {
            "files": {k: str(v) for k, v in files.items()},
            "fingerprint": fingerprint(list(files.values())),
            "rows": {"train": len(trainer.train_dataset), "eval": len(trainer.eval_dataset or [])},
        },
        "versions": _versions(),
        "git_sha": _git_sha(),
        "metrics": metrics,
        "log_history": trainer.state.log_history,
        "created_at": now_utc().isoformat(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(manifest, ensure_ascii=False, indent=2, default=str) + "\n", "utf-8")
    return out


@dataclass
class TrainResult:
    output_dir: Path
    manifest: Path
    metrics: dict[str, Any]


def run(method: Method, cfg: RunConfig) -> TrainResult:
    """Train, save the adapter + tokenizer, evaluate when an eval split exists, write the manifest."""
    trainer = build_trainer(method, cfg)
    metrics = dict(trainer.train().metrics)
    if trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    trainer.save_model(trainer.args.output_dir)
    manifest = write_manifest(method, cfg, trainer, metrics)
    return TrainResult(output_dir=Path(trainer.args.output_dir), manifest=manifest, metrics=metrics)


# --- chat target --------------------------------------------------------------------------------


@dataclass
class HFChat:
    """A local causal LM (optionally with a LoRA adapter) answering chat messages, greedy by default."""

    model: Any
    tokenizer: Any
    model_id: str
    max_new_tokens: int = 512

    def generate(self, messages: list[dict[str, str]], **generate_kwargs: Any) -> str:
        import torch

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.model.device)
        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": False, **generate_kwargs}
        if self.tokenizer.pad_token_id is not None:
            kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        with torch.no_grad():
            out = self.model.generate(**inputs, **kwargs)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def load_hf_chat(path: str | Path, adapter: str | Path | None = None, **model_kwargs: Any) -> HFChat:
    """Base model at `path` (local dir or name), with the LoRA adapter at `adapter` applied if given.

    The tokenizer comes from the adapter directory when it has one (training saves it there), so a
    chat template changed during training is the one used to answer.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), **model_kwargs)
    tok_source = (
        adapter if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists() else path
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tok_source))
    model_id = f"hf:{path}"
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        model_id += f"+{adapter}"
    model.eval()
    return HFChat(model=model, tokenizer=tokenizer, model_id=model_id)
