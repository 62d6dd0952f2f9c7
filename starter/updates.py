"""The updates that start and answer runs: the requests they carry, their ids, and what their
outcomes mean to a client (a refusal, or a turn an earlier run took)."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateHandle
from temporalio.exceptions import ApplicationError

from perdure import names
from perdure.schemas.approvals import ClientTool
from perdure.schemas.run import MessageCreate, RunResult, SendMessageRequest


class RunRejectedError(Exception):
    """The agent could not take the message now (busy, or waiting); nothing was recorded."""


class AlreadySentError(Exception):
    """An earlier run took this request's turn; `run_id` names it."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def message_request(
    text: str,
    *,
    max_steps: int | None = None,
    client_tools: list[ClientTool] | None = None,
    approval_timeout_seconds: float | None = None,
    stream_tokens: bool = False,
) -> SendMessageRequest:
    """A one-message request; options left out take the request's defaults. The message gets a
    fresh `otid` (Letta's field), which makes the request safe to send again."""
    options: dict[str, Any] = {
        "client_tools": client_tools or [],
        "approval_timeout_seconds": approval_timeout_seconds,
        "stream_tokens": stream_tokens,
    }
    if max_steps is not None:
        options["max_steps"] = max_steps
    return SendMessageRequest(messages=[MessageCreate(content=text, otid=str(uuid.uuid4()))], **options)


def run_summary(request: SendMessageRequest) -> str:
    """What the Temporal UI lists for the run: the user's first words, or that it answers."""
    if request.approval is not None:
        return f"answers {len(request.approval.approvals)} pending call(s)"
    return request.user_messages[0].content[:120]


async def raise_if_rejected(handle: WorkflowUpdateHandle[Any]) -> None:
    """Waiting only for the ACCEPTED stage, the SDK hands back a rejected update as a handle
    rather than raising: the server sent the rejection with its answer. Reading that known
    outcome raises it here, before anyone reads a stream (the SDK has no public way to ask
    whether the outcome is known)."""
    if handle._known_outcome is not None:  # pyright: ignore[reportPrivateUsage]
        await handle.result()


async def update_outcome(handle: WorkflowUpdateHandle[RunResult]) -> RunResult:
    try:
        return await handle.result()
    except WorkflowUpdateFailedError as err:
        raise update_refusal(err) from err


def stream_gave_up(timeout_s: float, agent_id: str, offset: int, error: BaseException) -> str:
    return f"Temporal did not answer within {timeout_s:g} s ({error}); resume with `perdure follow {agent_id} --from {offset}`"


def update_refusal(error: WorkflowUpdateFailedError) -> Exception:
    """Why the run did not take the request; a turn an earlier run took names that run."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == names.ALREADY_SENT and cause.details:
        return AlreadySentError(str(cause.details[0]))
    return RunRejectedError(failure_reason(error))


def update_id(request: SendMessageRequest) -> str | None:
    """The turn's key as the update id: Temporal answers a repeated update with the first one's
    result while the run lives. None (a fresh id) for a request without otids."""
    turn = request.turn_key
    return f"send-{turn}" if turn else None


def failure_reason(error: WorkflowUpdateFailedError) -> str:
    cause = error.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or error)
