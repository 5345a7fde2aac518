"""Fixtures for the reliability tier: the simulated endpoint wired into medes settings, a cheap index.

The simulated OpenAI-compatible endpoint (tests/support/simserver.py) runs on loopback, which the
network guard allows; medes reaches it through the same settings a user sets
(MEDES_OPENAI_BASE_URL, MEDES_OPENAI_API_KEY), so these tests go through the real HTTP stack.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def point_at(monkeypatch, medes_home):
    """`point_at(srv, **env)`: medes settings aimed at a running SimServer (fresh settings cache)."""
    from medes.settings import get_settings

    def aim(srv, api_key: str = "sim-key", **env: str) -> None:
        monkeypatch.setenv("MEDES_OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("MEDES_OPENAI_API_KEY", api_key)
        monkeypatch.setenv("MEDES_LLM", "openai:sim-model")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    yield aim
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def hash_index(tmp_path_factory) -> Path:
    """The built-in corpus pack indexed with the instant `hash` embedder (no model weights)."""
    from medes.retrieval.index import HybridIndex
    from medes.retrieval.packs import builtin_pack_dir, load_corpus

    path = tmp_path_factory.mktemp("index") / "hash"
    report = load_corpus([builtin_pack_dir()])
    HybridIndex.build(report.provisions, "hash", packs=[m.id for m in report.packs]).save(path)
    return path
