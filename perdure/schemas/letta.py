"""Client-facing message types, stop reasons and usage, with Letta's field names.

Clients written against Letta's `LettaResponse` read these without changes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field


class StopReasonType(StrEnum):
    end_turn = "end_turn"
    error = "error"
    llm_api_error = "llm_api_error"
    invalid_llm_response = "invalid_llm_response"
    invalid_tool_call = "invalid_tool_call"
    max_steps = "max_steps"
    max_tokens_exceeded = "max_tokens_exceeded"
    no_tool_call = "no_tool_call"
    tool_rule = "tool_rule"
    cancelled = "cancelled"
    insufficient_credits = "insufficient_credits"
    requires_approval = "requires_approval"
    context_window_overflow_in_system_prompt = "context_window_overflow_in_system_prompt"

    @property
    def run_status(self) -> RunStatus:
        if self in _COMPLETED:
            return RunStatus.completed
        if self is StopReasonType.cancelled:
            return RunStatus.cancelled
        return RunStatus.failed


class RunStatus(StrEnum):
    created = "created"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


_COMPLETED = frozenset(
    {
        StopReasonType.end_turn,
        StopReasonType.max_steps,
        StopReasonType.tool_rule,
        StopReasonType.requires_approval,
    }
)


class LettaStopReason(BaseModel):
    message_type: Literal["stop_reason"] = "stop_reason"
    stop_reason: StopReasonType


class LettaUsageStatistics(BaseModel):
    message_type: Literal["usage_statistics"] = "usage_statistics"
    completion_tokens: int = 0
    prompt_tokens: int = 0
    total_tokens: int = 0
    step_count: int = 0
    run_ids: list[str] | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    context_tokens: int | None = None

    def add(
        self,
        prompt: int,
        completion: int,
        cached: int | None = None,
        reasoning: int | None = None,
        cache_write: int | None = None,
    ) -> None:
        """Fold one LLM call into the running totals; each call is one step."""
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens += prompt + completion
        self.step_count += 1
        if cached is not None:
            self.cached_input_tokens = (self.cached_input_tokens or 0) + cached
        if reasoning is not None:
            self.reasoning_tokens = (self.reasoning_tokens or 0) + reasoning
        if cache_write is not None:
            self.cache_write_tokens = (self.cache_write_tokens or 0) + cache_write


class LettaToolCall(BaseModel):
    name: str
    arguments: str
    tool_call_id: str


class LettaToolReturn(BaseModel):
    type: Literal["tool"] = "tool"
    tool_call_id: str
    status: Literal["success", "error"]
    tool_return: str | None = None
    stdout: list[str] | None = None
    stderr: list[str] | None = None


class _LettaMessage(BaseModel):
    id: str
    date: datetime | None = None
    name: str | None = None
    otid: str | None = None
    sender_id: str | None = None
    step_id: str | None = None
    run_id: str | None = None


class SystemMessage(_LettaMessage):
    message_type: Literal["system_message"] = "system_message"
    content: str


class UserMessage(_LettaMessage):
    message_type: Literal["user_message"] = "user_message"
    content: str


class AssistantMessage(_LettaMessage):
    message_type: Literal["assistant_message"] = "assistant_message"
    content: str


class ReasoningMessage(_LettaMessage):
    message_type: Literal["reasoning_message"] = "reasoning_message"
    source: Literal["reasoner_model", "non_reasoner_model"] = "reasoner_model"
    reasoning: str
    signature: str | None = None


class HiddenReasoningMessage(_LettaMessage):
    """Reasoning the provider keeps from the reader (redacted thinking)."""

    message_type: Literal["hidden_reasoning_message"] = "hidden_reasoning_message"
    state: Literal["redacted", "omitted"]
    hidden_reasoning: str | None = None


class ToolCallMessage(_LettaMessage):
    message_type: Literal["tool_call_message"] = "tool_call_message"
    tool_call: LettaToolCall
    tool_calls: list[LettaToolCall]


class ToolReturnMessage(_LettaMessage):
    message_type: Literal["tool_return_message"] = "tool_return_message"
    tool_return: str
    status: Literal["success", "error"]
    tool_call_id: str
    stdout: list[str] | None = None
    stderr: list[str] | None = None
    tool_returns: list[LettaToolReturn]


class ApprovalRequestMessage(_LettaMessage):
    message_type: Literal["approval_request_message"] = "approval_request_message"
    tool_call: LettaToolCall
    tool_calls: list[LettaToolCall]


class ApprovalReturn(BaseModel):
    type: Literal["approval"] = "approval"
    tool_call_id: str
    approve: bool
    reason: str | None = None


class ApprovalResponseMessage(_LettaMessage):
    message_type: Literal["approval_response_message"] = "approval_response_message"
    approvals: list[Annotated[ApprovalReturn | LettaToolReturn, Field(discriminator="type")]]
    approve: bool | None = None
    """Deprecated in Letta, kept for its older clients: the first approval's verdict."""
    approval_request_id: str | None = None
    """Deprecated in Letta: the approval request message these answers answer, when known."""
    reason: str | None = None
    """Deprecated in Letta: the first approval's reason."""


class SummaryMessage(_LettaMessage):
    """A compaction's summary of the messages it took out of the context."""

    message_type: Literal["summary_message"] = "summary_message"
    summary: str
    compaction_stats: dict[str, Any] | None = None


class EventMessage(_LettaMessage):
    """Something the system did, e.g. a compaction, with its before/after token counts."""

    message_type: Literal["event_message"] = "event_message"
    event_type: Literal["compaction"] = "compaction"
    event_data: dict[str, Any]


AnyLettaMessage = (
    SystemMessage
    | UserMessage
    | AssistantMessage
    | ReasoningMessage
    | HiddenReasoningMessage
    | ToolCallMessage
    | ToolReturnMessage
    | ApprovalRequestMessage
    | ApprovalResponseMessage
    | SummaryMessage
    | EventMessage
)
LettaMessage = Annotated[AnyLettaMessage, Field(discriminator="message_type")]


class LettaResponse(BaseModel):
    """What `perdure send --json` prints: Letta's response shape plus the run id."""

    run_id: str
    messages: list[LettaMessage]
    stop_reason: LettaStopReason
    usage: LettaUsageStatistics
