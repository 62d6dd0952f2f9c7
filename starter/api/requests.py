"""Letta's request bodies as letta-client 1.12 sends them, and what they become here.

Fields Letta has and Perdure does not use are accepted (Letta ignores unknown fields too);
fields that would change where a request goes (`override_model`, `override_system`) or that
ask for something Perdure does not do (`background`, image content) are refused with one line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from perdure.schemas.approvals import Answer, ApprovalAnswer, ClientTool, ClientToolReturn, PendingCall
from perdure.schemas.run import DEFAULT_MAX_STEPS, MAX_STEPS_LIMIT, MessageCreate
from perdure.store.errors import InvalidRequestError


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"] = "text"
    text: str


def _text(content: str | list[dict[str, Any]]) -> str:
    """Text content as a string; Letta's parts are joined, anything but text is refused."""
    if isinstance(content, str):
        return content
    kinds = sorted({str(part.get("type")) for part in content if part.get("type") != "text"})
    if kinds:
        raise InvalidRequestError(f"only text content is supported, got {', '.join(kinds)}")
    return "\n".join(TextPart.model_validate(part).text for part in content)


class LettaMessageCreate(_Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "assistant"] = "user"
    content: str | list[dict[str, Any]]
    otid: str | None = None
    name: str | None = None
    sender_id: str | None = None

    def to_message(self) -> MessageCreate:
        if self.role == "assistant":
            raise InvalidRequestError("messages with role 'assistant' cannot be sent; send user or system messages")
        return MessageCreate(
            role=self.role, content=_text(self.content), otid=self.otid, name=self.name, sender_id=self.sender_id
        )


class LettaToolReturn(_Lenient):
    type: Literal["tool"] = "tool"
    tool_call_id: str = Field(min_length=1)
    status: Literal["success", "error"]
    tool_return: str | list[dict[str, Any]]
    stdout: list[str] | None = None
    stderr: list[str] | None = None

    def to_answer(self) -> ClientToolReturn:
        fields = self.model_dump(exclude={"type", "tool_return"})
        return ClientToolReturn(tool_return=_text(self.tool_return), **fields)


class LettaApprovalReturn(_Lenient):
    type: Literal["approval"] = "approval"
    tool_call_id: str = Field(min_length=1)
    approve: bool
    reason: str | None = None


LettaAnswer = Annotated[LettaApprovalReturn | LettaToolReturn, Field(discriminator="type")]


class LettaApprovalCreate(_Lenient):
    """Answers to pending calls; Letta's deprecated single form (`approve`,
    `approval_request_id`, `reason`) answers every pending call of that request alike."""

    type: Literal["approval"]
    approvals: list[LettaAnswer] | None = None
    approve: bool | None = None
    approval_request_id: str | None = None
    reason: str | None = None
    otid: str | None = None

    def answers(self, pending: list[PendingCall]) -> list[Answer]:
        if self.approvals:
            return [
                a.to_answer() if isinstance(a, LettaToolReturn) else ApprovalAnswer(**a.model_dump())
                for a in self.approvals
            ]
        if self.approve is None:
            raise InvalidRequestError("an approval message needs `approvals` (or the deprecated `approve`)")
        waiting = [call for call in pending if call.answer is None and call.kind == "approval"]
        return [ApprovalAnswer(tool_call_id=c.tool_call_id, approve=self.approve, reason=self.reason) for c in waiting]


class LettaToolReturnCreate(_Lenient):
    type: Literal["tool_return"]
    tool_returns: list[LettaToolReturn] = Field(min_length=1)
    otid: str | None = None

    def answers(self, _pending: list[PendingCall]) -> list[Answer]:
        return [r.to_answer() for r in self.tool_returns]


def _kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind or "message"


LettaInput = Annotated[
    Annotated[LettaMessageCreate, Tag("message")]
    | Annotated[LettaApprovalCreate, Tag("approval")]
    | Annotated[LettaToolReturnCreate, Tag("tool_return")],
    Discriminator(_kind),
]
MessageType = Literal[
    "system_message",
    "user_message",
    "assistant_message",
    "reasoning_message",
    "hidden_reasoning_message",
    "tool_call_message",
    "tool_return_message",
    "approval_request_message",
    "approval_response_message",
    "summary_message",
    "event_message",
]

ECHOED_INPUT = frozenset({"user_message", "approval_response_message"})


class LettaRequest(_Lenient):
    """Letta's `LettaStreamingRequest`: the body of `/messages` and `/messages/stream`."""

    messages: list[LettaInput] | None = None
    input: str | list[dict[str, Any]] | None = None
    max_steps: int = Field(default=DEFAULT_MAX_STEPS, ge=1, le=MAX_STEPS_LIMIT)
    client_tools: list[ClientTool] | None = None
    include_return_message_types: list[MessageType] | None = None
    include_compaction_messages: bool = False
    streaming: bool = False
    stream_tokens: bool = False
    include_pings: bool = True
    background: bool = False
    override_model: str | None = None
    override_system: str | None = None
    approval_timeout_seconds: float | None = Field(default=None, gt=0)
    """Perdure's own: how long a pause may wait for its answers (default: the agent's)."""

    @model_validator(mode="after")
    def _one_input(self) -> LettaRequest:
        if (self.messages is None) == (self.input is None):
            raise ValueError("give exactly one of `messages` and `input`")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` must not be empty")
        if self.background:
            raise ValueError(
                "background runs are not supported; every stream resumes with POST /v1/runs/{run_id}/stream"
            )
        for name in ("override_model", "override_system"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"{name} is not supported: requests always use the agent's own model and system prompt"
                )
        return self

    @property
    def answer_message(self) -> LettaApprovalCreate | LettaToolReturnCreate | None:
        first = self.messages[0] if self.messages else None
        return first if isinstance(first, (LettaApprovalCreate, LettaToolReturnCreate)) else None

    def user_messages(self) -> list[MessageCreate]:
        if self.input is not None:
            return [MessageCreate(content=_text(self.input))]
        inputs = self.messages or []
        if any(isinstance(m, (LettaApprovalCreate, LettaToolReturnCreate)) for m in inputs[1:]):
            raise InvalidRequestError("an approval or tool return must be the first message of the request")
        return [m.to_message() for m in inputs if isinstance(m, LettaMessageCreate)]

    def shows(self, message_type: str) -> bool:
        """Whether a message of this type goes back to the client. The request's own input (its
        messages, its answers) is not echoed, as in Letta's responses and streams."""
        if message_type in ECHOED_INPUT:
            return False
        if message_type in ("summary_message", "event_message") and not self.include_compaction_messages:
            return False
        return self.include_return_message_types is None or message_type in self.include_return_message_types


class CancelRequest(_Lenient):
    run_ids: list[str] | None = None


class RunStreamRequest(_Lenient):
    """Letta's `RetrieveStreamRequest`: resume a run's stream after a `seq_id`."""

    starting_after: int = Field(default=0, ge=0)
    include_pings: bool = True
    poll_interval: float | None = None
    batch_size: int | None = None


class BlockUpdate(_Lenient):
    """A block edit: the value (other fields Letta's SDK may send are refused when they would
    change the block, since only the value can be changed here)."""

    value: str | None = None
    label: str | None = None
    limit: int | None = None
    description: str | None = None
    read_only: bool | None = None
