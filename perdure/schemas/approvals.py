"""Waiting for people: Letta's approval and client-tool shapes, and the pending state.

Answers arrive one tool call at a time (signals) or several at once (the `answer` update, or
Letta's approval message starting a new run); `PendingCall` keeps each call's answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

TOOL_CALL_DENIAL_ON_CANCEL = "The user cancelled the request, so the tool call was denied."
TOOL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"


class ClientTool(BaseModel):
    """A tool the client runs itself, passed with a request (Letta's `ClientToolSchema`)."""

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ApprovalAnswer(BaseModel):
    """Approve or deny one call (Letta's `ApprovalReturn`)."""

    type: Literal["approval"] = "approval"
    tool_call_id: str = Field(min_length=1)
    approve: bool
    reason: str | None = None


class ClientToolReturn(BaseModel):
    """A result the client computed for a call (Letta's `ToolReturn` as input)."""

    type: Literal["tool"] = "tool"
    tool_call_id: str = Field(min_length=1)
    status: Literal["success", "error"] = "success"
    tool_return: str
    stdout: list[str] | None = None
    stderr: list[str] | None = None


Answer = Annotated[ApprovalAnswer | ClientToolReturn, Field(discriminator="type")]


class ApprovalCreate(BaseModel):
    """Letta's approval message: answers as the first item of a request's `messages`."""

    type: Literal["approval"] = "approval"
    approvals: list[Answer] = Field(min_length=1)


class AnswerRequest(BaseModel):
    """The `answer` update: one or more answers; returns when the run stops or pauses again."""

    approvals: list[Answer] = Field(min_length=1)
    stream_tokens: bool = False
    """Stream the continuation's tokens even when the run was started without."""


class ApproveSignal(BaseModel):
    """`approve` signal; without a tool call id it approves every pending approval."""

    tool_call_id: str | None = Field(default=None, min_length=1)


class DenySignal(BaseModel):
    tool_call_id: str = Field(min_length=1)
    reason: str | None = None


class PendingCall(BaseModel):
    """A tool call waiting for a person (`approval`) or for the client (`client_tool`)."""

    tool_call_id: str
    name: str
    arguments: str
    kind: Literal["approval", "client_tool"]
    answer: Answer | None = None


class RejectedAnswer(BaseModel):
    """A signal Temporal could not refuse: recorded, shown by the state query, otherwise ignored."""

    received_at: datetime
    via: str
    payload: dict[str, Any]
    reason: str


class PendingApproval(BaseModel):
    """What the run waits for, as the state query and `perdure status` show it."""

    since: datetime
    step_id: str
    calls: list[PendingCall]
    timeout_at: datetime | None = None
