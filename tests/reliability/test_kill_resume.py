"""`medes generate` killed with SIGKILL at random points against the simulated endpoint, then resumed.

Counted at the endpoint, by request fingerprint (hash of the messages and the schema name):
- 0 lost: after the resume every planned item has its draft and all its mutations stored;
- 0 duplicated: no scenario stored twice, nothing stored before the kill is gone;
- 0 repeated calls for finished scenarios: no request of a thread that had finished before the kill
  reaches the endpoint again (the fingerprints of a finished thread's requests are rebuilt from its
  checkpoint and must all have been seen before the kill — the check cannot pass vacuously);
- the only repeats at all are steps that were in flight at the kill.

Default selection: 3 trials of 30 scenarios. `-m slow`: 20 trials of 200 scenarios (the benchmark).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from medes.store import Store
from tests.support.simserver import Latency, SimConfig, SimServer, fingerprint

REPO = Path(__file__).resolve().parents[2]
CLI = "import sys; from medes.cli import app; app(sys.argv[1:], prog_name='medes')"
SCENES = "常规诊疗,器官移植,人体试验,医患关系,数字医疗,辅助生殖"
LLM_SLOTS, THREADS = 16, 8


def _wire(messages) -> list[dict[str, str]]:
    """Messages as langchain-openai puts them on the wire (what the simulator fingerprints)."""
    role = {"system": "system", "human": "user"}
    return [{"content": m.content, "role": role[m.type]} for m in messages]


def thread_states(checkpoints: Path, run_id: str, n: int) -> dict[str, dict | None]:
    """Each planned thread's final state values, or None while it is unfinished."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from medes.graphs.generate import build_graph, thread_id

    out: dict[str, dict | None] = {thread_id(run_id, i): None for i in range(n)}
    if not checkpoints.exists():
        return out
    with sqlite3.connect(checkpoints) as conn:
        graph = build_graph().compile(checkpointer=SqliteSaver(conn))
        for tid in out:
            snap = graph.get_state({"configurable": {"thread_id": tid}})
            # finished = nothing next and no task of the last step left: a checkpoint whose step
            # completed (writes saved) before the following step was prepared has next == () too
            if snap.values and not snap.next and not snap.tasks:
                out[tid] = snap.values
    return out


def request_fingerprints(state: dict, index) -> set[str]:
    """The fingerprints of every LLM request a finished thread made, rebuilt from its state."""
    from medes.agents.drafter import ScenarioParts, draft_prompt
    from medes.agents.mutator import mutate_prompt
    from medes.agents.planner import PlanItem, provision_brief
    from medes.llm import messages
    from medes.records import Scenario

    item = PlanItem.model_validate(state["item"])
    provisions = [index.get(h["provision_id"]) for h in state["hits"]]
    prompt = draft_prompt(
        item.scene, item.kind, [provision_brief(p) for p in provisions], speaker=item.speaker, setting=item.setting
    )
    name = "ObjectiveDraft" if item.kind == "objective" else "SubjectiveDraft"
    fps = {fingerprint(_wire(messages(prompt.system, prompt.user)), name)}
    if state.get("draft_ok"):
        parent = Scenario.model_validate(state["draft"])
        parts = ScenarioParts.model_validate(state["parts"]) if state.get("parts") else None
        for op in item.operators:
            p = mutate_prompt(op, parent, parts)
            fps.add(fingerprint(_wire(messages(p.system, p.user)), "ScenarioParts"))
    return fps


