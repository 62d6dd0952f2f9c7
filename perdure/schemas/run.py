"""Payloads between the client, the run workflow and its activities.

They carry ids and the few new messages of a step, never the whole context: history bytes
per step must not grow with the size of the agent's memory or conversation (each activity loads the context itself by id).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, model_validator

from perdure.schemas.approvals import ApprovalCreate, ClientTool, PendingApproval, PendingCall, RejectedAnswer

from perdure.schemas.agent import LLMConfig, ToolRule
from perdure.schemas.letta import LettaUsageStatistics, RunStatus, StopReasonType
from perdure.schemas.mcp_refs import McpToolRef
from perdure.schemas.messages import Message, ReasoningPart, ToolCall
from perdure.schemas.readable import ReadableToolCall, ReadableToolReturn
from perdure.schemas.tools import CustomToolRef

DEFAULT_MAX_STEPS = 50
MAX_STEPS_LIMIT = 1_000
"""About ten history events per step keeps even the longest run far below Temporal's 51,200."""
MESSAGE_CHAR_LIMIT = 200_000
"""An input message travels in the update and the first step's payloads (2 MB each at most)."""
TOOL_RETURN_PREVIEW_CHARS = 2_000


class MessageCreate(BaseModel):
    """One input message of a request (Letta's `MessageCreate`, text only)."""

    type: Literal["message"] = "message"
    role: str = Field(default="user", pattern="^(user|system)$")
    content: str = Field(min_length=1, max_length=MESSAGE_CHAR_LIMIT)
    otid: str | None = None
    name: str | None = Field(default=None, max_length=256)
    """Who wrote it, in a conversation of several people (Letta's `name`): stored and returned
    with the message, not sent to the model."""
    sender_id: str | None = Field(default=None, max_length=256)
    """The writer's id in the caller's system (Letta's `sender_id`): stored and returned only."""


class SendMessageRequest(BaseModel):
    """The `send_message` update: starts a run of the agent's loop."""

    messages: list[MessageCreate | ApprovalCreate] = Field(min_length=1)
    max_steps: int = Field(default=DEFAULT_MAX_STEPS, ge=1, le=MAX_STEPS_LIMIT)
    client_tools: list[ClientTool] = Field(default_factory=list)
    approval_timeout_seconds: float | None = Field(default=None, gt=0)
    """How long a pause for approval may last before the run ends `requires_approval`;
    None means the agent's setting (default: wait forever)."""
    stream_tokens: bool = False
    """Letta's flag: publish the model's tokens to the run's stream as they arrive (steps,
    the stop reason and usage are always published)."""

    @model_validator(mode="after")
    def _approval_first(self) -> SendMessageRequest:
        """Letta's rule: an approval message may only open a request; user messages may follow."""
        if any(isinstance(m, ApprovalCreate) for m in self.messages[1:]):
            raise ValueError("an approval message must be the first message of the request")
        names = [t.name for t in self.client_tools]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"client tool names must be unique; repeated: {', '.join(repeated)}")
        return self

    @property
    def turn_key(self) -> str | None:
        """What identifies this turn across a client's retries: its user messages' `otid`s
        (Letta's field; Perdure's clients make one when the caller gives none). None for a
        request of answers alone (answers are deduplicated by tool call id) or without otids."""
        otids = [m.otid for m in self.user_messages]
        if not otids or any(otid is None for otid in otids):
            return None
        return hashlib.sha256("\n".join(otid or "" for otid in otids).encode()).hexdigest()[:32]

    @property
    def approval(self) -> ApprovalCreate | None:
        first = self.messages[0]
        return first if isinstance(first, ApprovalCreate) else None

    @property
    def user_messages(self) -> list[MessageCreate]:
        return [m for m in self.messages if isinstance(m, MessageCreate)]


class RunWorkflowInput(BaseModel):
    agent_id: str


class RunResult(BaseModel):
    """What the `send_message` update returns: enough to fetch the run's messages by id."""

    run_id: str
    agent_id: str
    stop_reason: StopReasonType
    status: RunStatus
    usage: LettaUsageStatistics
    error: str | None = None
    message_ids: list[str] = Field(default_factory=list)
    """Messages stored since the previous answer of this run (the send, or the last pause)."""
    answer: str | None = None
    """The text of the last assistant message among them: what the agent said, readable in the
    Temporal UI next to the ids."""


