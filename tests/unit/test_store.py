import multiprocessing
import os
import signal

import pytest

from medes.records import Judgment, PreferencePair, Provenance, Response, Scenario
from medes.store import Store


def scenario(i: int, scene="器官移植", norms=("中华人民共和国医师法#第二十五条",)) -> Scenario:
    return Scenario(
        id=f"s{i}",
        scene=scene,
        query=f"我是一名医生，情况{i}",
        norm_ids=list(norms),
        reference="r",
        family_id=f"s{i}",
        provenance=Provenance(run_id="run1"),
    )


def judgment(jid, sid, rid, risky=False, q=(1, 1, 1, 1)) -> Judgment:
    return Judgment(
        id=jid,
        scenario_id=sid,
        response_id=rid,
        normative_violation=-1 if risky else 0,
        unsafe_suggestion=0,
        issue_identification=q[0],
        norm_citation=q[1],
        actionable_advice=q[2],
        empathy=q[3],
        run_id="run1",
    )


def test_roundtrip_and_idempotent_inserts(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        assert st.start_run("run1", "generate", {"seed": 1})
        assert not st.start_run("run1", "generate", {"seed": 2})  # resume keeps the first manifest
        assert st.run("run1")["manifest"] == {"seed": 1}
        assert st.add_scenario(scenario(1))
        assert not st.add_scenario(scenario(1))
        assert [s.id for s in st.scenarios(run_id="run1")] == ["s1"]
        st.add_response(Response(id="r1", scenario_id="s1", model_id="m", text="答", run_id="run1"))
        st.add_judgment(judgment("j1", "s1", "r1"))
        (j,) = st.judgments(run_id="run1")
        assert j.final == 1.0 and j.valid and not j.risky


def test_failure_stats_per_scene_and_norm(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        st.add_scenario(scenario(1))
        st.add_scenario(scenario(2, scene="辅助生殖", norms=("A#第一条",)))
        st.add_response(Response(id="r1", scenario_id="s1", model_id="m", text="答", run_id="run1"))
        st.add_response(Response(id="r2", scenario_id="s2", model_id="m", text="答", run_id="run1"))
        st.add_response(Response(id="r1b", scenario_id="s1", model_id="m", text="改", run_id="run1", round=1))
        st.add_judgment(judgment("j1", "s1", "r1", risky=True))
        st.add_judgment(judgment("j2", "s2", "r2"))
        st.add_judgment(judgment("j1b", "s1", "r1b"))  # a passing revision must not dilute the failure
        stats = st.failure_stats()
        assert stats["scene"]["器官移植"] == {"judged": 1, "failed": 1}
        assert stats["scene"]["辅助生殖"] == {"judged": 1, "failed": 0}
        assert stats["norm"]["A#第一条"]["failed"] == 0


def test_pair_with_failing_chosen_is_refused(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        bad = judgment("j1", "s1", "r1", risky=True)
        pair = PreferencePair(
            id="p",
            scenario_id="s1",
            prompt="q",
            chosen="a",
            rejected="b",
            chosen_response_id="r1",
            rejected_response_id="r2",
            chosen_judgment=bad,
            rejected_judgment=bad,
            margin=0,
        )
        with pytest.raises(ValueError, match="does not pass"):
            st.add_pair(pair)
        assert st.pairs() == []


def test_review_queue(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        j = judgment("j1", "s1", "r1").model_copy(update={"needs_review": True})
        st.add_judgment(j)
        assert [p.id for p in st.pending_reviews()] == ["j1"]
        st.record_review("j1", j.model_copy(update={"empathy": 0}), reviewer="expert")
        assert st.pending_reviews() == []
        assert st.reviews()[0].empathy == 0


def _writer(path):
    st = Store(path)
    i = 0
    while True:
        st.add_scenario(scenario(i))
        i += 1


def test_kill_9_never_leaves_a_half_written_row(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    proc = multiprocessing.get_context("spawn").Process(target=_writer, args=(path,))
    proc.start()
    import sqlite3
    import time

    deadline = time.time() + 60
    while time.time() < deadline:  # kill once the writer is mid-stream
        with sqlite3.connect(path) as db:
            if db.execute("SELECT COUNT(*) FROM scenarios").fetchone()[0] > 20:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    with Store(path) as st:
        rows = st.scenarios()
        assert rows, "the writer stored nothing before the kill"
        ids = sorted(int(s.id[1:]) for s in rows)
        assert ids == list(range(len(ids)))  # a prefix: nothing half-written, nothing skipped
