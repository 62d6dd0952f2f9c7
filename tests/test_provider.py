"""The OpenAI-compatible provider and its error mapping, over real HTTP.

The provider is driven with a real `httpx.AsyncClient` against the scripted server (or, where
the request's headers matter, against a tiny `http.server` started here), so status codes,
headers, bodies and transport failures all travel a real socket. The typed errors it raises
are what decide retrying (`activities/errors.py`) and the run's stop reason
(`workflows/decisions.py`), so each mapping is checked through to those as well; the last
tests run the real loop against a real Temporal dev server.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from activities.errors import llm_failure
from perdure.providers.base import (
    ChatRequest,
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
)
from perdure.providers.openai import ERROR_TEXT_LIMIT, OpenAICompatibleProvider
from perdure.schemas.letta import StopReasonType
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store import runs
from perdure.store.db import Database
from starter.client import PerdureClient
from tests.conftest import AgentFactory
from workflows.decisions import stop_reason_for_llm_error

# --------------------------------------------------------------------------- helpers

USER_MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A real httpx client per test, as the worker holds one for all its LLM calls."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        yield client


def provider_for(base_url: str, http: httpx.AsyncClient, api_key: str | None = None) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(base_url, api_key, client=http)


def chat_request(model: str, **fields: Any) -> ChatRequest:
    """A minimal request for `model`; fields override or add to it."""
    return ChatRequest.model_validate({"model": model, "messages": USER_MESSAGES, **fields})


async def answer(llm: ScriptedLLMServer, http: httpx.AsyncClient, model: str, reply: ScriptedReply) -> ChatResponse:
    """Script one reply and return what the provider made of it."""
    llm.script(model, [reply])
    return await provider_for(llm.base_url, http).complete(chat_request(model))


async def failure(llm: ScriptedLLMServer, http: httpx.AsyncClient, model: str, reply: ScriptedReply) -> LLMError:
    """Script one reply that must make the provider raise, and return the typed error."""
    llm.script(model, [reply])
    with pytest.raises(LLMError) as raised:
        await provider_for(llm.base_url, http).complete(chat_request(model))
    assert len(llm.requests(model)) == 1, "the provider itself must never retry"
    return raised.value


def error_reply(status: int, message: str, *, headers: dict[str, str] | None = None, **error: Any) -> ScriptedReply:
    """An OpenAI-shaped error response: `{"error": {"message": ..., **error}}`."""
    return ScriptedReply(status=status, error={"error": {"message": message, **error}}, headers=headers or {})


def completion_body(message: dict[str, Any], **top: Any) -> str:
    """A chat-completion body written by hand, for shapes `ScriptedReply` cannot produce."""
    return json.dumps(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            **top,
        }
    )


def http_date(offset_s: float, *, zone: str = "GMT") -> str:
    """An HTTP-date `offset_s` from now; `zone="-0000"` is the RFC 2822 form without a zone."""
    when = datetime.now(timezone.utc) + timedelta(seconds=offset_s)
    text = format_datetime(when, usegmt=True)
    return text if zone == "GMT" else text.removesuffix("GMT") + zone


# --------------------------------------------------------------------------- status mapping


@pytest.mark.parametrize(
    ("status", "error_class", "retryable", "stop_reason"),
    [
        (400, LLMBadRequestError, False, StopReasonType.llm_api_error),
        (401, LLMAuthenticationError, False, StopReasonType.llm_api_error),
        (403, LLMAuthenticationError, False, StopReasonType.llm_api_error),
        (404, LLMNotFoundError, False, StopReasonType.llm_api_error),
        (413, ContextWindowExceededError, False, StopReasonType.error),
        (422, LLMBadRequestError, False, StopReasonType.llm_api_error),
        (429, LLMRateLimitError, True, StopReasonType.llm_api_error),
        (408, LLMServerError, True, StopReasonType.llm_api_error),
        (500, LLMServerError, True, StopReasonType.llm_api_error),
        (503, LLMServerError, True, StopReasonType.llm_api_error),
    ],
)
async def test_status_maps_to_typed_error(
    llm: ScriptedLLMServer,
    http: httpx.AsyncClient,
    model_name: str,
    status: int,
    error_class: type[LLMError],
    retryable: bool,
    stop_reason: StopReasonType,
) -> None:
    """The error class decides whether Temporal retries and which stop reason the run gets."""
    error = await failure(llm, http, model_name, error_reply(status, f"provider says {status} happened"))

    assert type(error) is error_class
    assert error.retryable is retryable
    assert error.status_code == status
    assert f"provider says {status} happened" in error.message, "the provider's own text must reach the user"
    assert str(status) in error.message
    assert stop_reason_for_llm_error(error.error_type) is stop_reason
    temporal_error = llm_failure(error)
    assert temporal_error.type == error.error_type == error_class.__name__
    assert temporal_error.non_retryable is not retryable


@pytest.mark.parametrize(
    "error_body",
    [
        pytest.param(
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens. Please reduce the length of the messages.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
            id="openai-text-and-code",
        ),
        pytest.param(
            {"error": {"message": "Input is too large for this deployment.", "code": "context_length_exceeded"}},
            id="code-only",
        ),
        pytest.param(
            {
                "object": "error",
                "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
                "type": "BadRequestError",
                "code": 400,
            },
            id="vllm-top-level-message",
        ),
        pytest.param(
            {
                "error": {
                    "code": 400,
                    "message": "request (4476 tokens) exceeds the available context size (4096 tokens)",
                    "type": "exceed_context_size_error",
                }
            },
            id="llama-cpp",
        ),
        pytest.param(
            {"error": {"message": "prompt is too long: 210000 tokens > 200000 maximum"}}, id="prompt-too-long"
        ),
    ],
)
async def test_400_saying_context_exceeded_is_context_window_error(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, error_body: dict[str, Any]
) -> None:
    """An overflow needs compaction, not the generic bad-request path: it is recognised by its text."""
    error = await failure(llm, http, model_name, ScriptedReply(status=400, error=error_body))

    assert isinstance(error, ContextWindowExceededError)
    assert not error.retryable
    assert error.status_code == 400


async def test_plain_400_is_not_mistaken_for_context_overflow(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """The overflow pattern must not swallow ordinary bad requests (e.g. a too-large max_tokens)."""
    error = await failure(
        llm,
        http,
        model_name,
        error_reply(
            400,
            "max_tokens is too large: 100000. This model supports at most 4096 completion tokens",
            code="invalid_value",
        ),
    )
    assert type(error) is LLMBadRequestError
    assert "(invalid_value)" in error.message, "the error code is part of the text"


async def test_non_json_error_body_is_kept_as_text_and_clipped(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """A proxy's HTML error page still tells the user something, but never floods the run's error."""
    page = "<html><body>502 Bad Gateway</body></html>" + "x" * 2000
    error = await failure(llm, http, model_name, ScriptedReply(status=502, raw_body=page))

    assert isinstance(error, LLMServerError) and error.retryable
    assert "502 Bad Gateway" in error.message
    assert error.message.endswith("…")
    assert len(error.message) < ERROR_TEXT_LIMIT + 200


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "7"}, 7.0, id="seconds"),
        pytest.param({"Retry-After": "2.5"}, 2.5, id="fractional-seconds"),
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="milliseconds"),
        pytest.param({"retry-after-ms": "250", "Retry-After": "9"}, 0.25, id="milliseconds-win"),
        pytest.param({"retry-after-ms": "soon", "Retry-After": "9"}, 9.0, id="bad-milliseconds-fall-back"),
        pytest.param({"Retry-After": "-3"}, 0.0, id="negative-is-zero"),
        pytest.param({"Retry-After": http_date(-3600)}, 0.0, id="past-date-is-zero"),
        pytest.param({"Retry-After": "whenever"}, None, id="garbage"),
        pytest.param({}, None, id="absent"),
    ],
)
async def test_rate_limit_retry_after(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, headers: dict[str, str], expected: float | None
) -> None:
    """The server's own wait beats Temporal's backoff, so it must be read exactly."""
    error = await failure(llm, http, model_name, error_reply(429, "Rate limit reached for requests", headers=headers))

    assert isinstance(error, LLMRateLimitError) and error.retryable
    assert error.retry_after == expected
    assert "Rate limit reached for requests" in error.message


@pytest.mark.parametrize("zone", ["GMT", "-0000"])
async def test_rate_limit_retry_after_http_date(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, zone: str
) -> None:
    """`Retry-After` may be an HTTP-date; `-0000` (no zone) parses to a naive datetime and must not crash."""
    error = await failure(
        llm, http, model_name, error_reply(429, "slow down", headers={"Retry-After": http_date(120, zone=zone)})
    )

    assert isinstance(error, LLMRateLimitError)
    assert error.retry_after is not None and 110 < error.retry_after <= 120


@pytest.mark.parametrize("value", ["inf", "1e400", "nan"])
async def test_non_finite_retry_after_is_ignored(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, value: str
) -> None:
    """`float()` accepts "inf"/"nan"; an infinite delay would crash turning the error into a Temporal failure."""
    error = await failure(llm, http, model_name, error_reply(429, "slow down", headers={"Retry-After": value}))

    assert error.retry_after is None
    assert llm_failure(error).next_retry_delay is None


async def test_retry_after_becomes_temporal_next_retry_delay(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """The activity hands the header to Temporal as `next_retry_delay` on a retryable failure."""
    error = await failure(llm, http, model_name, error_reply(429, "slow down", headers={"Retry-After": "7"}))
    temporal_error = llm_failure(error)

    assert temporal_error.non_retryable is False
    assert temporal_error.next_retry_delay == timedelta(seconds=7)
    assert temporal_error.type == "LLMRateLimitError"
    assert "slow down" in temporal_error.message


async def test_server_error_keeps_retry_after(llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str) -> None:
    """A 503 with Retry-After (maintenance) should wait as told, like a 429."""
    error = await failure(llm, http, model_name, error_reply(503, "maintenance", headers={"Retry-After": "30"}))

    assert isinstance(error, LLMServerError)
    assert error.retry_after == 30.0
    assert llm_failure(error).next_retry_delay == timedelta(seconds=30)


# --------------------------------------------------------------------------- malformed 2xx


@pytest.mark.parametrize(
    "raw_body",
    [
        pytest.param(json.dumps({"id": "chatcmpl-x", "object": "chat.completion"}), id="no-choices"),
        pytest.param(json.dumps({"choices": []}), id="empty-choices"),
        pytest.param(json.dumps({"choices": [{"finish_reason": "stop"}]}), id="choice-without-message"),
        pytest.param(json.dumps({"choices": [{"message": None}]}), id="null-message"),
        pytest.param(json.dumps({"choices": ["hello"]}), id="choice-is-a-string"),
        pytest.param(json.dumps({"choices": [{"message": "hello"}]}), id="message-is-a-string"),
        pytest.param(json.dumps(["not", "an", "object"]), id="top-level-list"),
        pytest.param(completion_body({"role": "assistant", "content": None}), id="neither-content-nor-tool-calls"),
        pytest.param(completion_body({"role": "assistant", "content": ""}), id="empty-content"),
        pytest.param(completion_body({"role": "assistant", "content": 42}), id="content-is-a-number"),
        pytest.param(completion_body({"role": "assistant", "tool_calls": ["get_weather"]}), id="tool-call-is-a-string"),
        pytest.param(
            completion_body({"role": "assistant", "tool_calls": [{"id": "c1", "function": {"arguments": "{}"}}]}),
            id="tool-call-without-name",
        ),
        pytest.param(
            completion_body({"role": "assistant", "content": "hi"}, usage={"prompt_tokens": "many"}), id="bad-usage"
        ),
    ],
)
async def test_malformed_success_body_is_invalid_response(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, raw_body: str
) -> None:
    """Any unusable 2xx must be the typed, non-retryable error: anything else is retried and misreported."""
    error = await failure(llm, http, model_name, ScriptedReply(raw_body=raw_body))

    assert type(error) is LLMInvalidResponseError
    assert not error.retryable
    assert stop_reason_for_llm_error(error.error_type) is StopReasonType.invalid_llm_response
    assert llm_failure(error).non_retryable is True


CUT_OFF = completion_body({"role": "assistant", "content": "a long answer"})[:25]


@pytest.mark.parametrize(
    "raw_body",
    [pytest.param("{not json", id="not-json"), pytest.param("", id="empty"), pytest.param(CUT_OFF, id="cut-off")],
)
async def test_a_body_that_is_not_json_is_a_transport_fault_retried_like_a_5xx(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, raw_body: str
) -> None:
    """A 200 whose body cannot be read at all was damaged on the way: asking again can help."""
    error = await failure(llm, http, model_name, ScriptedReply(raw_body=raw_body))

    assert type(error) is LLMConnectionError
    assert error.retryable
    assert llm_failure(error).non_retryable is False


async def test_invalid_response_message_shows_the_body(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Whoever reads the failed run needs to see what the model actually sent."""
    error = await failure(llm, http, model_name, ScriptedReply(raw_body='{"surprise": "not a completion"}'))
    assert '"surprise": "not a completion"' in error.message


