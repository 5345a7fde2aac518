"""`thread_phase`: a thread whose fan-out branches all saved their writes before the process died
(no checkpoint after them) is unfinished and resumes with `None`, not a fresh input. The end-to-end
case is test_generate_resume.py (kill -9 of `medes generate`)."""

from __future__ import annotations

import copy
import operator
from typing import Annotated

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

from medes.graphs import thread_phase


class State(TypedDict, total=False):
    seed: str
    parts: Annotated[list[str], operator.add]
    joined: str


def build():
    g = StateGraph(State)
    g.add_node("start", lambda s: {})
    g.add_node("branch", lambda task: {"parts": [task["part"]]})
    g.add_node("join", lambda s: {"joined": "+".join(sorted(s["parts"]))})
    g.add_edge(START, "start")
    g.add_conditional_edges("start", lambda s: [Send("branch", {"part": f"{s['seed']}{i}"}) for i in (1, 2)])
    g.add_edge("branch", "join")
    g.add_edge("join", END)
    return g


class DiesBeforeCheckpoint(InMemorySaver):
    """Saves the branches' writes, then the process 'dies' before the checkpoint that follows them."""

    def put(self, config, checkpoint, metadata, new_versions):
        if metadata.get("step") == 2:
            raise SystemExit("killed")
        return super().put(config, checkpoint, metadata, new_versions)


def test_fresh_finished_and_killed_between_writes_and_checkpoint():
    saver = DiesBeforeCheckpoint()
    graph = build().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    assert thread_phase(graph.get_state(config)) == "new"

    try:
        graph.invoke({"seed": "a"}, config, durability="sync")
    except SystemExit:
        pass
    snapshot = graph.get_state(config)
    assert snapshot.next == ()  # the trap: it looks done
    assert snapshot.tasks and all(t.result is not None for t in snapshot.tasks)
    assert thread_phase(snapshot) == "unfinished"

    def reopen():  # the same saved state under a saver that no longer dies
        graph = build().compile(checkpointer=InMemorySaver())
        for name in ("storage", "writes", "blobs"):
            setattr(graph.checkpointer, name, copy.deepcopy(getattr(saver, name)))
        return graph

    resumed = reopen()
    out = resumed.invoke(None, config)  # the saved branch writes are used, not redone
    assert sorted(out["parts"]) == ["a1", "a2"] and out["joined"] == "a1+a2"
    assert thread_phase(resumed.get_state(config)) == "finished"