class RunState(BaseModel):
    """The `state` query: what the run is doing now."""

    agent_id: str
    run_id: str | None
    status: RunStatus
    step: int
    max_steps: int | None
    current: str
    stop_reason: StopReasonType | None
    usage: LettaUsageStatistics
    error: str | None = None
    pending_approval: PendingApproval | None = None
    rejected: list[RejectedAnswer] = Field(default_factory=list)
    """Signals that could not be taken (nothing pending, unknown id ...), newest last."""
    agent_name: str | None = None
    """The agent's name (the `AgentName` search attribute), once the run has loaded it."""


class AgentSnapshot(BaseModel):
    """The small part of an agent the workflow needs to drive its loop."""

    agent_id: str
    name: str
    tools: list[str]
    tool_rules: list[ToolRule]
    llm_config: LLMConfig
    approval_timeout_seconds: float | None = None
    parallel_safe_tools: list[str] = Field(default_factory=list)
    """Tools marked `enable_parallel_execution`: they may run concurrently within a step."""
    mcp_attachments: list[str] = Field(default_factory=list)
    """The agent's MCP tools as it names them (`SERVER/TOOL`, `SERVER/*`): listed once when the run begins."""
    mcp_tools: list[McpToolRef] = Field(default_factory=list)
    """The MCP tools this run offers, by function name (in `tools` too), once they are listed."""
    custom_tools: dict[str, CustomToolRef] = Field(default_factory=dict)
    """The agent's custom Python tools by name, at the versions this run calls (edits made
    while it runs or waits do not reach it)."""

    @property
    def parallel_allowed(self) -> bool:
        """Letta's rule: several calls per response only when no rule but requires_approval is set."""
        return self.llm_config.parallel_tool_calls and all(r.type == "requires_approval" for r in self.tool_rules)

    @property
    def approval_tools(self) -> set[str]:
        return {rule.tool_name for rule in self.tool_rules if rule.type == "requires_approval"}


class UnansweredRequest(BaseModel):
    """An approval request left unanswered in the agent's context by an earlier run."""

    step_id: str
    since: datetime
    calls: list[ToolCall]
    """Every call of that model response in order, the ones that ran without approval too."""
    waiting: list[PendingCall] = Field(validation_alias=AliasChoices("waiting", "pending"))
    """The calls that wait for a person or the client (`pending` in histories recorded before)."""


class BeginRunOutput(BaseModel):
    agent: AgentSnapshot
    unanswered: UnansweredRequest | None = Field(
        default=None, validation_alias=AliasChoices("unanswered", "stored_pending")
    )
    """An earlier run's unanswered approval request (`stored_pending` in histories recorded before)."""
    answers_already_processed: bool = False
    """The request's answers were processed before (a client retry): Letta continues with a
    keep-alive message instead."""


class BeginRunInput(BaseModel):
    agent_id: str
    run_id: str
    request: SendMessageRequest
    workflow_id: str


class LLMStepInput(BaseModel):
    """One LLM request. `new_messages` are messages of this step not yet in the stored context."""

    agent_id: str
    run_id: str
    step_id: str
    step_number: int
    new_messages: list[Message] = Field(default_factory=list, validation_alias=AliasChoices("new_messages", "pending"))
    """`pending` in activities scheduled before the rename: a worker deployed mid-step still reads them."""
    allowed_tools: list[str] | None = None
    """The tools the rules allow this step (None: all the agent's tools); client tools are added."""
    force_tool_call: bool = False
    parallel_tool_calls: bool = False
    client_tools: list[ClientTool] = Field(default_factory=list)
    message_id: str = ""
    """The id the answer will be stored under; streamed chunks carry it, as Letta's do."""
    approval_message_id: str = ""
    """The id of the approval request the calls of `held_tools` would wait in."""
    held_tools: list[str] = Field(default_factory=list)
    """Tools whose calls wait for a person or the client: streamed as approval request chunks."""
    stream_tokens: bool = False
    request_number: int = 1
    """1, or more when the step asks again after compacting because the provider said the
    request did not fit: what an earlier request streamed is then void, as after a retry."""
    stream_in_store: bool = False
    """Write the token chunks to the run's stream in the database (False: signal them into the
    run's Workflow Stream, as runs started before the stream moved to the store do)."""


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_input_tokens: int | None = None
    """Prompt tokens read from the provider's cache (part of `prompt_tokens`)."""
    cache_write_tokens: int | None = None
    """Prompt tokens written to the provider's cache (part of `prompt_tokens`; Anthropic)."""
    reasoning_tokens: int | None = None


