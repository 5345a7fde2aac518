"""Fault storms on the wire: 429 bursts with Retry-After, 5xx, timeouts, dropped connections.

Against the simulated endpoint over real HTTP: the calls complete, backoff honours Retry-After,
and every request the endpoint saw is accounted for in the ledger (Store.ledger()), so retries are
visible, never silent. Faults are scheduled per request fingerprint, so the storms are exact.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, Field

from medes.llm import TokenLedger, get_llm, messages
from medes.store import Store
from tests.support.simserver import Scheduled, SimConfig, SimServer


class Verdict(BaseModel):
    analysis: str = Field(max_length=80)
    risky: bool
    score: int = Field(ge=0, le=4)


def _ask(llm, n: int) -> list:
    async def main():
        return await asyncio.gather(
            *(
                llm.structured(messages("评审员", f"第{i}个情境"), Verdict, node="judge", run_id="r")
                for i in range(n)
            )
        )

    return asyncio.run(main())


def test_429_burst_waits_retry_after_then_succeeds_and_the_ledger_shows_it(point_at, tmp_path):
    # the first attempt of every request is rate limited with Retry-After: 1
    config = SimConfig(schedule=(Scheduled("429", first=1, per_fingerprint=True),), retry_after=1.0)
    with SimServer(config) as srv, Store(tmp_path / "m.sqlite") as store:
        point_at(srv)
        llm = get_llm(ledger=TokenLedger(sink=store.ledger_sink), backoff_base_s=0.01)
        start = time.perf_counter()
        results = _ask(llm, 12)
        elapsed = time.perf_counter() - start
        stats = srv.stats()
        rows = store.ledger("r")
    assert all(r.parsed is not None for r in results)
    assert stats.by_outcome == {"429": 12, "ok": 12}
    assert len(rows) == 12
    assert all(r["transport_retries"] == 1 and r["attempts"] == 2 and r["outcome"] == "ok" for r in rows)
    # Retry-After (1 s) was honoured, not the 10 ms exponential base
    assert min(r["latency_s"] for r in rows) >= 0.95
    assert elapsed < 10


def test_5xx_drop_timeout_storm_every_call_recovers_and_every_request_is_in_the_ledger(point_at, tmp_path):
    # each distinct request meets, in order: 500, a dropped connection, a timeout, 503, then an answer
    schedule = tuple(
        Scheduled(fault, first=1, skip=k, per_fingerprint=True)
        for k, fault in enumerate(("500", "drop", "timeout", "503"))
    )
    with (
        SimServer(SimConfig(schedule=schedule, timeout_hold=5.0)) as srv,
        Store(tmp_path / "m.sqlite") as store,
    ):
        point_at(srv, MEDES_REQUEST_TIMEOUT_S="1")
        llm = get_llm(ledger=TokenLedger(sink=store.ledger_sink), transport_retries=5, backoff_base_s=0.01)
        results = _ask(llm, 16)
        stats = srv.stats()
        rows = store.ledger("r")
    assert all(r.parsed is not None for r in results)
    assert stats.by_outcome == {"500": 16, "drop": 16, "timeout": 16, "503": 16, "ok": 16}
    assert all(r["transport_retries"] == 4 and r["attempts"] == 5 and r["outcome"] == "ok" for r in rows)
    assert sum(r["attempts"] for r in rows) == stats.total


def test_retries_exhausted_is_a_recorded_failure_with_every_attempt_counted(point_at, tmp_path):
    config = SimConfig(schedule=(Scheduled("503", first=100, per_fingerprint=True),))
    with SimServer(config) as srv, Store(tmp_path / "m.sqlite") as store:
        point_at(srv)
        llm = get_llm(ledger=TokenLedger(sink=store.ledger_sink), transport_retries=2, backoff_base_s=0.01)
        [result] = _ask(llm, 1)
        stats = srv.stats()
        [row] = store.ledger("r")
    assert result.parsed is None and result.error.startswith("transport:")
    assert row["outcome"] == "error" and "503" in row["error"]
    assert stats.total == 3
    assert row["attempts"] == 3 and row["transport_retries"] == 2  # the ledger accounts for each request


def test_generate_run_completes_under_a_random_fault_storm(point_at, hash_index, tmp_path):
    from medes.graphs.generate import GenerateRequest, run_generate

    faults = {"429": 0.1, "500": 0.05, "502": 0.03, "503": 0.05, "drop": 0.05, "timeout": 0.03}
    with SimServer(SimConfig(faults=faults, retry_after=0.0, timeout_hold=5.0, seed=7)) as srv:
        point_at(srv, MEDES_REQUEST_TIMEOUT_S="1", MEDES_MAX_CONCURRENCY="8")
        request = GenerateRequest(n=8, scenes=("常规诊疗", "器官移植", "人体试验", "医患关系"), mutations=1)
        result = run_generate(
            request, run_id="storm", store_path=tmp_path / "m.sqlite", index_dir=hash_index, concurrency=4
        )
        stats = srv.stats()
    with Store(tmp_path / "m.sqlite") as store:
        rows = store.ledger("storm")
        scenarios = store.scenarios(run_id="storm")
        run = store.run("storm")
        store_profile = store.gate_profile("storm")
    faulted = sum(v for k, v in stats.by_outcome.items() if k != "ok")
    assert faulted > 0, stats.by_outcome
    assert run["status"] == "done" and result.summary["threads"] == {"done": 8, "skipped": 0, "failed": 0}
    # no thread lost to the storm: each ended with its output stored or rejected by a gate, not an error
    assert not [k for k in store_profile if k.startswith("error:")], store_profile
    assert len(scenarios) == result.summary["accepted"]
    assert sum(r["transport_retries"] for r in rows) > 0
    # every request the endpoint saw is an attempt in the ledger (node-level replays included)
    assert sum(r["attempts"] for r in rows) == stats.total
