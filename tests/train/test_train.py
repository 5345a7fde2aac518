"""LoRA SFT and DPO on a tiny local Qwen2, fed by export rows built from hand-written records.

Behaviour, as in TRL's own tests: the loss is logged, LoRA weights changed, base weights did not,
and the saved adapter loads back as a chat target.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.train
pytest.importorskip("trl")
pytest.importorskip("peft")

from medes.alignment.export import export_run  # noqa: E402
from medes.alignment.tiny import build_tiny_model, demo_records  # noqa: E402
from medes.alignment.train import RunConfig, build_trainer, load_hf_chat, lora_config, trl_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    export_run(*demo_records(), out, formats=["jsonl"])
    return out


def _cfg(tiny_model: Path, export_dir: Path, out: Path, kind: str, **trainer) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"name_or_path": str(tiny_model)},
            "data": {"dir": str(export_dir), "kind": kind},
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
            "trainer": {
                "output_dir": str(out),
                "max_steps": 3,
                "per_device_train_batch_size": 2,
                "learning_rate": 1e-2,  # tiny model: the default rate barely moves the adapter in 3 steps
                "logging_steps": 1,
                "max_length": 512,
                "save_strategy": "no",
                **trainer,
            },
        }
    )


def _train_and_check(trainer) -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any("loss" in entry for entry in trainer.state.log_history)
    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert lora and all(after[n].requires_grad for n in lora)
    for name, old in before.items():
        changed = not torch.equal(old, after[name].detach())
        if "lora_" in name:
            assert changed, f"LoRA weight {name} did not change"
        else:
            assert not changed, f"base weight {name} changed"
    return {n: p.detach().clone() for n, p in after.items() if "lora_" in n}


def test_export_rows_are_trl_conversational(export_dir):
    from trl.data_utils import is_conversational

    for kind in ("sft", "sft_prompt_completion", "preference", "unpaired"):
        row = json.loads((export_dir / kind / "train.jsonl").read_text("utf-8").splitlines()[0])
        assert is_conversational(row), kind


def test_tiny_tokenizer_handles_chinese_and_masks_the_answer(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = "知情同意书必须由受试者本人签署，罕见字亦可编码：龘"
    assert tok.decode(tok(text)["input_ids"]) == text
    messages = [{"role": "user", "content": "可以代签吗？"}, {"role": "assistant", "content": "不可以。"}]
    enc = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    answer = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(answer) == "不可以。<|im_end|>"


def test_sft_trains_lora_only_and_adapter_loads(tiny_model, export_dir, tmp_path):
    out = tmp_path / "sft"
    trainer = build_trainer("sft", _cfg(tiny_model, export_dir, out, "sft", assistant_only_loss=True))
    trained = _train_and_check(trainer)
    trainer.save_model(str(out))
    assert (out / "adapter_model.safetensors").exists()

    chat = load_hf_chat(tiny_model, adapter=out)
    loaded = {n: p for n, p in chat.model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(trained)
    key = next(n for n in trained if "lora_B" in n)
    loaded_key = next(n for n in loaded if n.endswith(key.split("base_model.model.", 1)[-1]))
    assert torch.allclose(loaded[loaded_key], trained[key])
    reply = chat.generate([{"role": "user", "content": "我可以替受试者签字吗？"}], max_new_tokens=8)
    assert isinstance(reply, str)
    assert chat.model_id == f"hf:{tiny_model}+{out}"


def test_dpo_trains_lora_only(tiny_model, export_dir, tmp_path):
    trainer = build_trainer("dpo", _cfg(tiny_model, export_dir, tmp_path / "dpo", "preference", max_steps=2))
    _train_and_check(trainer)
    assert any("rewards/margins" in entry for entry in trainer.state.log_history)


def test_cli_trains_from_example_config(tiny_model, export_dir, tmp_path):
    """configs/sft.yaml as shipped, pointed at the tiny model: its keys are all valid for TRL/PEFT."""
    from typer.testing import CliRunner

    from medes.cli import app

    raw = yaml.safe_load((REPO / "configs" / "sft.yaml").read_text("utf-8"))
    raw["model"] = {"name_or_path": str(tiny_model)}
    raw["data"].update(dir=str(export_dir), eval_split=None)
    raw["trainer"].update(
        output_dir=str(tmp_path / "run"), max_steps=1, eval_strategy="no", save_strategy="no"
    )
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    done = CliRunner().invoke(app, ["train", "sft", "--config", str(config)])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "run" / "run_manifest.json").read_text("utf-8"))
    assert manifest["method"] == "sft" and manifest["data"]["rows"]["train"] == 8
    assert len(manifest["data"]["fingerprint"]) == 64 and manifest["versions"]["trl"]
    assert "train_loss" in manifest["metrics"]
    assert (tmp_path / "run" / "adapter_model.safetensors").exists()


def test_example_dpo_config_builds_trl_configs():
    cfg = RunConfig.load(REPO / "configs" / "dpo.yaml")
    args = trl_config("dpo", cfg)
    assert args.beta == 0.1 and args.max_length == 2048
    assert lora_config(cfg).r == 16


def test_missing_eval_split_is_a_clear_error(tiny_model, export_dir, tmp_path):
    cfg = _cfg(tiny_model, export_dir, tmp_path, "sft")
    cfg.data["eval_split"] = "validation"
    with pytest.raises(FileNotFoundError, match="eval_split: null"):
        build_trainer("sft", cfg)
    cfg.data.update(eval_split=None, kind="preference")
    with pytest.raises(ValueError, match="sft trains on data.kind"):
        build_trainer("sft", cfg)
