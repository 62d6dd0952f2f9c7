"""The same `ScriptedReply` as an Anthropic Messages API answer: a message body, or its events.

A script means the same thing on either protocol: reasoning becomes a signed `thinking` block,
`hidden_reasoning` a `redacted_thinking` block, tool calls `tool_use` blocks, an error status
Anthropic's error body, and the `*_after_chunks` counts refer to `content_block_delta` events.
Under a forced tool (`tool_choice` of type `tool`), content that is a JSON object becomes that
tool's input, as a model so forced answers: Anthropic's structured output, so one script serves
json_schema mode on either protocol.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from perdure.scripted.replies import ScriptedReply, ScriptedStream, token_pieces, within
from perdure.tokens import count_message, count_request, count_text

SIGNATURE = "scripted-signature"
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
STOP_REASONS: dict[str, str] = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
MID_STREAM_ERROR: dict[str, Any] = {"type": "api_error", "message": "scripted mid-stream error"}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error body for `status` (`overloaded_error` for 529, ...)."""
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_body(reply: ScriptedReply, model: str, request: dict[str, Any]) -> bytes:
    if reply.raw_body is not None:
        return reply.raw_body.encode()
    if reply.status >= 400:
        return json.dumps(reply.error or anthropic_error(reply.status, f"scripted error {reply.status}")).encode()
    message = {**_message(model, reply, request), "content": _blocks(reply, request)}
    return json.dumps(message).encode()


def anthropic_stream(reply: ScriptedReply, model: str, request: dict[str, Any]) -> ScriptedStream:
    """`message_start`, each block's start, deltas (a token apiece) and stop, `message_delta`
    with the stop reason and usage, `message_stop`; cut or failed after the scripted delta."""
    if reply.raw_body is not None:
        return ScriptedStream([reply.raw_body.encode()] if reply.raw_body else [], dropped=False)
    message = _message(model, reply, request)
    start = {**message, "content": [], "stop_reason": None}
    events: list[tuple[bytes, bool]] = [(_event({"type": "message_start", "message": start}), False)]
    events.append((_event({"type": "ping"}), False))
    for index, block in enumerate(_blocks(reply, request)):
        events += _block_events(index, block)
    deltas = sum(1 for _, is_delta in events if is_delta)
    drop_at = within(reply.drop_after_chunks, deltas)
    error_at = within(reply.error_after_chunks, deltas)
    if drop_at is not None and (error_at is None or drop_at <= error_at):
        return ScriptedStream(_until_delta(events, drop_at), dropped=True)
    if error_at is not None:
        return ScriptedStream([*_until_delta(events, error_at), _event(_mid_stream_error(reply))], dropped=False)
    usage = {"output_tokens": start["usage"]["output_tokens"]}
    ending = {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": usage,
    }
    return ScriptedStream(
        [event for event, _ in events] + [_event(ending), _event({"type": "message_stop"})], dropped=False
    )


def start_reason(reply: ScriptedReply) -> str:
    """The stop reason in Anthropic's words; a script may give either protocol's."""
    reason = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    return STOP_REASONS.get(reason, reason)


def _stop_reason(reply: ScriptedReply, request: dict[str, Any]) -> str:
    """A scripted finish reason wins; an answer given through a forced tool stops for `tool_use`."""
    if reply.finish_reason is None and _forced_input(reply, request) is not None:
        return "tool_use"
    return start_reason(reply)


def _message(model: str, reply: ScriptedReply, request: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "stop_reason": _stop_reason(reply, request),
        "stop_sequence": None,
        "usage": _usage(reply, request),
    }


def _blocks(reply: ScriptedReply, request: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.reasoning:
        blocks.append({"type": "thinking", "thinking": reply.reasoning, "signature": SIGNATURE})
    if reply.hidden_reasoning:
        blocks.append({"type": "redacted_thinking", "data": reply.hidden_reasoning})
    forced = _forced_input(reply, request)
    if forced is not None:
        name, value = forced
        blocks.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "input": value})
    elif reply.content:
        blocks.append({"type": "text", "text": reply.content})
    for call in reply.tool_calls:
        arguments = call.arguments if isinstance(call.arguments, dict) else json.loads(call.arguments or "{}")
        call_id = call.id or f"toolu_{uuid.uuid4().hex[:24]}"
        blocks.append({"type": "tool_use", "id": call_id, "name": call.name, "input": arguments})
    return blocks


def _forced_input(reply: ScriptedReply, request: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The forced tool and the input a content-only reply gives it; None when the request forces
    no tool, the reply calls tools itself, or its content is not a JSON object (a model that
    disobeys, which a script may play too)."""
    choice = request.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool" or reply.tool_calls or not reply.content:
        return None
    try:
        value = json.loads(reply.content)
    except ValueError:
        return None
    return (str(choice.get("name")), value) if isinstance(value, dict) else None


def _block_events(index: int, block: dict[str, Any]) -> list[tuple[bytes, bool]]:
    kind = block["type"]
    if kind == "thinking":
        opening: dict[str, Any] = {"type": "thinking", "thinking": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in token_pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "text":
        opening = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in token_pieces(block["text"])]
    elif kind == "tool_use":
        opening = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in token_pieces(json.dumps(block["input"]))]
    else:  # redacted thinking arrives whole
        opening, deltas = block, []
    events = [(_event({"type": "content_block_start", "index": index, "content_block": opening}), False)]
    events += [(_event({"type": "content_block_delta", "index": index, "delta": d}), True) for d in deltas]
    return [*events, (_event({"type": "content_block_stop", "index": index}), False)]


def _until_delta(events: list[tuple[bytes, bool]], count: int) -> list[bytes]:
    """The events up to and including the `count`-th delta."""
    out: list[bytes] = []
    seen = 0
    for event, is_delta in events:
        if is_delta and seen == count:
            break
        seen += is_delta
        out.append(event)
    return out


def _usage(reply: ScriptedReply, request: dict[str, Any]) -> dict[str, int]:
    """Counted like a provider: the system prompt, messages and tools; the scripted cache
    reads and writes are reported beside `input_tokens`, as Anthropic counts them apart."""
    system = request.get("system") or []
    system_text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system)
    prompt = count_request(request.get("messages", []), request.get("tools")) + count_text(system_text)
    answer = {"role": "assistant", "content": reply.content, "reasoning": reply.reasoning}
    usage = {"input_tokens": prompt, "output_tokens": max(1, count_message(answer))}
    if reply.cache_read_tokens is not None:
        usage["cache_read_input_tokens"] = reply.cache_read_tokens
    if reply.cache_write_tokens is not None:
        usage["cache_creation_input_tokens"] = reply.cache_write_tokens
    return usage


def _mid_stream_error(reply: ScriptedReply) -> dict[str, Any]:
    if reply.error is None:
        return {"type": "error", "error": MID_STREAM_ERROR}
    return reply.error if "error" in reply.error else {"type": "error", "error": reply.error}


def _event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()
