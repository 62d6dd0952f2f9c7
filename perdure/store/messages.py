"""Messages: idempotent inserts, the agent's in-context list, and reading history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from perdure.schemas.messages import Message
from perdure.store.context import load_context_messages
from perdure.store.db import dialect_insert, forget_loaded
from perdure.store.errors import NotFoundError
from perdure.store.tables import AgentRow, MessageRow, utcnow

AGENTS = cast(Table, AgentRow.__table__)
MESSAGES = cast(Table, MessageRow.__table__)


def searchable_text(message: Message) -> str:
    """What `conversation_search` matches against: text, reasoning, tool arguments and returns."""
    parts = [message.text]
    parts += [f"{call.name}({call.arguments})" for call in message.tool_calls]
    parts += [ret.func_response or "" for ret in message.tool_returns]
    return "\n".join(p for p in parts if p)


def insert_messages(session: Session, messages: Sequence[Message]) -> None:
    """Insert messages whose ids are not stored yet; a retried or concurrent write adds nothing."""
    if not messages:
        return
    now = utcnow()
    rows: list[dict[str, Any]] = []
    ids: set[str] = set()
    for message in messages:
        if message.id in ids:
            continue
        ids.add(message.id)
        created = message.created_at or now
        stored = message.model_copy(update={"created_at": created})
        rows.append(
            {
                "id": message.id,
                "agent_id": message.agent_id,
                "run_id": message.run_id,
                "step_id": message.step_id,
                "role": message.role,
                "text": searchable_text(message),
                "data": stored.model_dump(mode="json"),
                "created_at": created,
            }
        )
    session.flush()
    session.execute(_insert_new_messages(session.get_bind().dialect.name), rows)


@cache
def _insert_new_messages(dialect_name: str) -> Any:
    """The upsert that skips stored ids, built once per dialect and run with one parameter set
    per message: a multi-row VALUES statement would be compiled again for every step."""
    return dialect_insert(dialect_name, MESSAGES).on_conflict_do_nothing(index_elements=["id"])


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored, with the row's key, so it can be rewritten in place."""

    seq: int
    message: Message


_STORED_MESSAGE = select(MESSAGES.c.seq, MESSAGES.c.data).where(MESSAGES.c.id == bindparam("message_id"))
_REWRITE_MESSAGE = (
    update(MESSAGES)
    .where(MESSAGES.c.seq == bindparam("row_seq"))
    .values(data=bindparam("row_data"), text=bindparam("row_text"))
)


def load_stored_message(session: Session, message_id: str) -> StoredMessage:
    """`load_message` with the row's key, for a caller that rewrites the message after."""
    session.flush()
    row = session.execute(_STORED_MESSAGE, {"message_id": message_id}).one_or_none()
    if row is None:
        raise NotFoundError(f"message '{message_id}' not found")
    return StoredMessage(seq=row.seq, message=Message.model_validate(row.data))


def replace_message(session: Session, stored: StoredMessage) -> None:
    """Rewrite a stored message (its id and place stay) with one UPDATE built once."""
    session.flush()
    message = stored.message
    values = {"row_seq": stored.seq, "row_data": message.model_dump(mode="json"), "row_text": searchable_text(message)}
    session.execute(_REWRITE_MESSAGE, values)
    forget_loaded(session, MessageRow, stored.seq)


