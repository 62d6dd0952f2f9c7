"""What a scripted model says: one `ScriptedReply` per request, in order.

A reply answers a plain request with one JSON completion and a `"stream": true` request with
OpenAI's server-sent events, built here from the same fields so a script means the same thing
either way (`anthropic_replies` renders the same reply for the Messages API); `server.py` only
carries the bytes.
"""

from __future__ import annotations

import codecs
import json
import time
import uuid
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from perdure.tokens import count_message, count_request, encoding

DONE_EVENT = b"data: [DONE]\n\n"
MID_STREAM_ERROR: dict[str, Any] = {"message": "scripted mid-stream error", "type": "server_error"}


class ScriptedToolCall(BaseModel):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    """An empty id is sent as no id at all, as some local servers do."""

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)

    def wire(self) -> dict[str, Any]:
        call: dict[str, Any] = {"type": "function", "function": {"name": self.name, "arguments": self.arguments_text()}}
        if self.id:
            call["id"] = self.id
        return call

    def opening_delta(self, index: int) -> dict[str, Any]:
        """The first delta of a streamed call: id and name whole, arguments still empty."""
        delta: dict[str, Any] = {"index": index}
        if self.id:
            delta["id"] = self.id
        return {**delta, "type": "function", "function": {"name": self.name, "arguments": ""}}


class ScriptedStream(NamedTuple):
    """The SSE events of one streamed reply, and whether the connection then drops
    (no `[DONE]`, no end of the chunked body) instead of ending cleanly."""

    events: list[bytes]
    dropped: bool


class ScriptedReply(BaseModel):
    """A successful completion, or with `status` >= 400 an error response, or a `raw_body`.

    The last three fields only matter when the request asks to stream. The two `*_after_chunks`
    counts refer to the chunks carrying reasoning, content or tool-call deltas (not the opening
    role chunk); a count beyond them fails the stream after the last one, before the finish.
    """

    content: str | None = None
    reasoning: str | None = None
    hidden_reasoning: str | None = None
    """Anthropic only: a `redacted_thinking` block's data."""
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    status: int = 200
    error: dict[str, Any] | None = None
    raw_body: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    delay_s: float = 0.0
    report_usage: bool = True
    cache_read_tokens: int | None = None
    """Anthropic only: prompt tokens reported as read from the cache."""
    cache_write_tokens: int | None = None
    """Anthropic only: prompt tokens reported as written to the cache."""
    chunk_delay_s: float = 0.0
    drop_after_chunks: int | None = None
    error_after_chunks: int | None = None

    def body(self, model: str, request: dict[str, Any]) -> bytes:
        if self.raw_body is not None:
            return self.raw_body.encode()
        if self.status >= 400:
            return json.dumps(self.error or {"error": {"message": f"scripted error {self.status}"}}).encode()
        message = self._message()
        completion: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish()}],
        }
        if self.report_usage:
            completion["usage"] = _usage(request, message)
        return json.dumps(completion).encode()

    def streams(self, request: dict[str, Any]) -> bool:
        """Whether to answer with events: an error status is answered as JSON even then,
        as OpenAI rejects a request before it starts streaming."""
        return bool(request.get("stream")) and self.status < 400

    def stream(self, model: str, request: dict[str, Any]) -> ScriptedStream:
        if self.raw_body is not None:
            # An empty event would be written as the zero-length chunk that ends the body.
            return ScriptedStream([self.raw_body.encode()] if self.raw_body else [], dropped=False)
        include_usage = bool((request.get("stream_options") or {}).get("include_usage")) and self.report_usage
        chunk = _Chunker(model, include_usage)
        pieces = self._delta_pieces()
        events = [chunk.event({"role": "assistant", "content": "" if self.content is not None else None})]
        drop_at = within(self.drop_after_chunks, len(pieces))
        error_at = within(self.error_after_chunks, len(pieces))
        if drop_at is not None and (error_at is None or drop_at <= error_at):
            return ScriptedStream(events + [chunk.event(delta) for delta in pieces[:drop_at]], dropped=True)
        if error_at is not None:
            events += [chunk.event(delta) for delta in pieces[:error_at]]
            return ScriptedStream([*events, _sse(self._mid_stream_error())], dropped=False)
        events += [chunk.event(delta) for delta in pieces]
        events.append(chunk.event({}, self._finish()))
        if include_usage:
            events.append(chunk.usage(_usage(request, self._message())))
        return ScriptedStream([*events, DONE_EVENT], dropped=False)

    def _message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = [call.wire() for call in self.tool_calls]
        return message

    def _finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    def _delta_pieces(self) -> list[dict[str, Any]]:
        """Every delta after the role one, a token apiece, in the order a model emits them."""
        deltas: list[dict[str, Any]] = [{"reasoning_content": p} for p in token_pieces(self.reasoning)]
        deltas += [{"content": p} for p in token_pieces(self.content)]
        for index, call in enumerate(self.tool_calls):
            deltas.append({"tool_calls": [call.opening_delta(index)]})
            deltas += [
                {"tool_calls": [{"index": index, "function": {"arguments": p}}]}
                for p in token_pieces(call.arguments_text())
            ]
        return deltas

    def _mid_stream_error(self) -> dict[str, Any]:
        """The error event's payload; `error` has the same `{"error": {...}}` shape as for an
        error status, and a bare error object is wrapped into it."""
        if self.error is None:
            return {"error": MID_STREAM_ERROR}
        return self.error if "error" in self.error else {"error": self.error}


class _Chunker:
    """Builds the chunk objects of one stream: they share an id, a timestamp and the model, and
    with usage requested every chunk carries `"usage": null` until the last, as OpenAI sends."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self._top: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._include_usage = include_usage

    def event(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk = {**self._top, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        if self._include_usage:
            chunk["usage"] = None
        return _sse(chunk)

    def usage(self, usage: dict[str, int]) -> bytes:
        return _sse({**self._top, "choices": [], "usage": usage})


def token_pieces(text: str | None) -> list[str]:
    """`text` cut at cl100k token boundaries, so a streamed reply of N tokens is N deltas.
    A character whose UTF-8 bytes span tokens stays whole in one piece, so the pieces always
    concatenate back to `text`."""
    if not text:
        return []
    enc = encoding()
    decoder = codecs.getincrementaldecoder("utf-8")()
    pieces = [decoder.decode(token) for token in enc.decode_tokens_bytes(enc.encode_ordinary(text))]
    return [piece for piece in pieces if piece]


def within(count: int | None, total: int) -> int | None:
    """A `*_after_chunks` count held to the chunks there are, so the failure always happens."""
    return None if count is None else min(max(0, count), total)


def _usage(request: dict[str, Any], message: dict[str, Any]) -> dict[str, int]:
    """Counted like a real provider: the messages and the offered tools' schemas."""
    prompt = count_request(request.get("messages", []), request.get("tools"))
    completion_tokens = max(1, count_message(message))
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
