"""Stored messages to Letta's client-facing message types.

One stored message can become several Letta messages (reasoning, text, tool calls), the way
Letta's `to_letta_messages` splits them; every part keeps the stored message's id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.letta import (
    ApprovalRequestMessage,
    ApprovalResponseMessage,
    ApprovalReturn,
    AssistantMessage,
    EventMessage,
    HiddenReasoningMessage,
    LettaMessage,
    LettaToolCall,
    LettaToolReturn,
    ReasoningMessage,
    SummaryMessage,
    SystemMessage,
    ToolCallMessage,
    ToolReturnMessage,
    UserMessage,
)
from perdure.schemas.messages import HiddenReasoningContent, Message, ReasoningContent, TextContent


def to_letta_messages(messages: Iterable[Message], *, include_system: bool = False) -> list[LettaMessage]:
    out: list[LettaMessage] = []
    for message in messages:
        out.extend(_convert(message, include_system))
    return out


def _convert(message: Message, include_system: bool) -> list[LettaMessage]:
    common = {
        "id": message.id,
        "date": message.created_at,
        "otid": message.otid,
        "step_id": message.step_id,
        "run_id": message.run_id,
    }
    if message.role == "system":
        return [SystemMessage(content=message.text, **common)] if include_system else []
    if message.role == "user":
        return [UserMessage(content=message.text, name=message.name, sender_id=message.sender_id, **common)]
    if message.role == "summary":
        return [SummaryMessage(summary=message.text, **common)]
    if message.role == "event":
        return [EventMessage(event_data=_event_data(message.text), **common)]
    if message.role == "assistant":
        parts: list[LettaMessage] = []
        for part in message.content:
            if isinstance(part, ReasoningContent):
                parts.append(ReasoningMessage(reasoning=part.reasoning, signature=part.signature, **common))
            elif isinstance(part, HiddenReasoningContent):
                parts.append(HiddenReasoningMessage(state="redacted", hidden_reasoning=part.data, **common))
            elif isinstance(part, TextContent):
                parts.append(AssistantMessage(content=part.text, **common))
        if message.tool_calls:
            calls = [LettaToolCall(name=c.name, arguments=c.arguments, tool_call_id=c.id) for c in message.tool_calls]
            parts.append(ToolCallMessage(tool_call=calls[0], tool_calls=calls, **common))
        return parts
    if message.role == "approval" and message.tool_calls:
        calls = [LettaToolCall(name=c.name, arguments=c.arguments, tool_call_id=c.id) for c in message.tool_calls]
        return [ApprovalRequestMessage(tool_call=calls[0], tool_calls=calls, **common)]
    if message.role == "approval" and message.approvals:
        answers = [
            a
            if isinstance(a, ApprovalAnswer)
            else LettaToolReturn(
                tool_call_id=a.tool_call_id,
                status=a.status,
                tool_return=a.tool_return,
                stdout=a.stdout,
                stderr=a.stderr,
            )
            for a in message.approvals
        ]
        return [ApprovalResponseMessage(approvals=[_letta_answer(a) for a in answers], **common)]
    if message.role == "tool" and message.tool_returns:
        returns = [
            LettaToolReturn(
                tool_call_id=r.tool_call_id,
                status=r.status,
                tool_return=_unpack(r.func_response),
                stdout=r.stdout,
                stderr=r.stderr,
            )
            for r in message.tool_returns
        ]
        first = returns[0]
        return [
            ToolReturnMessage(
                tool_return=first.tool_return or "",
                status=first.status,
                tool_call_id=first.tool_call_id,
                stdout=first.stdout,
                stderr=first.stderr,
                tool_returns=returns,
                **common,
            )
        ]
    return []


def _letta_answer(answer: ApprovalAnswer | LettaToolReturn) -> ApprovalReturn | LettaToolReturn:
    if isinstance(answer, ApprovalAnswer):
        return ApprovalReturn(tool_call_id=answer.tool_call_id, approve=answer.approve, reason=answer.reason)
    return answer


def _event_data(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"text": text}
    return data if isinstance(data, dict) else {"value": data}


def _unpack(func_response: str | None) -> str | None:
    """Show the tool's own text, not the `{"status", "message", "time"}` envelope sent to the model."""
    if func_response is None:
        return None
    try:
        packed = json.loads(func_response)
    except json.JSONDecodeError:
        return func_response
    if isinstance(packed, dict) and isinstance(packed.get("message"), str):
        return packed["message"]
    return func_response
