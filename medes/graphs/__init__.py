"""LangGraph graphs: generate, evaluate, align, loop, ask.

Every graph runs on a SQLite checkpointer, so a killed run resumes from its threads' checkpoints.
`thread_phase` is the one reading of a checkpoint snapshot they all share.
"""

from __future__ import annotations

from collections.abc import Callable
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


async def run_thread(
    graph: Any, config: dict[str, Any], new_input: Callable[[], Any], **invoke: Any
) -> tuple[bool, dict[str, Any]]:
    """Run one checkpointed thread to its end: (it had already finished, its final state values).

    A finished thread is read, not rerun; an unfinished one resumes from its checkpoint with `None`;
    only a new one starts from `new_input()`. `invoke` goes to `graph.ainvoke` (context, durability).
    """
    snapshot = await graph.aget_state(config)
    phase = thread_phase(snapshot)
    if phase == "finished":
        return True, dict(snapshot.values)
    out = await graph.ainvoke(new_input() if phase == "new" else None, config, **invoke)
    return False, dict(out or {})
