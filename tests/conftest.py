"""Shared fixtures: ../shared locator, network guard, tiers."""

from __future__ import annotations

import socket

import pytest

from tests.support.shared import shared_path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, request):
    """Fail any test that reaches beyond loopback: unit tests never call real endpoints."""
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
            return real_connect(sock, address)
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        raise RuntimeError(f"test tried to reach the network: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


@pytest.fixture
def medes_home(tmp_path, monkeypatch):
    """An isolated MEDES_HOME so tests never touch the user's cache."""
    home = tmp_path / "medes-home"
    home.mkdir()
    monkeypatch.setenv("MEDES_HOME", str(home))
    from medes.settings import get_settings

    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
