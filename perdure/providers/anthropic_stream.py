"""Reading a Messages API answer, whole or as server-sent events, into one `ChatResponse`.

A streamed answer is a sequence of content blocks (text, thinking, redacted thinking, tool
use), each opened by `content_block_start`, filled by `content_block_delta`s and closed by
`content_block_stop`; `message_start` and `message_delta` carry the usage and the stop reason,
and only `message_stop` says the answer is complete. Both paths end in `_answer`, so a script
means the same streamed or not.

A structured answer (a request with `response_format`) comes as the input of a forced tool; it
is read back as the answer's text, as an OpenAI-compatible server returns it, and any text
block beside it is an aside that is neither streamed nor kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from perdure.providers.base import ChatResponse, LLMError, LLMInvalidResponseError, StreamPiece
from perdure.schemas.messages import HiddenReasoningContent, ReasoningContent, ReasoningPart, ToolCall
from perdure.schemas.run import TokenUsage

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
"""Anthropic's stop reasons in chat completions' words, which the loop's decisions read."""
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
"""An error's `type` as the HTTP status Anthropic answers it with, for errors sent mid-stream."""


class _Block(BaseModel):
    type: str
    text: str = ""
    signature: str | None = None
    data: str = ""
    id: str = ""
    name: str = ""
    call_index: int = 0


def read_message(data: Any, answer_tool: str | None = None) -> ChatResponse:
    """A whole (non-streamed) message body; raises on a wrong shape (the caller types it).
    `answer_tool`: the forced tool whose input is a structured answer."""
    blocks: list[_Block] = []
    for block in data["content"]:
        kind = block["type"]
        if kind == "tool_use" and answer_tool is not None and block["name"] == answer_tool:
            blocks.append(_Block(type="answer", text=_input_text(block.get("input"))))
        elif kind == "text":
            blocks.append(_Block(type="aside" if answer_tool else kind, text=block["text"]))
        elif kind == "thinking":
            blocks.append(_Block(type=kind, text=block["thinking"], signature=block.get("signature")))
        elif kind == "redacted_thinking":
            blocks.append(_Block(type=kind, data=block["data"]))
        elif kind == "tool_use":
            blocks.append(_Block(type=kind, id=block["id"], name=block["name"], text=_input_text(block.get("input"))))
    return _answer(blocks, data.get("stop_reason"), read_usage(data.get("usage")), data.get("model"), answer_tool)


class AnthropicStreamAssembler:
    """Builds the answer from decoded stream events and returns the pieces worth forwarding."""

    def __init__(self, answer_tool: str | None = None) -> None:
        self._answer_tool = answer_tool
        self._blocks: dict[int, _Block] = {}
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] = {}
        self._model: str | None = None
        self.finished = False

    def feed(self, event: Any, error_for: Callable[[Any], LLMError]) -> list[StreamPiece]:
        if not isinstance(event, dict):
            raise LLMInvalidResponseError(f"a stream event is not a JSON object: {str(event)[:300]}")
        kind = event.get("type")
        if kind == "error":
            raise error_for(event.get("error"))
        if kind == "message_start":
            message = event["message"]
            self._model = message.get("model") or self._model
            self._usage.update(message.get("usage") or {})
        elif kind == "message_delta":
            self._stop_reason = (event.get("delta") or {}).get("stop_reason") or self._stop_reason
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self.finished = True
        elif kind == "content_block_start":
            return self._start(event["index"], event["content_block"])
        elif kind == "content_block_delta":
            return self._delta(self._blocks[event["index"]], event["delta"])
        return []

    def _start(self, index: int, block: dict[str, Any]) -> list[StreamPiece]:
        kind = block["type"]
        if kind == "tool_use" and self._answer_tool is not None and block["name"] == self._answer_tool:
            self._blocks[index] = _Block(type="answer")
            return []
        if kind == "text" and self._answer_tool is not None:
            kind = "aside"
        if kind == "tool_use":
            call_index = sum(1 for b in self._blocks.values() if b.type == "tool_use")
            opened = self._blocks[index] = _Block(type=kind, id=block["id"], name=block["name"], call_index=call_index)
            return [StreamPiece(kind="tool_call", index=call_index, tool_call_id=opened.id, name=opened.name)]
        opened = self._blocks[index] = _Block(type=kind, data=block.get("data") or "")
        if kind == "redacted_thinking":
            return [StreamPiece(kind="hidden_reasoning", text=opened.data, index=index)]
        # A text or thinking block usually opens empty; any text it opens with is its first piece.
        opened.text = block.get("text") or block.get("thinking") or ""
        if not opened.text or kind not in ("text", "thinking"):
            return []
        return [StreamPiece(kind="content" if kind == "text" else "reasoning", text=opened.text)]

    def _delta(self, block: _Block, delta: dict[str, Any]) -> list[StreamPiece]:
        kind = delta["type"]
        if kind == "signature_delta":
            block.signature = (block.signature or "") + delta["signature"]
            return []
        text = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}.get(kind)
        if text is None or not delta.get(text):
            return []
        block.text += delta[text]
        if block.type == "tool_use":
            return [
                StreamPiece(
                    kind="tool_call", text=delta[text], index=block.call_index, tool_call_id=block.id, name=block.name
                )
            ]
        if block.type in ("text", "answer", "thinking"):
            return [StreamPiece(kind="reasoning" if block.type == "thinking" else "content", text=delta[text])]
        return []

    def finish(self) -> ChatResponse:
        blocks = [block for _, block in sorted(self._blocks.items())]
        return _answer(blocks, self._stop_reason, read_usage(self._usage), self._model, self._answer_tool)


