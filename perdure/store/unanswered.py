"""Finding an approval request that an earlier run left unanswered in the agent's context.

A run that pauses commits the model's response as an `assistant` message (calls that needed no
approval) and an `approval` message (calls that do). If the run ended while waiting (its
approval timeout), that approval message is the last in the context, and the next request
must answer it (Letta's resume path) before anything else can happen.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from perdure.schemas.approvals import PendingCall
from perdure.schemas.messages import Message, ToolCall
from perdure.schemas.run import UnansweredRequest
from perdure.store import messages as message_store
from perdure.store.context import load_context_messages
from perdure.store.tables import utcnow

RECENT_TOOL_MESSAGES = 10
TAIL = 2
"""The request and the response before it: all an unanswered request is read from."""


def find_unanswered_request(session: Session, agent_id: str) -> UnansweredRequest | None:
    """The approval request the context ends with, if it is unanswered."""
    return _unanswered(message_store.load_context_tail(session, agent_id, TAIL))


def unanswered_in_context(session: Session, context_ids: Sequence[str]) -> UnansweredRequest | None:
    """`find_unanswered_request` for a caller that has read the agent's in-context ids already
    (the begin activity and a client starting a run, in the same transaction), so the agent is
    not read twice."""
    return _unanswered(load_context_messages(session, context_ids[-TAIL:]))


def _unanswered(tail: Sequence[Message]) -> UnansweredRequest | None:
    """Its calls are the shared parsed messages' own: read, never changed in place."""
    if not tail or tail[-1].role != "approval" or not tail[-1].tool_calls:
        return None
    request = tail[-1]
    before = tail[-2] if len(tail) > 1 else None
    deferred: list[ToolCall] = []
    if before is not None and before.role == "assistant" and before.step_id == request.step_id:
        deferred = list(before.tool_calls)
    waiting = [
        PendingCall(
            tool_call_id=c.id,
            name=c.name,
            arguments=c.arguments,
            kind="client_tool" if c.id in request.client_tool_call_ids else "approval",
        )
        for c in request.tool_calls
    ]
    return UnansweredRequest(
        step_id=request.step_id or "",
        since=request.created_at or utcnow(),
        calls=[*deferred, *request.tool_calls],
        waiting=waiting,
    )


def already_answered(session: Session, agent_id: str, tool_call_ids: set[str]) -> bool:
    """Letta's idempotency check: the same answers were processed already (a client retry)."""
    context = message_store.load_in_context(session, agent_id)
    recent = [m for m in context if m.role == "tool"][-RECENT_TOOL_MESSAGES:]
    return any(_returned_ids(m) == tool_call_ids for m in recent)


def _returned_ids(message: Message) -> set[str]:
    return {r.tool_call_id for r in message.tool_returns}
