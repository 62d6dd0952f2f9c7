"""The rules of answering a paused run, shared by the workflow (live answers) and the begin
activity (Letta's resume path, where answers open a new request). Pure functions, no I/O.

Error texts follow Letta's where Letta has one, so clients written for Letta match them.
"""

from __future__ import annotations

from collections.abc import Sequence

from perdure.tools.returns import clip_tool_return, tool_return_cap
from perdure.schemas.approvals import (
    TOOL_CALL_DENIAL_ON_CANCEL,
    Answer,
    ApprovalAnswer,
    ClientToolReturn,
    PendingCall,
)

NO_PENDING = (
    "Cannot process approval response: No tool call is currently awaiting approval. "
    "Please send a regular message to interact with the agent."
)
KEEP_ALIVE = (
    "<system-alert>Automated keep-alive ping. Ignore this message and continue from where you stopped.</system-alert>"
)
"""What a run sends the model when its request's answers were processed before (a client retry)."""
PENDING_APPROVAL = (
    "Cannot send a new message: The agent is waiting for approval on a tool call. "
    "Please approve or deny the pending request before continuing."
)


def pending_message(calls: Sequence[PendingCall]) -> str:
    """Letta's PENDING_APPROVAL text plus what is pending, so the caller can answer it."""
    waiting = [c.tool_call_id for c in calls if c.answer is None]
    return f"{PENDING_APPROVAL} Pending tool call ids: {waiting}"


def check_answer(calls: Sequence[PendingCall] | None, answer: Answer) -> str | None:
    """Why one answer cannot be taken now, or None."""
    if not calls:
        return NO_PENDING
    call = next((c for c in calls if c.tool_call_id == answer.tool_call_id), None)
    if call is None:
        expected = [c.tool_call_id for c in calls]
        return f"Invalid tool call IDs. Expected '{expected}', but received '{[answer.tool_call_id]}'."
    if call.answer is not None:
        return f"Tool call '{call.tool_call_id}' ({call.name}) has already been answered."
    if call.kind == "client_tool" and isinstance(answer, ApprovalAnswer):
        return (
            f"Tool call '{call.tool_call_id}' ({call.name}) is a client-side tool: send its result "
            "(client_tool_return / type 'tool'), not an approval."
        )
    if call.kind == "approval" and isinstance(answer, ClientToolReturn):
        return (
            f"Tool call '{call.tool_call_id}' ({call.name}) needs an approval (approve or deny), "
            "not a client tool result."
        )
    return None


def check_answers(calls: Sequence[PendingCall] | None, answers: Sequence[Answer]) -> str | None:
    """Check a batch: every answer valid, and no call answered twice within it."""
    ids = [a.tool_call_id for a in answers]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        return f"Invalid approval response: tool call id(s) {repeated} answered more than once."
    for answer in answers:
        problem = check_answer(calls, answer)
        if problem is not None:
            return problem
    return None


def check_complete_answers(calls: Sequence[PendingCall], answers: Sequence[Answer]) -> str | None:
    """Letta's resume rule: a request that opens with answers must answer every pending call."""
    expected = sorted(c.tool_call_id for c in calls)
    received = sorted(a.tool_call_id for a in answers)
    if set(expected) != set(received):
        return f"Invalid tool call IDs. Expected '{expected}', but received '{received}'."
    return check_answers(calls, answers)


def apply_answers(calls: Sequence[PendingCall], answers: Sequence[Answer]) -> list[PendingCall]:
    by_id = {a.tool_call_id: a for a in answers}
    return [c.model_copy(update={"answer": by_id[c.tool_call_id]}) if c.tool_call_id in by_id else c for c in calls]


def approve_all(calls: Sequence[PendingCall]) -> list[Answer]:
    """The `approve` signal without an id: every unanswered approval (client tools need results)."""
    return [
        ApprovalAnswer(tool_call_id=c.tool_call_id, approve=True)
        for c in calls
        if c.kind == "approval" and c.answer is None
    ]


def deny_on_cancel(calls: Sequence[PendingCall]) -> list[PendingCall]:
    """Letta's cancellation of a paused run: every unanswered call is denied."""
    denial = TOOL_CALL_DENIAL_ON_CANCEL
    return [
        c
        if c.answer is not None
        else c.model_copy(update={"answer": ApprovalAnswer(tool_call_id=c.tool_call_id, approve=False, reason=denial)})
        for c in calls
    ]


def denial_text(reason: str | None) -> str:
    return f"Error: request to call tool denied. User reason: {reason}"


def client_return_limit(context_window: int) -> int:
    """Letta's cap on a client tool's stored result (the same as on any return in a request)."""
    return tool_return_cap(context_window)


def truncate_client_return(text: str, context_window: int) -> str:
    """Clip a client's result before it is stored; in a JSON object only its `message` field."""
    return clip_tool_return(text, client_return_limit(context_window))