def _answer(
    blocks: list[_Block],
    stop_reason: str | None,
    usage: TokenUsage | None,
    model: str | None,
    answer_tool: str | None = None,
) -> ChatResponse:
    """A structured answer given through its tool ends the model's turn: it reads as `stop`."""
    parts: list[ReasoningPart] = []
    for block in blocks:
        if block.type == "thinking":
            parts.append(ReasoningContent(reasoning=block.text, signature=block.signature))
        elif block.type == "redacted_thinking":
            parts.append(HiddenReasoningContent(data=block.data))
    answered = any(block.type == "answer" for block in blocks)
    finish_reason = (
        "stop" if answered and stop_reason == "tool_use" else FINISH_REASONS.get(stop_reason or "", stop_reason)
    )
    calls = [ToolCall(id=b.id, name=b.name, arguments=b.text or "{}") for b in blocks if b.type == "tool_use"]
    response = ChatResponse(
        content="".join(b.text for b in blocks if b.type in ("text", "answer")) or None,
        reasoning="".join(b.text for b in blocks if b.type == "thinking") or None,
        reasoning_parts=parts,
        tool_calls=calls,
        finish_reason=finish_reason,
        usage=usage,
        model=model,
    )
    if answer_tool is not None and not answered:
        raise LLMInvalidResponseError(
            f"the model did not give its structured answer through its {answer_tool!r} tool "
            f"(stop reason {stop_reason!r})"
        )
    if not response.content and not response.tool_calls:
        raise LLMInvalidResponseError(f"the model answered neither text nor a tool call (stop reason {stop_reason!r})")
    return response


def read_usage(usage: Any) -> TokenUsage | None:
    """Anthropic counts cached prompt tokens apart from `input_tokens`; Letta's prompt tokens
    are all of them, with the cache reads and writes reported as their parts."""
    if not isinstance(usage, dict) or not usage:
        return None
    read = usage.get("cache_read_input_tokens")
    written = usage.get("cache_creation_input_tokens")
    return TokenUsage(
        prompt_tokens=(usage.get("input_tokens") or 0) + (read or 0) + (written or 0),
        completion_tokens=usage.get("output_tokens") or 0,
        cached_input_tokens=read,
        cache_write_tokens=written,
    )


def _input_text(value: Any) -> str:
    if not isinstance(value, dict):
        raise TypeError(f"a tool_use input is not an object: {value!r}")
    return json.dumps(value)
