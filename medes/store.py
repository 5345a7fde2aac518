"""SQLite dataset store: runs, scenarios, responses, judgments, preference pairs, gate events, ledger.

Each record is stored whole as JSON next to the few columns we filter on. Every write is one
transaction, so a crash (even kill -9) never leaves a half-written row; inserts are idempotent by id,
so a resumed run that re-submits a finished item stores nothing twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from medes.records import Judgment, PreferencePair, Response, Scenario, now_utc

T = TypeVar("T", bound=BaseModel)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, created_at TEXT NOT NULL, manifest TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'running', summary TEXT
);
CREATE TABLE IF NOT EXISTS scenarios (
  id TEXT PRIMARY KEY, run_id TEXT, scene TEXT, family_id TEXT, kind TEXT, created_at TEXT, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scenarios_run ON scenarios(run_id);
CREATE TABLE IF NOT EXISTS responses (
  id TEXT PRIMARY KEY, run_id TEXT, scenario_id TEXT, model_id TEXT, round INTEGER, created_at TEXT, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_run ON responses(run_id);
CREATE INDEX IF NOT EXISTS responses_scenario ON responses(scenario_id);
CREATE TABLE IF NOT EXISTS judgments (
  id TEXT PRIMARY KEY, run_id TEXT, scenario_id TEXT, response_id TEXT, valid INTEGER, risky INTEGER,
  final REAL, needs_review INTEGER, created_at TEXT, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS judgments_run ON judgments(run_id);
CREATE INDEX IF NOT EXISTS judgments_response ON judgments(response_id);
CREATE TABLE IF NOT EXISTS reviews (
  judgment_id TEXT PRIMARY KEY, reviewer TEXT, created_at TEXT, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pairs (
  id TEXT PRIMARY KEY, run_id TEXT, scenario_id TEXT, created_at TEXT, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gate_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, item_id TEXT, stage TEXT, passed INTEGER,
  reason TEXT, detail TEXT, created_at TEXT
);
CREATE INDEX IF NOT EXISTS gate_events_run ON gate_events(run_id);
CREATE TABLE IF NOT EXISTS ledger (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, node TEXT, model TEXT, prompt_tokens INTEGER,
  completion_tokens INTEGER, latency_s REAL, attempts INTEGER, transport_retries INTEGER,
  parse_retries INTEGER, outcome TEXT, error TEXT, ts REAL
);
CREATE INDEX IF NOT EXISTS ledger_run ON ledger(run_id);
"""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._db.execute(sql, tuple(params))
            return cur.fetchall()

    # ------------------------------------------------------------------ runs
    def start_run(self, run_id: str, kind: str, manifest: dict[str, Any]) -> bool:
        """Register a run; returns False when it already exists (a resume). The manifest is kept as first written."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs(id, kind, created_at, manifest) VALUES (?,?,?,?)",
                (run_id, kind, now_utc().isoformat(), json.dumps(manifest, ensure_ascii=False, default=str)),
            )
            return cur.rowcount == 1

    def finish_run(self, run_id: str, summary: dict[str, Any], status: str = "done") -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status=?, summary=? WHERE id=?",
                (status, json.dumps(summary, ensure_ascii=False, default=str), run_id),
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT id, kind, created_at, manifest, status, summary FROM runs WHERE id=?", (run_id,)
        )
        if not rows:
            return None
        rid, kind, created, manifest, status, summary = rows[0]
        return {
            "id": rid,
            "kind": kind,
            "created_at": created,
            "manifest": json.loads(manifest),
            "status": status,
            "summary": json.loads(summary) if summary else None,
        }

    def runs(self) -> list[dict[str, Any]]:
        return [self.run(r[0]) for r in self._rows("SELECT id FROM runs ORDER BY created_at")]  # type: ignore[misc]

    # ------------------------------------------------------------------ records
    def add_scenario(self, s: Scenario) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO scenarios(id, run_id, scene, family_id, kind, created_at, data) VALUES (?,?,?,?,?,?,?)",
                (
                    s.id,
                    s.provenance.run_id,
                    s.scene,
                    s.family_id or s.id,
                    s.kind,
                    s.provenance.created_at.isoformat(),
                    s.model_dump_json(),
                ),
            )
            return cur.rowcount == 1

    def add_response(self, r: Response) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO responses(id, run_id, scenario_id, model_id, round, created_at, data) VALUES (?,?,?,?,?,?,?)",
                (
                    r.id,
                    r.run_id,
                    r.scenario_id,
                    r.model_id,
                    r.round,
                    r.created_at.isoformat(),
                    r.model_dump_json(),
                ),
            )
            return cur.rowcount == 1

    def add_judgment(self, j: Judgment) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR REPLACE INTO judgments(id, run_id, scenario_id, response_id, valid, risky, final, needs_review, created_at, data)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    j.id,
                    j.run_id,
                    j.scenario_id,
                    j.response_id,
                    int(j.valid),
                    None if j.risky is None else int(j.risky),
                    j.final,
                    int(j.needs_review),
                    j.created_at.isoformat(),
                    j.model_dump_json(),
                ),
            )
            return cur.rowcount == 1

    def add_pair(self, p: PreferencePair) -> bool:
        if not (p.chosen_judgment.valid and not p.chosen_judgment.risky):
            raise ValueError(f"pair {p.id}: the chosen answer does not pass; refusing to store it")
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO pairs(id, run_id, scenario_id, created_at, data) VALUES (?,?,?,?,?)",
                (
                    p.id,
                    p.provenance.run_id,
                    p.scenario_id,
                    p.provenance.created_at.isoformat(),
                    p.model_dump_json(),
                ),
            )
            return cur.rowcount == 1

    def _load(self, table: str, model: type[T], where: str = "", params: Iterable[Any] = ()) -> list[T]:
        sql = f"SELECT data FROM {table} {where} ORDER BY created_at, id"
        return [model.model_validate_json(r[0]) for r in self._rows(sql, params)]

    @staticmethod
    def _where(**filters: Any) -> tuple[str, list[Any]]:
        parts = [(k, v) for k, v in filters.items() if v is not None]
        if not parts:
            return "", []
        return "WHERE " + " AND ".join(f"{k}=?" for k, _ in parts), [v for _, v in parts]

    def scenarios(self, run_id: str | None = None, scene: str | None = None) -> list[Scenario]:
        return self._load("scenarios", Scenario, *self._where(run_id=run_id, scene=scene))

    def scenario(self, scenario_id: str) -> Scenario | None:
        found = self._load("scenarios", Scenario, "WHERE id=?", (scenario_id,))
        return found[0] if found else None

    def has_scenario(self, scenario_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM scenarios WHERE id=?", (scenario_id,)))

    def responses(self, run_id: str | None = None, scenario_id: str | None = None) -> list[Response]:
        return self._load("responses", Response, *self._where(run_id=run_id, scenario_id=scenario_id))

    def judgments(self, run_id: str | None = None, response_id: str | None = None) -> list[Judgment]:
        return self._load("judgments", Judgment, *self._where(run_id=run_id, response_id=response_id))

    def pairs(self, run_id: str | None = None) -> list[PreferencePair]:
        return self._load("pairs", PreferencePair, *self._where(run_id=run_id))

    # ------------------------------------------------------------------ gates and ledger
    def add_gate_event(
        self, run_id: str, item_id: str, stage: str, passed: bool, reason: str = "", detail: str = ""
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO gate_events(run_id, item_id, stage, passed, reason, detail, created_at) VALUES (?,?,?,?,?,?,?)",
                (run_id, item_id, stage, int(passed), reason, detail[:4000], now_utc().isoformat()),
            )

    def gate_profile(self, run_id: str | None = None) -> dict[str, int]:
        """Rejections per `stage:reason`."""
        where, params = self._where(run_id=run_id)
        where = (where + " AND" if where else "WHERE") + " passed=0"
        rows = self._rows(
            f"SELECT stage, reason, COUNT(*) FROM gate_events {where} GROUP BY stage, reason", params
        )
        return {f"{stage}:{reason}": n for stage, reason, n in rows}

    def ledger_sink(self, entry: Any) -> None:
        e = asdict(entry)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO ledger(run_id, node, model, prompt_tokens, completion_tokens, latency_s, attempts,"
                " transport_retries, parse_retries, outcome, error, ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    e["run_id"],
                    e["node"],
                    e["model"],
                    e["prompt_tokens"],
                    e["completion_tokens"],
                    e["latency_s"],
                    e["attempts"],
                    e["transport_retries"],
                    e["parse_retries"],
                    e["outcome"],
                    e["error"][:2000],
                    e["ts"],
                ),
            )

    def ledger(self, run_id: str | None = None) -> list[dict[str, Any]]:
        where, params = self._where(run_id=run_id)
        with self._lock:
            cur = self._db.execute(f"SELECT * FROM ledger {where} ORDER BY seq", params)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # ------------------------------------------------------------------ guardian statistics and review
    def failure_stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """Judged answers and failures (risky or final < 0.6) per scene and per norm id, over all runs.

        Only the models' own answers count (round 0): guardian-guided revisions would dilute the signal.

        The generation planner weights its seeds by these counts (the guardian loop steers generation).
        """
        rows = self._rows(
            "SELECT s.data, j.risky, j.final FROM judgments j JOIN scenarios s ON s.id = j.scenario_id"
            " JOIN responses r ON r.id = j.response_id WHERE j.valid=1 AND r.round=0"
        )
        scenes: dict[str, dict[str, int]] = {}
        norms: dict[str, dict[str, int]] = {}
        for data, risky, final in rows:
            s = Scenario.model_validate_json(data)
            failed = int(bool(risky) or (final is not None and final < 0.6))
            for key, table in [(s.scene, scenes)] + [(n, norms) for n in s.norm_ids]:
                row = table.setdefault(key, {"judged": 0, "failed": 0})
                row["judged"] += 1
                row["failed"] += failed
        return {"scene": scenes, "norm": norms}

    def pending_reviews(self) -> list[Judgment]:
        return self._load(
            "judgments", Judgment, "WHERE needs_review=1 AND id NOT IN (SELECT judgment_id FROM reviews)", ()
        )

    def record_review(self, judgment_id: str, label: Judgment, reviewer: str) -> None:
        """Store an expert's label for a queued judgment; labelled rows become guardian training data."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO reviews(judgment_id, reviewer, created_at, data) VALUES (?,?,?,?)",
                (judgment_id, reviewer, now_utc().isoformat(), label.model_dump_json()),
            )

    def reviews(self) -> list[Judgment]:
        return [
            Judgment.model_validate_json(r[0])
            for r in self._rows("SELECT data FROM reviews ORDER BY created_at")
        ]
