"""The whole alignment loop on the local GGUF model, then export, LoRA SFT/DPO on the tiny model, and
`medes evaluate` comparing the tiny base model with its adapter through `hf:` specs.

Slow on a shared CPU (several minutes): one loop round of two drafts without mutations, one revision
round at most, two training steps each. Timings are printed (run with `-s`) and recorded in
docs/benchmarks.md, "Alignment loop".
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medes.cli import app

pytestmark = pytest.mark.integration

MODEL = Path.home() / ".cache" / "medes" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
INDEX_CACHE = Path(os.environ.get("MEDES_TEST_INDEX", "/tmp/medes-cache/index-builtin"))


@pytest.fixture(scope="module")
def local_spec() -> str:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'medes[local]')")
    if not MODEL.is_file():
        pytest.skip(f"local model missing: {MODEL} (run `medes models pull`)")
    return f"llamacpp:{MODEL}"


@pytest.fixture(scope="module")
def index_dir() -> Path:
    """The built-in pack's index, built once and cached (embedding it is the expensive part)."""
    if not (INDEX_CACHE / "manifest.json").exists():
        result = CliRunner().invoke(app, ["index", "build", "--out", str(INDEX_CACHE)])
        assert result.exit_code == 0, result.output
    return INDEX_CACHE


def _invoke(args: list[str], timings: dict[str, float], name: str) -> str:
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, args)
    timings[name] = round(time.perf_counter() - t0, 1)
    print(f"[{name}] {timings[name]} s, load {os.getloadavg()[0]:.1f}: medes {' '.join(args)}")
    assert result.exit_code == 0, f"medes {' '.join(args)} failed:\n{result.output}"
    return result.output


def _split_with_rows(export: Path, kind: str) -> str | None:
    for split in ("train", "validation", "test"):
        path = export / kind / f"{split}.jsonl"
        if path.exists() and path.read_text(encoding="utf-8").strip():
            return split
    return None


def _train_config(path: Path, model: Path, data: Path, kind: str, split: str, out: Path) -> Path:
    config = {
        "model": {"name_or_path": str(model)},
        "data": {"dir": str(data), "kind": kind, "train_split": split, "eval_split": None},
        "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
        "trainer": {
            "output_dir": str(out),
            "max_steps": 2,
            "per_device_train_batch_size": 1,
            "learning_rate": 1e-2,  # tiny model: a default rate does not move the adapter in two steps
            "logging_steps": 1,
            "max_length": 512,
            "save_strategy": "no",
            "eval_strategy": "no",
            "report_to": "none",
        },
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.timeout(3600)  # ~20 min at load 10 on 2 cores: each local LLM call takes 1–4 min
def test_loop_export_train_compare(local_spec, index_dir, tmp_path, medes_home):
    pytest.importorskip("trl")
    timings: dict[str, float] = {}
    out = _invoke(
        [
            "loop",
            "--rounds",
            "1",
            "-n",
            "2",
            "--mutations",
            "0",
            "--align-rounds",
            "1",
            "--llm",
            local_spec,
            "--index",
            str(index_dir),
            "--loop-id",
            "it",
            "--out",
            str(tmp_path / "loop"),
            "--concurrency",
            "1",
        ],
        timings,
        "loop",
    )
    assert "round 1:" in out
    rounds = (tmp_path / "loop" / "rounds.csv").read_text(encoding="utf-8").splitlines()
    assert len(rounds) == 2 and rounds[1].startswith("1,it-r1-gen,it-r1,")
    assert (tmp_path / "loop" / "report.html").exists()

    from medes.store import Store

    with Store(medes_home / "medes.sqlite") as db:
        responses = db.responses(run_id="it-r1")
        judgments = db.judgments(run_id="it-r1")
        pairs = db.pairs(run_id="it-r1")
        assert responses and {r.id for r in responses} <= {j.response_id for j in judgments}
        for r in responses:
            if r.round:
                assert r.parent_id in {x.id for x in responses} and r.model_id == f"revise:{local_spec}"
        for p in pairs:
            assert p.chosen_judgment.valid and not p.chosen_judgment.risky and p.margin > 0
        summary = db.run("it-r1")["summary"]
    print(
        "[loop summary]",
        json.dumps(
            {k: summary[k] for k in ("status", "pairs", "sft_rows", "before", "after")}, ensure_ascii=False
        ),
    )

    export = tmp_path / "export"
    _invoke(["export", "--run", "it-r1", "--out", str(export), "--format", "jsonl"], timings, "export")

    tiny = tmp_path / "tiny"
    _invoke(["train", "tiny-model", "--out", str(tiny)], timings, "tiny-model")

    # the loop's own rows when it produced them; the built-in demo records otherwise (the 0.5B judge
    # rarely passes a 0.5B answer, so a short loop may emit no SFT row or pair)
    from medes.alignment.export import export_run
    from medes.alignment.tiny import demo_records

    sources = {}
    for kind in ("sft", "preference"):
        if _split_with_rows(export, kind) is None:
            demo = tmp_path / "demo-export"
            if not demo.exists():
                export_run(*demo_records(), demo, formats=["jsonl"])
            sources[kind] = demo
        else:
            sources[kind] = export
    print("[training data]", {k: str(v) for k, v in sources.items()})

    sft_cfg = _train_config(
        tmp_path / "sft.yaml",
        tiny,
        sources["sft"],
        "sft",
        _split_with_rows(sources["sft"], "sft"),
        tmp_path / "sft",
    )
    _invoke(["train", "sft", "--config", str(sft_cfg)], timings, "train sft")
    assert (tmp_path / "sft" / "adapter_model.safetensors").exists()
    dpo_cfg = _train_config(
        tmp_path / "dpo.yaml",
        tiny,
        sources["preference"],
        "preference",
        _split_with_rows(sources["preference"], "preference"),
        tmp_path / "dpo",
    )
    _invoke(["train", "dpo", "--config", str(dpo_cfg)], timings, "train dpo")
    assert (tmp_path / "dpo" / "adapter_model.safetensors").exists()

    base, tuned = f"hf:{tiny}", f"hf:{tiny}+{tmp_path / 'sft'}"
    t0 = time.perf_counter()
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            base,
            "--model",
            tuned,
            "--run",
            "it-r1-gen",
            "--limit",
            "1",
            "--judge",
            local_spec,
            "--index",
            str(index_dir),
            "--out",
            str(tmp_path / "compare"),
            "--eval-id",
            "it-compare",
        ],
    )
    timings["evaluate base vs adapter"] = round(time.perf_counter() - t0, 1)
    print(f"[evaluate base vs adapter] {timings['evaluate base vs adapter']} s\n{result.output}")
    # a random-weight tiny model may answer with whitespace only: that answer is scored by rule (final 0)
    assert result.exit_code == 0, result.output
    with Store(medes_home / "medes.sqlite") as db:
        ledger = db.ledger("it-compare")
    assert {e["model"] for e in ledger if e["node"] == "respond"} == {base, tuned}
    assert base in result.output and tuned in result.output
    print("[timings]", json.dumps(timings))
