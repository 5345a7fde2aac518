"""A SQLite checkpointer for the async graphs that writes on the event loop's own thread.

Why: `AsyncSqliteSaver` sends every statement through aiosqlite's worker thread, and each one comes
back through a future, a thread-safe callback and a wake-up of the event loop. A generation thread
writes a checkpoint and its task writes at every superstep (sync durability), so at high concurrency
that hand-off — not SQLite — was a large share of the loop's CPU (bench/throughput.py `--profile`).
SQLite itself answers a small indexed write in tens of microseconds, so doing it inline costs the
loop less than scheduling it elsewhere.

Same schema, same rows and the same commit per call as LangGraph's `SqliteSaver` (it *is* that class,
with its async methods running the sync ones), so checkpoint files stay interchangeable with
`AsyncSqliteSaver` and `langgraph dev`. Durability: WAL with `synchronous=NORMAL` — every committed
write survives a killed process (what resume relies on, tests/reliability/test_kill_resume.py); only
an OS crash or power loss can drop the last commits, as for medes' own store (`medes/store.py`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.sqlite import SqliteSaver


class InlineSqliteSaver(SqliteSaver):
    """`SqliteSaver` usable from `ainvoke`/`astream`: each async method calls its sync twin."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, Any]:
        return self.get_delta_channel_history(config=config, channels=channels)


@contextmanager
def inline_sqlite_saver(path: Path) -> Iterator[InlineSqliteSaver]:
    """Open (creating) the checkpoint database at `path`; closed on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        saver = InlineSqliteSaver(conn)
        saver.setup()
        yield saver
    finally:
        conn.close()
