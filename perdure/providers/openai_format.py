"""Stored messages to OpenAI chat-completions messages.

Every tool call in the context is followed by its return (the checkpoint commits both
together), so the wire list always pairs them as providers require.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from perdure.schemas.messages import Message
from perdure.tools.returns import REQUEST_CLIP_SLACK, clip_tool_return


def to_openai_messages(messages: Iterable[Message], *, tool_return_chars: int | None = None) -> list[dict[str, Any]]:
    """Convert in order. The calls an `approval` message held back belong to the model response
    just before it, so they join that assistant message: providers require every call of one
    response in one message, followed by all their returns. Answers and events are not sent.

    `tool_return_chars` caps each tool return in the request (not in the store): one huge
    return must not fill the model's window (Letta's `tool_return_truncation_chars`)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "approval" and message.tool_calls and out and out[-1]["role"] == "assistant":
            out[-1].setdefault("tool_calls", []).extend(_wire_calls(message))
            continue
        out.extend(_convert(message, tool_return_chars))
    return out


def _cap(text: str, limit: int | None) -> str:
    return text if limit is None else clip_tool_return(text, limit, slack=REQUEST_CLIP_SLACK)


def _wire_calls(message: Message) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in message.tool_calls
    ]


def _convert(message: Message, tool_return_chars: int | None) -> list[dict[str, Any]]:
    if message.role == "system":
        return [{"role": "system", "content": message.text}]
    if message.role in ("user", "summary"):
        return [{"role": "user", "content": message.text}]
    if message.role in ("assistant", "approval") and (message.tool_calls or message.role == "assistant"):
        wire: dict[str, Any] = {"role": "assistant", "content": message.text or None}
        if message.tool_calls:
            wire["tool_calls"] = _wire_calls(message)
        return [wire]
    if message.role == "tool":
        return [
            {"role": "tool", "tool_call_id": r.tool_call_id, "content": _cap(r.func_response or "", tool_return_chars)}
            for r in message.tool_returns
        ]
    return []
