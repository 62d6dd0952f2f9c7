"""A run's stream in the database: what the activities write, what readers read.

Every event of a run (token chunks from the LLM activity, a committed step's messages, the
outcome) is a row numbered by its offset in the run's stream, so a reader on any machine
resumes from an offset and history never carries a token. Writers of one run take turns: the
write lock on SQLite, a transaction-scoped advisory lock on PostgreSQL. On PostgreSQL a write
also notifies the run's readers once committed (`perdure.store.stream_notify`); on SQLite
they poll.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import Table, bindparam, func, insert, select, text
from sqlalchemy.orm import Session

from perdure.store.stream_notify import notify_after_commit
from perdure.store.tables import StreamChunkRow

STREAM_CHUNKS = cast(Table, StreamChunkRow.__table__)
"""The table itself: an insert on it is a Core statement, without the ORM's bulk-insert handling."""
_RUN_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:key))")
_WRITTEN = select(STREAM_CHUNKS.c.seq).where(
    STREAM_CHUNKS.c.run_key == bindparam("run_key"), STREAM_CHUNKS.c.dedup_key == bindparam("dedup_key")
)
_LAST_OFFSET = select(func.max(STREAM_CHUNKS.c.seq)).where(STREAM_CHUNKS.c.run_key == bindparam("run_key"))
_APPEND = insert(STREAM_CHUNKS)
_READ = (
    select(STREAM_CHUNKS.c.seq, STREAM_CHUNKS.c.event, STREAM_CHUNKS.c.final)
    .where(STREAM_CHUNKS.c.run_key == bindparam("run_key"), STREAM_CHUNKS.c.seq >= bindparam("from_offset"))
    .order_by(STREAM_CHUNKS.c.seq)
    .limit(bindparam("limit"))
)
"""The writers' and readers' statements, built once: every step, every token chunk and every
read runs them, and building a statement costs more CPU than running it."""
READ_LIMIT = 500
"""At most this many events per read, so a long stream is read in pieces."""


class StoredEvent(BaseModel):
    offset: int
    event: dict[str, Any]
    final: bool


def append(
    session: Session,
    run_key: str,
    agent_id: str,
    events: Sequence[dict[str, Any]],
    *,
    final: bool = False,
    dedup_key: str | None = None,
) -> int | None:
    """Add `events` at the end of the run's stream and return the first one's offset; None
    when a write with the same `dedup_key` is already there (a retried activity)."""
    if not events:
        return None
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:
        session.execute(_RUN_LOCK, {"key": run_key})
    if dedup_key is not None and session.scalar(_WRITTEN, {"run_key": run_key, "dedup_key": dedup_key}) is not None:
        return None
    first = next_offset(session, run_key)
    session.execute(
        _APPEND,
        [
            {
                "run_key": run_key,
                "seq": first + i,
                "agent_id": agent_id,
                "event": event,
                "final": final and i == len(events) - 1,
                "dedup_key": dedup_key if i == 0 else None,
            }
            for i, event in enumerate(events)
        ],
    )
    if postgresql:
        notify_after_commit(session, run_key)
    return first


def next_offset(session: Session, run_key: str) -> int:
    last = session.scalar(_LAST_OFFSET, {"run_key": run_key})
    return 0 if last is None else last + 1


def read(session: Session, run_key: str, from_offset: int, limit: int = READ_LIMIT) -> list[StoredEvent]:
    rows = session.execute(_READ, {"run_key": run_key, "from_offset": from_offset, "limit": limit}).all()
    return [StoredEvent(offset=seq, event=event, final=final) for seq, event, final in rows]
