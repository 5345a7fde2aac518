"""LangGraph graphs: generate, evaluate, align, loop, ask.

Every graph runs on a SQLite checkpointer, so a killed run resumes from its threads' checkpoints.
`thread_phase` is the one reading of a checkpoint snapshot they all share.
"""

from __future__ import annotations

from typing import Any, Literal

ThreadPhase = Literal["new", "unfinished", "finished"]


def thread_phase(snapshot: Any) -> ThreadPhase:
    """Where a checkpointed thread stands: never started, stopped part-way, or reached END.

    A thread with any checkpoint that has not reached END must be resumed with `None` as the input.
    An empty `next` is not enough to call it finished: after a kill, a superstep whose tasks all saved
    their writes before the next checkpoint shows `next == ()` with those tasks still in `tasks`;
    starting it again with a fresh input would replay it from START on top of its reducer channels.
    """
    if snapshot.created_at is None and not snapshot.values:
        return "new"
    if snapshot.values and not snapshot.next and not snapshot.tasks:
        return "finished"
    return "unfinished"


def is_finished(snapshot: Any) -> bool:
    return thread_phase(snapshot) == "finished"