# --------------------------------------------------------------------------- parsing


async def test_parses_content_reasoning_finish_reason_and_model(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """`reasoning_content` (DeepSeek, vLLM) becomes the reasoning message; the rest passes through."""
    response = await answer(
        llm, http, model_name, ScriptedReply(content="Hi there.", reasoning="Greet back.", finish_reason="length")
    )

    assert response.content == "Hi there."
    assert response.reasoning == "Greet back."
    assert response.tool_calls == []
    assert response.finish_reason == "length"
    assert response.model == model_name


async def test_parses_reasoning_field_and_content_parts(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Some servers name it `reasoning` and send content as a list of text parts."""
    body = completion_body(
        {
            "role": "assistant",
            "reasoning": "thinking",
            "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world."}],
        }
    )
    response = await answer(llm, http, model_name, ScriptedReply(raw_body=body))

    assert response.content == "Hello, world."
    assert response.reasoning == "thinking"


async def test_parses_tool_calls(llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str) -> None:
    """Arguments stay the JSON string the model sent; a missing id is made where the answer is read."""
    reply = ScriptedReply(
        tool_calls=[
            ScriptedToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_1"),
            ScriptedToolCall(name="get_weather", arguments='{"city": "Oslo"}', id=""),
        ]
    )
    response = await answer(llm, http, model_name, reply)

    assert response.content is None
    assert response.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("get_weather", json.dumps({"city": "Paris"})),
        ("get_weather", '{"city": "Oslo"}'),
    ]
    assert response.tool_calls[0].id == "call_1"
    assert response.tool_calls[1].id.startswith("call_") and len(response.tool_calls[1].id) == 29


async def test_tool_call_arguments_as_object_or_missing(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Ollama-style servers send arguments as a JSON object; absent arguments mean an empty object."""
    body = completion_body(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Lima", "days": 2}}},
                {"id": "call_2", "type": "function", "function": {"name": "ping"}},
            ],
        }
    )
    response = await answer(llm, http, model_name, ScriptedReply(raw_body=body))

    first, second = response.tool_calls
    assert first.id.startswith("call_") and first.name == "get_weather"
    assert isinstance(first.arguments, str) and json.loads(first.arguments) == {"city": "Lima", "days": 2}
    assert (second.id, second.name, second.arguments) == ("call_2", "ping", "{}")


