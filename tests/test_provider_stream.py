"""The OpenAI-compatible provider's streamed requests, over real HTTP.

`OpenAICompatibleProvider.stream` reads the scripted server's server-sent events with a real
`httpx.AsyncClient`, so chunked bodies, dropped connections and slow chunks travel a real
socket. A streamed answer must be the very answer `complete` gives for the same reply (the loop
cannot tell them apart), the pieces handed to the listener must add up to it, and every way a
stream can fail must be the typed error that decides retrying.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from activities.errors import llm_failure
from perdure.providers.base import (
    ChatResponse,
    ContextWindowExceededError,
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMConnectionError,
    LLMError,
    LLMInvalidResponseError,
    LLMNotFoundError,
    LLMRateLimitError,
    LLMServerError,
    LLMTimeoutError,
    StreamPiece,
)
from perdure.schemas.letta import StopReasonType
from perdure.scripted.replies import MID_STREAM_ERROR, token_pieces
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from tests.test_provider import USER_MESSAGES, WEATHER_TOOL, chat_request, error_reply, http, provider_for, refused_url
from workflows.decisions import stop_reason_for_llm_error

__all__ = ["http", "refused_url"]  # the provider tests' fixtures: one real httpx client per test, a refused port

# --------------------------------------------------------------------------- helpers

UNICODE = "Grüße aus Köln 👋🏽 — 你好，世界！ naïve café 🎉🎉 «ok»"


class Pieces(list[StreamPiece]):
    """The listener: every piece, in the order `on_piece` was called."""

    def text(self, kind: str, index: int | None = None) -> str:
        return "".join(p.text for p in self if p.kind == kind and (index is None or p.index == index))

    def texts(self, kind: str, index: int | None = None) -> list[str]:
        return [p.text for p in self if p.kind == kind and (index is None or p.index == index)]


async def streamed(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model: str, reply: ScriptedReply, **fields: Any
) -> tuple[ChatResponse, Pieces]:
    """Script one reply, stream it, and return the answer with the pieces the listener got."""
    llm.script(model, [reply])
    pieces = Pieces()
    response = await provider_for(llm.base_url, http).stream(chat_request(model, **fields), pieces.append)
    return response, pieces


async def stream_failure(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model: str, reply: ScriptedReply
) -> tuple[LLMError, Pieces]:
    """Script one reply that must make the stream raise; the typed error and the pieces before it."""
    llm.script(model, [reply])
    before = len(llm.requests(model))
    pieces = Pieces()
    with pytest.raises(LLMError) as raised:
        await provider_for(llm.base_url, http).stream(chat_request(model), pieces.append)
    assert len(llm.requests(model)) == before + 1, "the provider itself must never retry"
    return raised.value, pieces


def sse(*events: Any, sep: str = "\n") -> str:
    """An SSE body written by hand: each event a `data:` line (strings go as they are)."""
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}{sep}{sep}" for e in events)


def chunk(delta: dict[str, Any] | None = None, finish_reason: object = None, **top: Any) -> dict[str, Any]:
    """A raw stream event; `finish_reason` is any JSON value, so malformed events can be built too."""
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "model": "raw",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}],
        **top,
    }


def url_of(llm: ScriptedLLMServer) -> str:
    return f"{llm.base_url}/chat/completions"


# --------------------------------------------------------------------------- the answer


PARITY_REPLIES = [
    pytest.param(ScriptedReply(content="Hello, world. This answer has several tokens in it."), id="content"),
    pytest.param(
        ScriptedReply(
            content="Short answer.", reasoning="The user greets; greet back briefly.", finish_reason="length"
        ),
        id="reasoning-and-finish-reason",
    ),
    pytest.param(ScriptedReply(content=UNICODE, reasoning="Denke nach… 🤔"), id="unicode-and-emoji"),
    pytest.param(
        ScriptedReply(
            content="Let me check.",
            tool_calls=[ScriptedToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_one")],
        ),
        id="content-and-one-tool-call",
    ),
    pytest.param(
        ScriptedReply(
            tool_calls=[
                ScriptedToolCall(
                    name="get_weather", arguments={"city": "Zürich", "days": 3, "units": ["C", "F"]}, id="call_a"
                ),
                ScriptedToolCall(
                    name="send_message", arguments={"message": "Fertig! 🎉 Ergebnis: «sonnig»"}, id="call_b"
                ),
                ScriptedToolCall(name="ping", arguments='{"nested": {"deep": [1, 2, {"x": null}]}}', id=""),
                ScriptedToolCall(name="noop", arguments={}, id="call_d"),
            ]
        ),
        id="several-tool-calls",
    ),
    pytest.param(
        ScriptedReply(
            content="no usage reported here",
            report_usage=False,
            tool_calls=[ScriptedToolCall(name="ping", id="call_x")],
            finish_reason="stop",
        ),
        id="no-usage",
    ),
    pytest.param(
        ScriptedReply(tool_calls=[ScriptedToolCall(name="noop", arguments="", id="call_empty")]),
        id="empty-arguments-string",
    ),
]


@pytest.mark.parametrize("reply", PARITY_REPLIES)
async def test_streamed_answer_equals_complete_answer(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, reply: ScriptedReply
) -> None:
    """Content, reasoning, tool calls (ids, names, arguments), finish reason, usage and model:
    the loop must not be able to tell a streamed answer from a plain one."""
    llm.script(model_name, [reply, reply])
    provider = provider_for(llm.base_url, http)
    request = chat_request(model_name, tools=[WEATHER_TOOL])

    plain = await provider.complete(request)
    pieces = Pieces()
    live = await provider.stream(request, pieces.append)

    def made_ids_masked(answer: ChatResponse) -> ChatResponse:
        """A call the server sent without an id gets a fresh `call_…` id on either path, and
        two fresh ids cannot match; an id the server sent must come through as sent."""
        assert all(c.id.startswith("call_") for c in answer.tool_calls)
        calls = [
            c if s.id else c.model_copy(update={"id": "call_made_here"})
            for c, s in zip(answer.tool_calls, reply.tool_calls, strict=True)
        ]
        return answer.model_copy(update={"tool_calls": calls})

    assert made_ids_masked(live) == made_ids_masked(plain)
    assert live.model == model_name
    assert [(c.id, c.name, c.arguments) for c in live.tool_calls] == [
        (s.id or live.tool_calls[i].id, s.name, s.arguments_text() or "{}") for i, s in enumerate(reply.tool_calls)
    ]
    streamed_ids = {p.index: p.tool_call_id for p in pieces if p.kind == "tool_call"}
    assert [streamed_ids[i] for i in range(len(live.tool_calls))] == [c.id for c in live.tool_calls], (
        "pieces carry the final ids"
    )
    assert live.content == reply.content
    assert live.reasoning == reply.reasoning
    assert (live.usage is None) is (not reply.report_usage)


async def test_pieces_add_up_to_the_answer_in_arrival_order(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Each delta is one piece, forwarded as it arrives: reasoning, then text, then each call."""
    calls = [
        ScriptedToolCall(name="get_weather", arguments={"city": "Köln", "days": 2}, id="call_0"),
        ScriptedToolCall(name="send_message", arguments={"message": "Bis später 👋"}, id="call_1"),
    ]
    reply = ScriptedReply(content=UNICODE, reasoning="First think, then answer.", tool_calls=calls)

    response, pieces = await streamed(llm, http, model_name, reply)

    assert pieces.texts("reasoning") == token_pieces(reply.reasoning)
    assert pieces.texts("content") == token_pieces(UNICODE)
    assert len(pieces.texts("content")) > 1, "a multi-token answer must arrive in more than one piece"
    assert pieces.text("content") == response.content == UNICODE
    assert pieces.text("reasoning") == response.reasoning
    for index, call in enumerate(calls):
        assert pieces.texts("tool_call", index) == ["", *token_pieces(call.arguments_text())]
        assert pieces.text("tool_call", index) == response.tool_calls[index].arguments == call.arguments_text()
        assert {(p.tool_call_id, p.name) for p in pieces if p.kind == "tool_call" and p.index == index} == {
            (call.id, call.name)
        }
    kinds = [(p.kind, p.index) for p in pieces]
    assert kinds == sorted(kinds, key=lambda k: ("reasoning", "content", "tool_call").index(k[0]) * 10 + k[1]), (
        "pieces out of arrival order"
    )


