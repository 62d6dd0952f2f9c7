"""Messages: idempotent inserts, the agent's in-context list, and reading history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from perdure.schemas.messages import Message
from perdure.store.db import upsert_statement
from perdure.store.errors import NotFoundError
from perdure.store.tables import AgentRow, MessageRow, utcnow


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
    statement = upsert_statement(session, MessageRow).values(rows)
    session.execute(statement.on_conflict_do_nothing(index_elements=["id"]))


def replace_message(session: Session, message: Message) -> None:
    row = session.scalars(select(MessageRow).where(MessageRow.id == message.id)).one()
    row.data = message.model_dump(mode="json")
    row.text = searchable_text(message)


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


def append_in_context(session: Session, agent_id: str, message_ids: Sequence[str]) -> list[str]:
    """Append ids to the agent's in-context list, skipping ids already there (idempotent)."""
    return append_to_locked(lock_agent(session, agent_id), message_ids)


def append_to_locked(agent: AgentRow, message_ids: Sequence[str]) -> list[str]:
    """`append_in_context` for an agent row this transaction has already locked and read, which
    saves reading it again (a step's checkpoint locks it first)."""
    current = list(agent.message_ids)
    present = set(current)
    added = [mid for mid in message_ids if mid not in present]
    if added:
        agent.message_ids = current + added
        agent.context_version += 1
    return agent.message_ids


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
    """Messages by id, in the order given (ids not stored are skipped)."""
    rows = session.scalars(select(MessageRow).where(MessageRow.id.in_(list(message_ids)))).all()
    by_id = {row.id: Message.model_validate(row.data) for row in rows}
    return [by_id[mid] for mid in message_ids if mid in by_id]


def load_context_tail(session: Session, agent_id: str, count: int) -> list[Message]:
    """The last `count` messages of the agent's context, without loading the rest."""
    agent = session.get(AgentRow, agent_id)
    if agent is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    return load_messages(session, list(agent.message_ids)[-count:])


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
