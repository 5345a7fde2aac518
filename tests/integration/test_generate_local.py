"""`medes generate -n 5` end to end with the real local GGUF model and the built-in corpus pack.

Also exercises the no-`--index` path: the default index of the built-in pack is built under MEDES_HOME.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from medes.agents import gates
from medes.store import Store

pytestmark = pytest.mark.integration

MODEL = Path.home() / ".cache" / "medes" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


@pytest.fixture(scope="module")
def model_spec() -> str:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'medes[local]')")
    if not MODEL.is_file():
        pytest.skip(
            f"local model {MODEL} missing (run ../shared/scripts/get-test-model.sh or `medes models pull`)"
        )
    return f"llamacpp:{MODEL}"


@pytest.mark.timeout(3600)
def test_generate_five_with_the_local_model(model_spec, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MEDES_HOME", str(home))
    store_path = tmp_path / "medes.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "medes.cli",
        "generate",
        "-n",
        "5",
        "--mutations",
        "1",
        "--llm",
        model_spec,
        "--store",
        str(store_path),
        "--run",
        "int-gen",
        "--concurrency",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accepted" in proc.stdout and str(store_path) in proc.stdout

    from medes.retrieval.index import HybridIndex

    index = HybridIndex.open(home / "index")
    with Store(store_path) as db:
        scenarios = db.scenarios(run_id="int-gen")
        run = db.run("int-gen")
    assert scenarios, f"no scenario accepted; rejections: {run['summary']['rejections']}"
    assert run["manifest"]["index"]["fingerprint"] == index.manifest["fingerprint"]
    for s in scenarios:
        retrieved = [h.provision_id for h in s.provenance.retrieval]
        resolve = {n: index.get(n) for n in s.norm_ids}
        assert all(resolve.values()), s.norm_ids
        assert gates.check(s, retrieved_ids=retrieved, resolve=resolve) == [], s.query
        assert s.provenance.model_ids == [model_spec] and "draft" in s.provenance.prompt_hashes