def load_message(session: Session, message_id: str) -> Message:
    row = session.scalars(select(MessageRow).where(MessageRow.id == message_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"message '{message_id}' not found")
    return Message.model_validate(row.data)


def lock_agent(session: Session, agent_id: str) -> AgentRow:
    agent = try_lock_agent(session, agent_id)
    if agent is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    return agent


def try_lock_agent(session: Session, agent_id: str) -> AgentRow | None:
    """The agent's row (None if there is none), locked until the transaction ends, freshly read.

    Every write to an agent's state (its in-context list, its blocks, a tool's recorded effect)
    takes this lock first. SQLite runs one writer at a time anyway; PostgreSQL, at its default
    READ COMMITTED, would let two writers read the same list and the later commit drop the
    earlier one's ids. `FOR NO KEY UPDATE` still lets other transactions insert rows that
    reference the agent.
    """
    statement = select(AgentRow).where(AgentRow.id == agent_id).with_for_update(key_share=True)
    return session.scalars(statement.execution_options(populate_existing=True)).one_or_none()


def locking_select(*columns: ColumnElement[Any]) -> Select[Any]:
    """A Core select of some of the agent row's columns (bound by `agent_id`) that takes the
    lock `try_lock_agent` takes. The hot writers (a step's checkpoint, a memory tool) build it
    once and read only what they need: building an ORM statement and loading the whole row
    was most of their CPU. Its users flush first and expire the session's copy of the row."""
    return select(*columns).where(AGENTS.c.id == bindparam("agent_id")).with_for_update(key_share=True)


_LOCK_IN_CONTEXT = locking_select(AGENTS.c.message_ids)
_SET_IN_CONTEXT = (
    update(AGENTS)
    .where(AGENTS.c.id == bindparam("locked_id"))
    .values(message_ids=bindparam("new_ids"), context_version=AGENTS.c.context_version + 1)
)


def lock_in_context(session: Session, agent_id: str) -> list[str]:
    """The agent's in-context ids, read with its row locked as `try_lock_agent` locks it."""
    session.flush()
    forget_loaded(session, AgentRow, agent_id)
    current = session.execute(_LOCK_IN_CONTEXT, {"agent_id": agent_id}).scalar_one_or_none()
    if current is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    return list(current)


def append_in_context(session: Session, agent_id: str, message_ids: Sequence[str]) -> list[str]:
    """Append ids to the agent's in-context list, skipping ids already there (idempotent)."""
    return append_to_locked(session, agent_id, lock_in_context(session, agent_id), message_ids)


def append_to_locked(session: Session, agent_id: str, current: Sequence[str], message_ids: Sequence[str]) -> list[str]:
    """`append_in_context` for an agent this transaction has already locked, with the list
    `lock_in_context` returned, which saves reading it again (a step's checkpoint locks first)."""
    present = set(current)
    added = [mid for mid in message_ids if mid not in present]
    if not added:
        return list(current)
    updated = [*current, *added]
    session.flush()
    session.execute(_SET_IN_CONTEXT, {"locked_id": agent_id, "new_ids": updated})
    forget_loaded(session, AgentRow, agent_id)
    return updated


def load_in_context(session: Session, agent_id: str) -> list[Message]:
    """The agent's context in order: system message first."""
    agent = session.get(AgentRow, agent_id)
    if agent is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    ids = list(agent.message_ids)
    rows = session.scalars(select(MessageRow).where(MessageRow.id.in_(ids))).all()
    by_id = {row.id: Message.model_validate(row.data) for row in rows}
    return [by_id[mid] for mid in ids if mid in by_id]


def load_messages(session: Session, message_ids: Sequence[str]) -> list[Message]:
    """Messages by id, in the order given (ids not stored are skipped): a Core read through the
    parsed messages `context.load_context_messages` shares, so they are not to be changed in
    place. Every send reads its outcome's messages this way."""
    session.flush()
    return load_context_messages(session, message_ids)


_CONTEXT_IDS = select(AGENTS.c.message_ids).where(AGENTS.c.id == bindparam("agent_id"))


def load_context_tail(session: Session, agent_id: str, count: int) -> list[Message]:
    """The last `count` messages of the agent's context, without loading the rest: Core reads
    and the parsed messages `context.load_context_messages` shares (not to be changed in place)."""
    session.flush()
    ids = session.execute(_CONTEXT_IDS, {"agent_id": agent_id}).scalar_one_or_none()
    if ids is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    return load_context_messages(session, list(ids)[-count:])


def list_messages(
    session: Session,
    agent_id: str,
    *,
    run_id: str | None = None,
    limit: int | None = None,
) -> list[Message]:
    """Stored history, oldest first; with `limit`, the most recent `limit` messages."""
    query = select(MessageRow).where(MessageRow.agent_id == agent_id)
    if run_id is not None:
        query = query.where(MessageRow.run_id == run_id)
    query = query.order_by(MessageRow.seq.desc())
    if limit is not None:
        query = query.limit(limit)
    rows = list(reversed(session.scalars(query).all()))
    return [Message.model_validate(row.data) for row in rows]


def search_messages(
    session: Session,
    agent_id: str,
    *,
    query: str | None,
    roles: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[Message]:
    """Case-insensitive substring search over stored messages, newest first."""
    stmt = select(MessageRow).where(MessageRow.agent_id == agent_id, MessageRow.role != "system")
    if query:
        stmt = stmt.where(func.lower(MessageRow.text).contains(query.lower()))
    if roles:
        stmt = stmt.where(MessageRow.role.in_(list(roles)))
    if start is not None:
        stmt = stmt.where(MessageRow.created_at >= start)
    if end is not None:
        stmt = stmt.where(MessageRow.created_at <= end)
    rows = session.scalars(stmt.order_by(MessageRow.seq.desc()).limit(limit)).all()
    return [Message.model_validate(row.data) for row in rows]


def swap_in_context(session: Session, agent_id: str, expected: Sequence[str], new_ids: Sequence[str]) -> bool:
    """Replace the in-context list only if it is still `expected` (compare-and-set): a
    compaction that raced another write must start again rather than lose that write."""
    agent = lock_agent(session, agent_id)
    if list(agent.message_ids) != list(expected):
        return False
    agent.message_ids = list(new_ids)
    agent.context_version += 1
    return True


def page_messages(
    session: Session,
    agent_id: str,
    *,
    after: str | None = None,
    before: str | None = None,
    limit: int = 100,
    ascending: bool = False,
) -> list[Message]:
    """One page of stored history without the system message, in the order asked (Letta's
    `GET /messages`): `after` and `before` are message ids and count in that order, so with
    newest first, `after` pages toward older messages."""
    query = select(MessageRow).where(MessageRow.agent_id == agent_id, MessageRow.role != "system")
    for cursor, later in ((after, ascending), (before, not ascending)):
        if cursor is not None:
            where = select(MessageRow.seq).where(MessageRow.id == cursor, MessageRow.agent_id == agent_id)
            seq = session.scalars(where).one_or_none()
            if seq is None:
                raise NotFoundError(f"message '{cursor}' not found for agent '{agent_id}'")
            query = query.where(MessageRow.seq > seq if later else MessageRow.seq < seq)
    nearest_before = before is not None and after is None  # the messages right before the cursor
    forward = ascending != nearest_before
    order = MessageRow.seq.asc() if forward else MessageRow.seq.desc()
    rows = list(session.scalars(query.order_by(order).limit(limit)).all())
    if nearest_before:
        rows.reverse()
    return [Message.model_validate(row.data) for row in rows]