def kill_and_resume(tmp_path: Path, index_dir: Path, *, n: int, mutations: int, trial: int) -> dict[str, int]:
    rng = random.Random(trial)
    store_path, run_id = tmp_path / "medes.sqlite", f"gen-kill-{trial}"
    checkpoints = store_path.with_name(f"{store_path.stem}.checkpoints.sqlite")
    config = SimConfig(latency=Latency("uniform", 0.05), seed=trial)
    with SimServer(config) as srv:
        env = {
            **os.environ,
            "MEDES_HOME": str(tmp_path / "home"),
            "MEDES_OPENAI_BASE_URL": srv.base_url,
            "MEDES_OPENAI_API_KEY": "sim",
            "MEDES_MAX_CONCURRENCY": str(LLM_SLOTS),
            "PYTHONPATH": str(REPO),
        }
        args = [sys.executable, "-c", CLI, "generate", "--run", run_id, "--llm", "openai:sim-model"]
        args += ["--store", str(store_path), "--index", str(index_dir)]
        first = [
            *args,
            "-n",
            str(n),
            "--mutations",
            str(mutations),
            "--concurrency",
            str(THREADS),
            "--scenes",
            SCENES,
        ]
        proc = subprocess.Popen(first, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # every item makes at least its draft call, so a kill after 10–90 % of n requests always lands
        # mid-run, however many drafts the gates reject (and so skip their mutations)
        kill_at = rng.randint(max(1, n // 10), n * 9 // 10)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and srv.stats().by_outcome["ok"] < kill_at:
            time.sleep(0.01)
        assert proc.poll() is None, f"run ended before the kill: {proc.communicate()[1].decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)  # let the server notice the dropped connections
        before = srv.stats()

        from medes.retrieval.index import HybridIndex

        at_kill = thread_states(checkpoints, run_id, n)
        index = HybridIndex.open(index_dir)
        finished = {t: request_fingerprints(v, index) for t, v in at_kill.items() if v is not None}
        with Store(store_path) as db:
            stored_before = {s.id for s in db.scenarios(run_id=run_id)}
        resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "(resumed)" in resumed.stdout
        after = srv.stats()

    answered_before = {r.fingerprint for r in before.records if r.outcome == "ok"}
    seen_before = {r.fingerprint for r in before.records}
    new = after.records[len(before.records) :]
    finished_fps = set().union(*finished.values()) if finished else set()
    # the rebuilt fingerprints are real: every one of them was answered before the kill
    assert finished_fps <= answered_before, "fingerprint reconstruction disagrees with the endpoint"
    # items planned with the same (scene, seed norm, kind) send identical prompts (with more items
    # than a scene has candidate norms): a finished thread's fingerprint may be asked again only
    # by an unfinished twin, at most once per such twin
    with Store(store_path) as db:
        plan = db.run(run_id)["manifest"]["plan"]
    group = {f"{run_id}:{it['index']}": (it["scene"], it["seed_norm"], it["kind"]) for it in plan}
    open_twins = Counter(group[t] for t, v in at_kill.items() if v is None)
    asked_again = Counter(r.fingerprint for r in new if r.fingerprint in finished_fps)
    for tid, fps in finished.items():
        for fp in fps & set(asked_again):
            assert asked_again[fp] <= open_twins[group[tid]], (
                f"{tid}: a finished scenario's call was repeated"
            )
    # other repeats are steps in flight (sent, or answered but not yet checkpointed) at the kill:
    # at most one per LLM slot plus one per thread
    # (plus the identical prompts of twin items)
    sizes = Counter(group.values())
    twins = sum(k for k in sizes.values() if k > 1) * (1 + mutations)
    repeated = Counter(r.fingerprint for r in new if r.fingerprint in seen_before)
    assert sum(repeated.values()) <= LLM_SLOTS + THREADS + twins, repeated

    final = thread_states(checkpoints, run_id, n)
    with Store(store_path) as db:
        scenarios = db.scenarios(run_id=run_id)
        run = db.run(run_id)
    ids = {s.id for s in scenarios}
    assert run["status"] == "done" and len(run["manifest"]["plan"]) == n
    assert all(v is not None for v in final.values()), "a thread is unfinished after the resume"
    # 0 lost: what the threads accepted is exactly what the store holds, and every planned output
    # (draft + one child per operator when the draft passed) is either stored or a recorded rejection
    assert set().union(*(v.get("stored", []) for v in final.values())) == ids
    for tid, v in final.items():
        expected = 1 + (len(v["item"]["operators"]) if v.get("draft_ok") else 0)
        accounted = set(v.get("stored", [])) | {r["item"] for r in v.get("rejections", [])}
        assert len(accounted) == expected, (tid, v.get("stored"), v.get("rejections"))
    # 0 duplicated, nothing stored before the kill is gone, finished threads were not re-run
    assert len({s.query for s in scenarios}) == len(scenarios)
    assert stored_before <= ids
    for tid, v in at_kill.items():
        if v is not None:
            assert final[tid].get("stored") == v.get("stored"), tid
    return {
        "kill_at": kill_at,
        "finished_before_kill": len(finished),
        "stored_before_kill": len(stored_before),
        "repeated_in_flight": sum(repeated.values()),
        "twin_items": sum(k for k in sizes.values() if k > 1),
        "requests": after.total,
    }


@pytest.mark.timeout(600)
@pytest.mark.parametrize("trial", range(3))
def test_kill_9_then_resume_30_scenarios(tmp_path, hash_index, trial):
    report = kill_and_resume(tmp_path, hash_index, n=30, mutations=1, trial=trial)
    print("kill-resume", report)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("trial", range(20))
def test_kill_9_then_resume_200_scenarios(tmp_path, hash_index, trial):
    report = kill_and_resume(tmp_path, hash_index, n=200, mutations=2, trial=100 + trial)
    print("kill-resume", report)
