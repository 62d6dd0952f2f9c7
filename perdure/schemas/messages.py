"""Stored messages: what the database keeps and what the provider request is built from.

One model response is one `assistant` message (its text, reasoning and tool calls); all the
returns of that response's tool calls are one `tool` message, as in Letta. Calls that need a
person or the client are held in an `approval` message after the assistant message; the
answers are another `approval` message, followed by the `tool` message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from perdure.schemas.approvals import Answer

Role = Literal["system", "user", "assistant", "tool", "approval", "summary", "event"]
"""`event` messages record what the system did (a compaction); they are never sent to the model."""
ToolStatus = Literal["success", "error"]


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ReasoningContent(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    reasoning: str
    signature: str | None = None


class HiddenReasoningContent(BaseModel):
    """Reasoning the provider encrypted (Anthropic's `redacted_thinking`): unreadable, but it must
    go back to the provider with the rest of the answer, so it is kept as it came."""

    type: Literal["redacted_reasoning"] = "redacted_reasoning"
    data: str


Content = Annotated[TextContent | ReasoningContent | HiddenReasoningContent, Field(discriminator="type")]
ReasoningPart = Annotated[ReasoningContent | HiddenReasoningContent, Field(discriminator="type")]
"""What a provider returns as the model's thinking, in the order it came."""


class ToolCall(BaseModel):
    """A model's request to call a tool. `arguments` stays the raw JSON string the model sent."""

    id: str
    name: str
    arguments: str = "{}"


class ToolReturn(BaseModel):
    tool_call_id: str
    status: ToolStatus
    func_response: str | None = None
    stdout: list[str] | None = None
    stderr: list[str] | None = None


class Message(BaseModel):
    id: str
    agent_id: str
    role: Role
    content: list[Content] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_returns: list[ToolReturn] = Field(default_factory=list)
    approvals: list[Answer] = Field(default_factory=list)
    """On an `approval` message that answers a request: the answers, in call order."""
    client_tool_call_ids: list[str] = Field(default_factory=list)
    """On an `approval` message that requests answers: which calls are client-side tools."""
    name: str | None = None
    sender_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    otid: str | None = None
    model: str | None = None
    created_at: datetime | None = None

    @property
    def text(self) -> str:
        return "\n".join(part.text for part in self.content if isinstance(part, TextContent))

    @property
    def reasoning(self) -> str:
        return "\n".join(part.reasoning for part in self.content if isinstance(part, ReasoningContent))