async def test_pieces_are_forwarded_while_the_stream_is_still_coming(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """The listener gets each piece as its chunk arrives, not once the whole body is read."""
    reply = ScriptedReply(content="one two three four five six", chunk_delay_s=0.15)
    seen: list[tuple[float, int]] = []
    llm.script(model_name, [reply])

    def on_piece(piece: StreamPiece) -> None:
        seen.append((time.monotonic(), llm.in_flight(model_name)))

    started = time.monotonic()
    await provider_for(llm.base_url, http).stream(chat_request(model_name), on_piece)
    finished = time.monotonic()

    assert len(seen) == len(token_pieces(reply.content)) >= 4
    assert seen[0][1] == 1, "the first piece must reach the listener while the server is still sending"
    assert seen[0][0] - started < (finished - started) / 2
    assert seen[-1][0] - seen[0][0] >= 0.1 * (len(seen) - 1)


async def test_request_body_asks_to_stream_with_usage(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """The body is `complete`'s, plus `stream: true` and `stream_options.include_usage`."""
    messages = [{"role": "system", "content": "Be brief."}, *USER_MESSAGES]
    fields: dict[str, Any] = {
        "messages": messages,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "max_tokens": 64,
        "temperature": 0.2,
    }

    await streamed(llm, http, model_name, ScriptedReply(content="ok"), **fields)

    (sent,) = llm.requests(model_name)
    assert sent == {"model": model_name, **fields, "stream": True, "stream_options": {"include_usage": True}}


async def test_usage_is_read_from_the_final_chunk(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Usage comes in its own chunk after the finish; without it the answer has no usage."""
    reported, _ = await streamed(llm, http, model_name, ScriptedReply(content="counted answer"))
    assert reported.usage is not None
    assert reported.usage.prompt_tokens > 0 and reported.usage.completion_tokens > 0
    assert reported.usage.cached_input_tokens is None and reported.usage.reasoning_tokens is None

    unreported, _ = await streamed(llm, http, model_name, ScriptedReply(content="uncounted answer", report_usage=False))
    assert unreported.content == "uncounted answer"
    assert unreported.usage is None


# --------------------------------------------------------------------------- errors before the stream


@pytest.mark.parametrize(
    ("status", "error_class", "retryable"),
    [
        (400, LLMBadRequestError, False),
        (401, LLMAuthenticationError, False),
        (403, LLMAuthenticationError, False),
        (404, LLMNotFoundError, False),
        (413, ContextWindowExceededError, False),
        (422, LLMBadRequestError, False),
        (429, LLMRateLimitError, True),
        (500, LLMServerError, True),
        (503, LLMServerError, True),
    ],
)
async def test_status_before_the_stream_maps_like_complete(
    llm: ScriptedLLMServer,
    http: httpx.AsyncClient,
    model_name: str,
    status: int,
    error_class: type[LLMError],
    retryable: bool,
) -> None:
    """A request refused before streaming is typed exactly as `complete` types it."""
    reply = error_reply(status, f"provider says {status} happened")
    llm.script(model_name, [reply])
    with pytest.raises(LLMError) as plain:
        await provider_for(llm.base_url, http).complete(chat_request(model_name))

    error, pieces = await stream_failure(llm, http, model_name, reply)

    assert type(error) is type(plain.value) is error_class
    assert error.retryable is retryable
    assert error.status_code == status
    assert error.message == plain.value.message
    assert f"provider says {status} happened" in error.message
    assert url_of(llm) in error.message
    assert pieces == []


async def test_context_overflow_before_the_stream(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    error, _ = await stream_failure(
        llm,
        http,
        model_name,
        error_reply(
            400,
            "This model's maximum context length is 8192 tokens.",
            type="invalid_request_error",
            code="context_length_exceeded",
        ),
    )

    assert type(error) is ContextWindowExceededError
    assert not error.retryable


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "7"}, 7.0, id="seconds"),
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="milliseconds"),
        pytest.param({}, None, id="absent"),
    ],
)
async def test_retry_after_on_a_429_before_the_stream(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, headers: dict[str, str], expected: float | None
) -> None:
    error, _ = await stream_failure(
        llm, http, model_name, error_reply(429, "Rate limit reached for requests", headers=headers)
    )

    assert isinstance(error, LLMRateLimitError) and error.retryable
    assert error.retry_after == expected
    assert "Rate limit reached for requests" in error.message
    delay = llm_failure(error).next_retry_delay
    assert (delay.total_seconds() if delay is not None else None) == expected


# --------------------------------------------------------------------------- errors in the stream


@pytest.mark.parametrize(
    ("error", "error_class", "retryable"),
    [
        pytest.param(
            {"message": "Rate limit reached for gpt-x", "type": "rate_limit_error"},
            LLMRateLimitError,
            True,
            id="rate-type",
        ),
        pytest.param(
            {"message": "Too many requests", "type": "requests", "code": "rate_limit_exceeded"},
            LLMRateLimitError,
            True,
            id="rate-code",
        ),
        pytest.param(
            {"message": "Invalid 'temperature'", "type": "invalid_request_error", "code": "invalid_value"},
            LLMBadRequestError,
            False,
            id="invalid-request",
        ),
        pytest.param(
            {
                "message": "This model's maximum context length is 8192 tokens. However, you requested 9001 tokens.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
            ContextWindowExceededError,
            False,
            id="context-length-with-text",
        ),
        pytest.param(
            {
                "message": "request (4476 tokens) exceeds the available context size (4096 tokens)",
                "type": "invalid_request_error",
            },
            ContextWindowExceededError,
            False,
            id="context-size-text",
        ),
        pytest.param(
            {"message": "Input is too large for this deployment.", "code": "context_length_exceeded"},
            ContextWindowExceededError,
            False,
            id="context-length-code-only",
        ),
        pytest.param(
            {"message": "Invalid API key", "type": "authentication_error"}, LLMAuthenticationError, False, id="auth"
        ),
        pytest.param(
            {"message": "The server is overloaded", "type": "server_error"}, LLMServerError, True, id="server"
        ),
        pytest.param({"message": "Something odd"}, LLMServerError, True, id="untyped"),
        pytest.param("a bare error string", LLMServerError, True, id="bare-string"),
    ],
)
async def test_in_stream_error_event_is_typed(
    llm: ScriptedLLMServer,
    http: httpx.AsyncClient,
    model_name: str,
    error: Any,
    error_class: type[LLMError],
    retryable: bool,
) -> None:
    """Once streaming, a server reports failure as an `{"error": ...}` event, typed by type/code."""
    reply = ScriptedReply(
        content="Partial answer before the failure arrives.", error_after_chunks=3, error={"error": error}
    )

    raised, pieces = await stream_failure(llm, http, model_name, reply)

    assert type(raised) is error_class
    assert raised.retryable is retryable
    text = error["message"] if isinstance(error, dict) else error
    assert text in raised.message
    assert url_of(llm) in raised.message
    assert "in-stream error" in raised.message
    assert pieces.texts("content") == token_pieces(reply.content)[:3], (
        "what arrived before the error was still forwarded"
    )
    assert llm_failure(raised).non_retryable is not retryable


async def test_default_mid_stream_error_before_any_piece(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    error, pieces = await stream_failure(
        llm, http, model_name, ScriptedReply(content="never shown", error_after_chunks=0)
    )

    assert type(error) is LLMServerError and error.retryable
    assert MID_STREAM_ERROR["message"] in error.message
    assert pieces == []
    assert stop_reason_for_llm_error(error.error_type) is StopReasonType.llm_api_error


@pytest.mark.parametrize("after", [0, 2, 100])
async def test_dropped_connection_is_a_retryable_connection_error(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, after: int
) -> None:
    """A connection cut mid-stream leaves an incomplete answer: the next attempt asks again."""
    reply = ScriptedReply(content="A reply long enough to be cut somewhere in its middle.", drop_after_chunks=after)

    error, pieces = await stream_failure(llm, http, model_name, reply)

    assert type(error) is LLMConnectionError
    assert error.retryable
    assert url_of(llm) in error.message
    assert "broke off" in error.message
    assert pieces.texts("content") == token_pieces(reply.content)[:after]
    assert llm_failure(error).non_retryable is False


@pytest.mark.parametrize(
    "raw_body",
    [
        pytest.param(
            sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "half an ans"})), id="no-finish-no-done"
        ),
        pytest.param("", id="empty-body"),
        pytest.param(": just a comment\n\n", id="only-a-comment"),
    ],
)
async def test_stream_ending_without_finish_or_done_is_a_connection_error(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, raw_body: str
) -> None:
    """A body that ends cleanly but before the model finished cannot be trusted as an answer."""
    error, _ = await stream_failure(llm, http, model_name, ScriptedReply(raw_body=raw_body))

    assert type(error) is LLMConnectionError
    assert error.retryable
    assert url_of(llm) in error.message
    assert "ended before the model finished" in error.message


async def test_connection_refused(refused_url: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(LLMConnectionError) as raised:
        await provider_for(refused_url, http).stream(chat_request("any"), lambda piece: None)

    assert raised.value.retryable
    assert refused_url in raised.value.message


async def test_slow_chunks_time_out(llm: ScriptedLLMServer, model_name: str) -> None:
    """A chunk slower than the client's read timeout is a retryable timeout, after the pieces so far."""
    llm.script(model_name, [ScriptedReply(content="first then a long pause", chunk_delay_s=1.0)])
    pieces = Pieces()
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.3)) as impatient:
        with pytest.raises(LLMTimeoutError) as raised:
            await provider_for(llm.base_url, impatient).stream(chat_request(model_name), pieces.append)

    assert raised.value.retryable
    assert "timed out" in raised.value.message
    assert url_of(llm) in raised.value.message
    assert len(pieces) <= 1


@pytest.mark.parametrize(
    "raw_body",
    [
        pytest.param(sse(chunk({"content": "Hel"}), "{not json", chunk({}, "stop"), "[DONE]"), id="broken-json"),
        pytest.param(sse(chunk({"content": "Hel"}), "", chunk({}, "stop"), "[DONE]"), id="empty-data"),
    ],
)
async def test_malformed_data_line_is_invalid_response(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, raw_body: str
) -> None:
    """A data line that is not JSON will not improve on a retry: non-retryable, showing the line."""
    error, pieces = await stream_failure(llm, http, model_name, ScriptedReply(raw_body=raw_body))

    assert type(error) is LLMInvalidResponseError
    assert not error.retryable
    assert "not JSON" in error.message
    assert pieces.text("content") == "Hel"
    assert stop_reason_for_llm_error(error.error_type) is StopReasonType.invalid_llm_response
    assert llm_failure(error).non_retryable is True


async def test_broken_json_is_shown_in_the_message(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    error, _ = await stream_failure(
        llm, http, model_name, ScriptedReply(raw_body=sse('{"surprise": "unterminated', "[DONE]"))
    )
    assert '{"surprise": "unterminated' in error.message


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(ScriptedReply(content=None), id="no-content"),
        pytest.param(ScriptedReply(content=""), id="empty-content"),
        pytest.param(ScriptedReply(reasoning="I thought, but said nothing."), id="reasoning-only"),
    ],
)
async def test_neither_text_nor_tool_call_is_invalid_response(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, reply: ScriptedReply
) -> None:
    """As for `complete`: an answer with nothing in it is not retried."""
    llm.script(model_name, [reply])
    with pytest.raises(LLMInvalidResponseError):
        await provider_for(llm.base_url, http).complete(chat_request(model_name))

    error, _ = await stream_failure(llm, http, model_name, reply)

    assert type(error) is LLMInvalidResponseError
    assert not error.retryable
    assert "neither text nor a tool call" in error.message


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(
            chunk({"content": "hi"}, "stop", usage={"prompt_tokens": "many", "completion_tokens": 1}), id="bad-usage"
        ),
        pytest.param({"choices": [{"index": 0, "delta": "hi", "finish_reason": "stop"}]}, id="delta-is-a-string"),
        pytest.param(chunk({"tool_calls": ["get_weather"]}, "tool_calls"), id="tool-call-fragment-is-a-string"),
        pytest.param(
            chunk({"tool_calls": [{"index": 0, "function": "get_weather"}]}, "tool_calls"), id="function-is-a-string"
        ),
        pytest.param(chunk({"content": "hi"}, 42), id="finish-reason-is-a-number"),
    ],
)
async def test_wrongly_shaped_event_is_invalid_response(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, event: dict[str, Any]
) -> None:
    """Like a malformed completion body: any unusable event is the typed, non-retryable error."""
    llm.script(model_name, [ScriptedReply(raw_body=sse(event, "[DONE]"))])
    with pytest.raises(Exception) as raised:
        await provider_for(llm.base_url, http).stream(chat_request(model_name), lambda piece: None)

    assert type(raised.value) is LLMInvalidResponseError, f"{type(raised.value).__name__}: {raised.value}"