class LLMStepOutput(BaseModel):
    """The model's answer, compact: text, reasoning, tool calls and usage."""

    content: str | None = None
    reasoning: str | None = None
    reasoning_parts: list[ReasoningPart] = Field(default_factory=list)
    """The thinking blocks as the provider sent them (signatures, redacted ones), when it sends
    them that way (Anthropic): they go back to it with the rest of the answer."""
    tool_calls: list[ReadableToolCall] = Field(default_factory=list)
    """Arguments are recorded as objects, so the Temporal UI shows them readably."""
    finish_reason: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    model: str
    llm_request_ns: int = 0
    request_tokens: int = 0
    """The request counted with tiktoken, only when the provider reported no prompt tokens (the
    fallback for the next request's size); 0 otherwise."""
    response_tokens: int = 0
    """The answer counted as it will sit in the next request."""


class ToolStepInput(BaseModel):
    agent_id: str
    run_id: str
    step_id: str
    tool_call: ReadableToolCall
    prefilled: dict[str, Any] | None = None
    """Arguments a tool rule fixes; they override the model's and are checked against the schema."""
    prefilled_source: str = ""


class CustomToolStepInput(ToolStepInput):
    """A call of a custom Python tool: the activity loads exactly `tool_version` from the store."""

    tool_version: str


class ToolStepOutput(BaseModel):
    """A tool's result as the workflow sees it: `tool_return.func_response` is a preview of at
    most `TOOL_RETURN_PREVIEW_CHARS`; the full return is recorded in the database under
    `{step_id}:{tool_call_id}` and the checkpoint stores that, so history stays small.

    The record reads as one entry of a transcript: the call as it ran (arguments as an object),
    then its return with the packaged response as an object whose message is plain text."""

    tool_call: ReadableToolCall | None = None
    """The call as it ran (a rule's prefilled arguments included); absent in records made before."""
    tool_return: ReadableToolReturn
    duration_ns: int = 0
    invalid_prefill: bool = False
    """The rule's prefilled arguments did not fit the tool: the call did not run, the run stops."""
    arguments: str | None = None
    """The arguments the call ran with, when a rule's prefilled ones replaced the model's."""
    tokens: int = 0
    """The return counted as it will sit in the next request (after the request-level cap)."""


class StepRecord(BaseModel):
    id: str
    run_id: str
    agent_id: str
    step_number: int
    model: str | None = None
    status: str = "success"
    stop_reason: StopReasonType | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    llm_request_ns: int | None = None
    tool_execution_ns: int | None = None
    step_ns: int | None = None
    error_type: str | None = None
    error: str | None = None


class CheckpointInput(BaseModel):
    """Everything one successful step adds, committed in one transaction."""

    agent_id: str
    messages: list[Message]
    step: StepRecord
    stream_in_store: bool = False
    """Also write the step's events to the run's stream in the database, in the same transaction."""
    tokens_streamed: bool = False
    """The step's answer already went out as token chunks, so it is not written whole."""


class FinishRunInput(BaseModel):
    agent_id: str
    run_id: str
    stop_reason: StopReasonType
    usage: LettaUsageStatistics
    error: str | None = None
    finished_at: datetime
    failed_step: StepRecord | None = None
    stream_events: list[dict[str, Any]] = Field(default_factory=list)
    """The outcome's events, written as the end of the run's stream in the database (empty for
    runs whose stream is in history)."""


class AppendStreamInput(BaseModel):
    """Events the workflow adds to the run's stream in the database (a pause's outcome);
    `dedup_key` lets a retried activity recognise its own write."""

    agent_id: str
    events: list[dict[str, Any]]
    dedup_key: str


CompactMode = Literal["all", "sliding_window"]


class CompactRequest(BaseModel):
    """The `compact` update: compact the agent's context on demand (`perdure compact`)."""

    mode: CompactMode = "sliding_window"


class CompactInput(BaseModel):
    """Compact an agent's context. The ids of the messages it writes come from the workflow, so
    a retried activity recognises its own finished work."""

    agent_id: str
    run_id: str | None = None
    mode: CompactMode = "sliding_window"
    summary_message_id: str
    event_message_id: str
    trigger: str


class CompactOutput(BaseModel):
    mode: str
    """The plan used (`sliding_window`, `all`, `hard_eviction`), or `none` when nothing was done."""
    tokens_before: int
    tokens_after: int
    evicted: int = 0
    system_overflow: bool = False
    detail: str | None = None
    message_ids: list[str] = Field(default_factory=list)
    """The summary and event messages written (for the run's messages)."""
