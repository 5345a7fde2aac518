"""`medes generate` killed with SIGKILL mid-run, then resumed with `--run ID`.

The subprocess runs the real CLI with a `fake:` model whose calls are slowed down and logged (thread
id, node, prompt hash) when they complete. After the resume: nothing lost (every planned item stored
with all its mutations), nothing stored twice, and no thread that had finished before the kill made
a single call again (any other repeated call is a step in flight at the kill: ≤ concurrency × branches).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_generate_fakes import PROVISIONS

from medes.store import Store

UNIT = Path(__file__).resolve().parent

WRAPPER = """
import hashlib, json, os, sys, time
from pathlib import Path
sys.path.insert(0, {unit!r})
from test_generate_fakes import DraftingScript
from medes import fake

log = Path(os.environ["FAKE_LOG"])
done = len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0
script = DraftingScript(offset=done)  # fresh texts: a repeated call must not look like a duplicate

class Slow(fake.FakeChatModel):
    def _generate(self, messages, stop=None, run_manager=None, **kw):
        time.sleep(float(os.environ.get("FAKE_DELAY", "0.3")))
        out = super()._generate(messages, stop, run_manager, **kw)
        meta = run_manager.metadata if run_manager is not None else {{}}
        prompt = hashlib.sha256("".join(str(m.content) for m in messages).encode()).hexdigest()[:16]
        with log.open("a", encoding="utf-8") as f:
            f.write(json.dumps({{"thread": meta.get("thread_id"), "node": meta.get("langgraph_node"),
                                "prompt": prompt}}) + "\\n")
        return out

fake.FakeChatModel.from_spec = classmethod(lambda cls, spec: Slow(script=[script], cycle=True))
from medes.cli import app
app(sys.argv[1:], prog_name="medes")
"""


def _calls(log: Path) -> list[dict]:
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by SIGKILL
            pass
    return rows


def _finished_threads(checkpoints: Path, run_id: str, n: int) -> set[str]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    from medes.graphs import is_finished
    from medes.graphs.generate import build_graph

    if not checkpoints.exists():
        return set()
    with sqlite3.connect(checkpoints) as conn:
        graph = build_graph().compile(checkpointer=SqliteSaver(conn))
        done = set()
        for i in range(n):
            config = {"configurable": {"thread_id": f"{run_id}:{i}"}}
            if is_finished(graph.get_state(config)):
                done.add(f"{run_id}:{i}")
        return done


@pytest.mark.timeout(600)
def test_kill_9_then_resume_loses_nothing_duplicates_nothing_repeats_no_finished_call(tmp_path):
    from medes.retrieval.index import HybridIndex

    index_dir = tmp_path / "index"
    HybridIndex.build(PROVISIONS, "hash").save(index_dir)
    wrapper = tmp_path / "run_medes.py"
    wrapper.write_text(WRAPPER.format(unit=str(UNIT)), encoding="utf-8")
    log, store_path = tmp_path / "calls.jsonl", tmp_path / "medes.sqlite"
    env = {
        **os.environ,
        "MEDES_HOME": str(tmp_path / "home"),
        "FAKE_LOG": str(log),
        "FAKE_DELAY": "0.3",
        "PYTHONPATH": str(UNIT.parents[1]),
    }
    n, k, concurrency, run_id = 4, 2, 2, "gen-kill"  # ≤ 12 + 2 calls: within the 16 distinct fake texts
    args = [
        sys.executable,
        str(wrapper),
        "generate",
        "-n",
        str(n),
        "--mutations",
        str(k),
        "--run",
        run_id,
        "--llm",
        "fake:slow",
        "--store",
        str(store_path),
        "--index",
        str(index_dir),
        "--concurrency",
        str(concurrency),
        "--scenes",
        "常规诊疗,器官移植,人体试验",
    ]
    total_calls = n * (1 + k)

    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(_calls(log)) >= total_calls // 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before the kill: {proc.communicate()[1].decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _calls(log)
    assert 0 < len(before) < total_calls

    checkpoints = store_path.with_name(f"{store_path.stem}.checkpoints.sqlite")
    finished = _finished_threads(checkpoints, run_id, n)
    with Store(store_path) as db:
        stored_before = {s.id for s in db.scenarios(run_id=run_id)}

    resumed = subprocess.run(
        args[:2]
        + [
            "generate",
            "--run",
            run_id,
            "--llm",
            "fake:slow",
            "--store",
            str(store_path),
            "--index",
            str(index_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(resumed)" in resumed.stdout
    after = _calls(log)[len(before) :]

    with Store(store_path) as db:
        scenarios = db.scenarios(run_id=run_id)
        run = db.run(run_id)
    # nothing lost: every planned item has its draft and all its mutations
    roots = [s for s in scenarios if s.parent_id is None]
    assert len(roots) == n, resumed.stdout
    for root in roots:
        family = sorted(len(c.attack) for c in scenarios if c.family_id == root.id)
        assert family == [0] + [1] * k, resumed.stdout
    # nothing twice, and what was stored before the kill is still there
    assert len({s.query for s in scenarios}) == len(scenarios) == n * (1 + k)
    assert stored_before <= {s.id for s in scenarios}
    assert run["status"] == "done" and len(run["manifest"]["plan"]) == n
    # finished threads made no call after the kill; other repeats were in flight at the kill
    assert all(c["thread"] is not None for c in before + after)
    assert not [c for c in after if c["thread"] in finished]
    in_flight = concurrency * k  # threads in flight × parallel mutate branches each
    repeated = Counter((c["thread"], c["prompt"]) for c in before + after)
    assert sum(v - 1 for v in repeated.values()) <= in_flight
    assert len(before) + len(after) <= total_calls + in_flight