async def test_parses_usage_with_cached_and_reasoning_tokens(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Cached prompt tokens and reasoning tokens are reported separately, as Letta does."""
    body = completion_body(
        {"role": "assistant", "content": "ok"},
        usage={
            "prompt_tokens": 1200,
            "completion_tokens": 80,
            "total_tokens": 1280,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 64},
        },
    )
    response = await answer(llm, http, model_name, ScriptedReply(raw_body=body))

    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (1200, 80)
    assert response.usage.cached_input_tokens == 1024
    assert response.usage.reasoning_tokens == 64


async def test_usage_without_details_and_without_usage(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Plain usage has no cached count (None, not 0); a server that reports no usage gives None."""
    reported = await answer(llm, http, model_name, ScriptedReply(content="counted"))
    assert reported.usage is not None
    assert reported.usage.prompt_tokens > 0 and reported.usage.completion_tokens > 0
    assert reported.usage.cached_input_tokens is None and reported.usage.reasoning_tokens is None

    unreported = await answer(llm, http, model_name, ScriptedReply(content="uncounted", report_usage=False))
    assert unreported.content == "uncounted"
    assert unreported.usage is None


# --------------------------------------------------------------------------- transport


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A base URL on 127.0.0.1 whose port is bound but not listening, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


async def test_connection_refused_is_retryable_connection_error(refused_url: str, http: httpx.AsyncClient) -> None:
    """A model server that is down (restarting) must be retried, not end the run."""
    with pytest.raises(LLMConnectionError) as raised:
        await provider_for(refused_url, http).complete(chat_request("any"))

    assert raised.value.retryable
    assert refused_url in raised.value.message
    assert stop_reason_for_llm_error(raised.value.error_type) is StopReasonType.llm_api_error
    assert llm_failure(raised.value).non_retryable is False


async def test_slow_reply_times_out(llm: ScriptedLLMServer, model_name: str) -> None:
    """A reply slower than the client's timeout is a retryable timeout, not a connection error."""
    llm.script(model_name, [ScriptedReply(content="too late", delay_s=1.0)])
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.2)) as impatient:
        with pytest.raises(LLMTimeoutError) as raised:
            await provider_for(llm.base_url, impatient).complete(chat_request(model_name))

    assert raised.value.retryable
    assert "timed out" in raised.value.message
    assert stop_reason_for_llm_error(raised.value.error_type) is StopReasonType.llm_api_error