async def test_event_that_is_not_an_object_is_invalid_response(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    error, _ = await stream_failure(
        llm, http, model_name, ScriptedReply(raw_body=sse(chunk({"content": "a"}), ["not", "an", "object"], "[DONE]"))
    )

    assert type(error) is LLMInvalidResponseError
    assert "not a JSON object" in error.message


# --------------------------------------------------------------------------- hand-written streams


@pytest.mark.parametrize("sep", ["\n", "\r\n"], ids=["lf", "crlf"])
async def test_comments_blank_lines_and_other_fields_are_tolerated(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, sep: str
) -> None:
    """Keep-alive comments, `event:`/`id:`/`retry:` fields and extra blank lines are not data."""
    body = sep.join(
        [
            ": OPENROUTER PROCESSING",
            "",
            "retry: 1000",
            "event: message",
            "id: 1",
            "data: " + json.dumps(chunk({"role": "assistant", "content": ""})),
            "",
            "",
            ": keep-alive",
            "",
            "event: message",
            "data:" + json.dumps(chunk({"content": "Hello"})),
            "",
            "data: " + json.dumps(chunk({"content": ", world"})),
            "",
            "data: " + json.dumps(chunk({}, "stop")),
            "",
            "data: [DONE]",
            "",
            "",
        ]
    )

    response, pieces = await streamed(llm, http, model_name, ScriptedReply(raw_body=body))

    assert response.content == "Hello, world"
    assert response.finish_reason == "stop"
    assert pieces.texts("content") == ["Hello", ", world"]


async def test_finish_reason_without_done_is_accepted(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Some servers close the body after the finish chunk without `[DONE]`: the answer is whole."""
    body = sse(
        chunk({"content": "complete"}),
        chunk({}, "stop"),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}},
    )

    response, _ = await streamed(llm, http, model_name, ScriptedReply(raw_body=body))

    assert (response.content, response.finish_reason, response.model) == ("complete", "stop", "raw")
    assert response.usage is not None and (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 1)


async def test_done_without_finish_reason_is_accepted(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """`[DONE]` marks the end of a whole answer even when no chunk named a finish reason."""
    response, _ = await streamed(
        llm, http, model_name, ScriptedReply(raw_body=sse(chunk({"content": "done anyway"}), "[DONE]"))
    )

    assert response.content == "done anyway"
    assert response.finish_reason is None


async def test_events_after_done_are_ignored(llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str) -> None:
    body = sse(chunk({"content": "kept"}, "stop"), "[DONE]", chunk({"content": " ignored"}), "{not json")

    response, pieces = await streamed(llm, http, model_name, ScriptedReply(raw_body=body))

    assert response.content == "kept"
    assert pieces.text("content") == "kept"


async def test_tool_call_arguments_as_an_object(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Ollama-style servers send a call's arguments whole as an object: kept as its JSON string."""
    arguments = {"city": "Lima", "days": 2, "note": "ñandú 🐦"}
    body = sse(
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_obj",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 1, "id": "call_none", "type": "function", "function": {"name": "ping"}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )

    response, pieces = await streamed(llm, http, model_name, ScriptedReply(raw_body=body))

    first, second = response.tool_calls
    assert (first.id, first.name) == ("call_obj", "get_weather")
    assert isinstance(first.arguments, str) and json.loads(first.arguments) == arguments
    assert (second.id, second.name, second.arguments) == ("call_none", "ping", "{}")
    assert pieces.text("tool_call", 0) == first.arguments
    assert response.finish_reason == "tool_calls"


async def test_interleaved_tool_call_fragments_are_joined_by_index(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Fragments of parallel calls may interleave; each belongs to its call by `index`."""
    body = sse(
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "second", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "first", "arguments": '{"n"'}}]}),
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "function": {"arguments": '{"m": '}},
                    {"index": 0, "function": {"arguments": ": 1}"}},
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}, "tool_calls"),
        "[DONE]",
    )

    response, pieces = await streamed(llm, http, model_name, ScriptedReply(raw_body=body))

    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_a", "first", '{"n": 1}'),
        ("call_b", "second", '{"m": 2}'),
    ]
    assert [(p.index, p.text) for p in pieces] == [(1, ""), (0, '{"n"'), (1, '{"m": '), (0, ": 1}"), (1, "2}")]
    assert all(p.name == ("first" if p.index == 0 else "second") for p in pieces)


async def test_tool_call_without_a_name_is_invalid_response(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    body = sse(
        chunk({"tool_calls": [{"index": 0, "id": "call_x", "function": {"arguments": '{"a": 1}'}}]}, "tool_calls"),
        "[DONE]",
    )

    error, _ = await stream_failure(llm, http, model_name, ScriptedReply(raw_body=body))

    assert type(error) is LLMInvalidResponseError
    assert not error.retryable
    assert "without a name" in error.message


async def test_reasoning_field_and_other_choices(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """`reasoning` (not only `reasoning_content`) is reasoning; choices other than the first are ignored."""
    body = sse(
        chunk({"reasoning": "think "}),
        {"choices": [{"index": 1, "delta": {"content": "other choice"}, "finish_reason": None}]},
        chunk({"reasoning_content": "more"}),
        chunk({"content": "answer"}, "stop"),
        "[DONE]",
    )

    response, pieces = await streamed(llm, http, model_name, ScriptedReply(raw_body=body))

    assert (response.reasoning, response.content) == ("think more", "answer")
    assert [(p.kind, p.text) for p in pieces] == [("reasoning", "think "), ("reasoning", "more"), ("content", "answer")]


async def test_usage_details_in_the_stream(llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str) -> None:
    body = sse(
        chunk({"content": "ok"}, "stop", usage=None),
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 1200,
                "completion_tokens": 80,
                "prompt_tokens_details": {"cached_tokens": 1024},
                "completion_tokens_details": {"reasoning_tokens": 64},
            },
        },
        "[DONE]",
    )

    response, _ = await streamed(llm, http, model_name, ScriptedReply(raw_body=body))

    assert response.usage is not None
    assert (
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
        response.usage.cached_input_tokens,
        response.usage.reasoning_tokens,
    ) == (1200, 80, 1024, 64)