# --------------------------------------------------------------------------- the request sent


async def test_request_body_sent(llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str) -> None:
    """The wire body is exactly the request: model, messages, tools and the tool settings."""
    messages = [{"role": "system", "content": "Be brief."}, *USER_MESSAGES]
    request = chat_request(
        model_name,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=256,
        temperature=0.3,
    )
    llm.script(model_name, [ScriptedReply(content="ok")])

    await provider_for(llm.base_url + "/", http).complete(request)

    (sent,) = llm.requests(model_name)
    assert sent == {
        "model": model_name,
        "messages": messages,
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 256,
        "temperature": 0.3,
    }


async def test_request_body_omits_unset_fields(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Servers reject `tools: null` or `tool_choice` without tools, so unset fields are left out."""
    llm.script(model_name, [ScriptedReply(content="ok")])
    await provider_for(llm.base_url, http).complete(chat_request(model_name))

    (sent,) = llm.requests(model_name)
    assert sent == {"model": model_name, "messages": USER_MESSAGES}


@dataclass
class RecordingServer:
    """A real HTTP server that records each request's path and headers and answers one completion."""

    base_url: str
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    """The scripted server keeps only bodies; headers need this small stand-in."""
    body = completion_body({"role": "assistant", "content": "recorded"}).encode()
    recorder = RecordingServer(base_url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            recorder.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("api_key", "authorization"), [("sk-test-123", "Bearer sk-test-123"), (None, None), ("", None)]
)
async def test_authorization_header_only_with_api_key(
    recording_server: RecordingServer, http: httpx.AsyncClient, api_key: str | None, authorization: str | None
) -> None:
    """The key goes out as a bearer token; without one (scripted, local servers) no header is sent at all."""
    response = await provider_for(recording_server.base_url, http, api_key).complete(chat_request("gpt-test"))

    assert response.content == "recorded"
    ((path, headers),) = recording_server.seen
    assert path == "/v1/chat/completions"
    assert headers.get("authorization") == authorization
    assert headers["content-type"] == "application/json"


# --------------------------------------------------------------------------- end to end


async def test_rate_limit_then_success_is_retried_end_to_end(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """A 429 is retried by Temporal (the provider never retries) and the run still ends normally."""
    agent = make_agent()
    llm.script(
        model_name,
        [error_reply(429, "Rate limit reached", headers={"Retry-After": "0"}), ScriptedReply(content="after the wait")],
    )

    response = await client.send_message(agent.id, "hello")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert [m.content for m in response.messages if m.message_type == "assistant_message"] == ["after the wait"]
    assert len(llm.requests(model_name)) == 2


async def test_authentication_error_ends_run_without_retry(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A bad key will not get better by retrying: one request, then llm_api_error with the provider's text."""
    agent = make_agent()
    llm.script(model_name, [error_reply(401, "Incorrect API key provided", code="invalid_api_key")])

    response = await client.send_message(agent.id, "hello")

    assert response.stop_reason.stop_reason is StopReasonType.llm_api_error
    assert len(llm.requests(model_name)) == 1
    with db.transaction() as session:
        run = runs.get_run(session, response.run_id)
        (step,) = runs.list_steps(session, response.run_id)
    assert step.error_type == "LLMAuthenticationError"
    assert "Incorrect API key provided" in (run.error or "")


async def test_context_overflow_that_compaction_cannot_cure_ends_with_error(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """An overflow is not retried as is: the loop compacts first; a fresh agent has nothing to
    evict, so asking again cannot help and the run ends `error` after the one request."""
    agent = make_agent()
    overflow = error_reply(400, "This model's maximum context length is 8192 tokens.", code="context_length_exceeded")
    llm.script(model_name, [overflow])

    response = await client.send_message(agent.id, "hello")

    assert response.stop_reason.stop_reason is StopReasonType.error
    assert len(llm.requests(model_name)) == 1, "nothing to compact, so no second request"
    with db.transaction() as session:
        (step,) = runs.list_steps(session, response.run_id)
        run = runs.get_run(session, response.run_id)
    assert step.error_type == "ContextWindowExceededError"
    assert "maximum context length" in (run.error or "")


@pytest.mark.parametrize(
    "raw_body",
    [
        pytest.param(json.dumps(["a", "list"]), id="top-level-list"),
        pytest.param(json.dumps({"choices": [{"message": None}]}), id="null-message"),
    ],
)
async def test_unusable_body_ends_run_with_invalid_llm_response(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
    raw_body: str,
) -> None:
    """An unusable 2xx is not retried and is reported as invalid_llm_response, whatever its shape."""
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(raw_body=raw_body)])

    response = await client.send_message(agent.id, "hello")

    assert response.stop_reason.stop_reason is StopReasonType.invalid_llm_response
    assert len(llm.requests(model_name)) == 1
    with db.transaction() as session:
        (step,) = runs.list_steps(session, response.run_id)
    assert step.error_type == "LLMInvalidResponseError"


async def test_an_answer_cut_off_on_the_way_is_asked_again(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(raw_body=CUT_OFF), ScriptedReply(content="whole")])

    response = await client.send_message(agent.id, "hello")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert len(llm.requests(model_name)) == 2


async def test_provider_failures_are_bounded_by_their_own_count(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Five retryable provider failures end the run; the sixth reply is never asked for."""
    agent = make_agent()
    now = {"retry-after-ms": "0"}
    llm.script(
        model_name, [*[error_reply(503, "overloaded", headers=now) for _ in range(5)], ScriptedReply(content="late")]
    )

    response = await client.send_message(agent.id, "hello")

    assert response.stop_reason.stop_reason is StopReasonType.llm_api_error
    assert len(llm.requests(model_name)) == 5
    with db.transaction() as session:
        run = runs.get_run(session, response.run_id)
    assert "the provider failed 5 times for this request" in (run.error or "")


async def test_loop_sends_tools_and_tool_settings(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """The real activity builds the body: model name without the provider prefix, tools, auto choice."""
    agent = make_agent(tools=["core_memory_append"], llm_config={"max_tokens": 123})
    llm.script(model_name, [ScriptedReply(content="ok")])

    await client.send_message(agent.id, "hello")

    (sent,) = llm.requests(model_name)
    assert sent["model"] == model_name
    first, last = sent["messages"][0], sent["messages"][-1]
    assert first["role"] == "system"
    assert last["role"] == "user" and "hello" in last["content"]
    assert "core_memory_append" in [t["function"]["name"] for t in sent["tools"]]
    assert sent["tool_choice"] == "auto"
    assert sent["parallel_tool_calls"] is False
    assert sent["max_tokens"] == 123
    assert "temperature" not in sent


def test_retry_after_delay_is_capped_and_zero_means_now() -> None:
    """A huge Retry-After must neither overflow nor park the run; 0 retries at once."""
    from datetime import timedelta

    from activities.errors import MAX_RETRY_AFTER, llm_failure
    from perdure.providers.base import LLMRateLimitError

    assert llm_failure(LLMRateLimitError("slow down", retry_after=1e14)).next_retry_delay == MAX_RETRY_AFTER
    assert llm_failure(LLMRateLimitError("slow down", retry_after=86_400)).next_retry_delay == MAX_RETRY_AFTER
    assert llm_failure(LLMRateLimitError("slow down", retry_after=0)).next_retry_delay == timedelta(0)
    assert llm_failure(LLMRateLimitError("slow down")).next_retry_delay is None
