"""The Anthropic provider over real HTTP: the request it sends, the answers it reads, streamed
or not, and the typed errors that decide retrying.

The scripted server answers `/v1/messages` as Anthropic's Messages API does, from the same
scripts as its chat-completions route.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from activities.errors import llm_failure
from perdure.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider, messages_url, request_body
from perdure.providers.anthropic_format import CONTINUATION, to_anthropic_messages
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
    StreamPiece,
)
from perdure.schemas.letta import StopReasonType
from perdure.schemas.messages import (
    HiddenReasoningContent,
    Message,
    ReasoningContent,
    TextContent,
    ToolCall,
    ToolReturn,
)
from perdure.providers.schema_tools import response_format_for
from perdure.scripted.anthropic_replies import SIGNATURE, anthropic_error
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from tests.test_provider import WEATHER_TOOL, http, refused_url
from workflows.decisions import stop_reason_for_llm_error

__all__ = ["http", "refused_url"]  # the provider tests' fixtures: one real httpx client per test, a refused port

USER_MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
TOO_LONG = anthropic_error(400, "prompt is too long: 210000 tokens > 200000 maximum")


def provider_for(base_url: str, http: httpx.AsyncClient, api_key: str | None = None) -> AnthropicProvider:
    return AnthropicProvider(base_url, api_key, client=http)


def chat_request(model: str, **fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"model": model, "messages": USER_MESSAGES, **fields})


async def answer(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model: str, reply: ScriptedReply, *, stream: bool = False
) -> ChatResponse:
    llm.script(model, [reply])
    provider = provider_for(llm.base_url, http)
    if stream:
        return await provider.stream(chat_request(model), lambda piece: None)
    return await provider.complete(chat_request(model))


async def failure(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model: str, reply: ScriptedReply, *, stream: bool = False
) -> LLMError:
    llm.script(model, [reply])
    provider = provider_for(llm.base_url, http)
    with pytest.raises(LLMError) as raised:
        if stream:
            await provider.stream(chat_request(model), lambda piece: None)
        else:
            await provider.complete(chat_request(model))
    assert len(llm.requests(model)) == 1, "the provider itself must never retry"
    return raised.value


def stored(role: str, **fields: Any) -> Message:
    return Message(id=f"m-{role}-{len(fields)}", agent_id="agent-x", role=role, **fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the request sent


async def test_request_shape_system_tools_choice_and_headers(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """System prompt as the cached `system` parameter, tools as input schemas, a forced tool by
    name with parallel use off, `max_tokens` always, and the version and key headers."""
    messages = [{"role": "system", "content": "Be brief. <memory>Ada</memory>"}, *USER_MESSAGES]
    request = chat_request(
        model_name,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        temperature=0.3,
    )
    llm.script(model_name, [ScriptedReply(content="ok")])

    await provider_for(llm.base_url, http, "sk-ant-test").complete(request)

    (sent,) = llm.requests(model_name)
    assert sent == {
        "model": model_name,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": [{"type": "text", "text": "Be brief. <memory>Ada</memory>", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}]}
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather for a city.",
                "input_schema": WEATHER_TOOL["function"]["parameters"],
            }
        ],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "temperature": 0.3,
    }
    (headers,) = llm.request_headers(model_name)
    assert headers["x-api-key"] == "sk-ant-test" and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers


async def test_no_key_no_key_header(llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str) -> None:
    await answer(llm, http, model_name, ScriptedReply(content="ok"))
    (headers,) = llm.request_headers(model_name)
    assert "x-api-key" not in headers


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", True, {"type": "auto"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", None, {"type": "any"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, None, {"type": "auto"}),
    ],
)
def test_tool_choice_translation(choice: str | None, parallel: bool | None, expected: dict[str, Any]) -> None:
    body = request_body(chat_request("m", tools=[WEATHER_TOOL], tool_choice=choice, parallel_tool_calls=parallel))
    assert body["tool_choice"] == expected


def test_no_tools_no_tool_fields_and_max_tokens_from_the_request() -> None:
    body = request_body(chat_request("m", tool_choice="auto", max_tokens=300))
    assert "tools" not in body and "tool_choice" not in body and "system" not in body
    assert body["max_tokens"] == 300


def test_thinking_budget_drops_temperature_and_raises_max_tokens_but_not_for_a_forced_tool() -> None:
    """The API refuses thinking with a forced tool or a temperature, and wants max_tokens above the budget."""
    thinking = request_body(
        chat_request(
            "m", tools=[WEATHER_TOOL], tool_choice="auto", reasoning_budget=2048, temperature=0.5, max_tokens=1000
        )
    )
    assert thinking["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "temperature" not in thinking and thinking["max_tokens"] > 2048
    forced = request_body(chat_request("m", tools=[WEATHER_TOOL], tool_choice="required", reasoning_budget=2048))
    assert "thinking" not in forced


def test_a_response_format_becomes_one_forced_tool_whose_input_schema_is_one_object() -> None:
    """Anthropic's structured output: the answer is a forced tool's input, and the API refuses an
    input schema with alternatives at its top, so the branches merge into one object."""
    response_format = response_format_for([WEATHER_TOOL], "auto")
    body = request_body(chat_request("m", response_format=response_format, reasoning_budget=2048))

    [tool] = body["tools"]
    assert tool["name"] == "answer" and body["tool_choice"] == {
        "type": "tool",
        "name": "answer",
        "disable_parallel_tool_use": True,
    }
    [call, response] = response_format["json_schema"]["schema"]["anyOf"]  # type: ignore[index]
    assert tool["input_schema"] == {
        "type": "object",
        "properties": {"tool_call": call["properties"]["tool_call"], "response": {"type": "string"}},
        "required": [],
        "additionalProperties": False,
    }
    assert "thinking" not in body and "response_format" not in body
    named = response_format_for([WEATHER_TOOL], {"type": "function", "function": {"name": "get_weather"}})
    single = request_body(chat_request("m", response_format=named))["tools"][0]["input_schema"]
    assert single == named["json_schema"]["schema"], "one object already: sent as it is"  # type: ignore[index]


@pytest.mark.parametrize(
    "fields",
    [
        {"response_format": response_format_for([WEATHER_TOOL], "auto"), "tools": [WEATHER_TOOL]},
        {"response_format": {"type": "json_object"}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {"anyOf": [{"type": "string"}]}},
            }
        },
    ],
    ids=["with-tools", "json-object", "not-objects"],
)
def test_a_response_format_the_messages_api_cannot_express_is_a_bad_request(fields: dict[str, Any]) -> None:
    with pytest.raises(LLMBadRequestError) as raised:
        request_body(chat_request("m", **fields))
    assert not raised.value.retryable


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages"),
        ("http://proxy:8080/anthropic/v1/", "http://proxy:8080/anthropic/v1/messages"),
    ],
)
def test_messages_url_from_the_sdk_or_letta_base(base: str, url: str) -> None:
    assert messages_url(base) == url


def test_history_becomes_alternating_turns_with_tool_use_and_results() -> None:
    """Calls are `tool_use` blocks, returns `tool_result` blocks of the next user turn (an error
    flagged, a long one clipped), held calls join their turn, signed thinking goes back and
    unsigned reasoning does not, and turns of one role merge."""
    history = [
        stored("system", content=[TextContent(text="SYSTEM")]),
        stored("summary", content=[TextContent(text="summary of earlier")]),
        stored("user", content=[TextContent(text="hi")]),
        stored(
            "assistant",
            content=[
                ReasoningContent(reasoning="think", signature="sig"),
                HiddenReasoningContent(data="secret"),
                TextContent(text="calling"),
            ],
            tool_calls=[ToolCall(id="t1", name="get_weather", arguments='{"city": "Oslo"}')],
        ),
        stored("approval", tool_calls=[ToolCall(id="t2", name="core_memory_append", arguments="not json")]),
        stored(
            "tool",
            tool_returns=[
                ToolReturn(tool_call_id="t1", status="success", func_response="x" * 9000),
                ToolReturn(tool_call_id="t2", status="error", func_response="denied"),
            ],
        ),
        stored("user", content=[TextContent(text="and now?")]),
        stored(
            "assistant",
            content=[ReasoningContent(reasoning="unsigned, from another provider"), TextContent(text="done")],
        ),
    ]

    wire = to_anthropic_messages(history, tool_return_chars=5000)
    body = request_body(ChatRequest(model="m", messages=wire))
    system, turns = body["system"], body["messages"]

    assert system == [{"type": "text", "text": "SYSTEM", "cache_control": {"type": "ephemeral"}}]
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[0]["content"] == [{"type": "text", "text": "summary of earlier"}, {"type": "text", "text": "hi"}]
    assert turns[1]["content"] == [
        {"type": "thinking", "thinking": "think", "signature": "sig"},
        {"type": "redacted_thinking", "data": "secret"},
        {"type": "text", "text": "calling"},
        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "t2", "name": "core_memory_append", "input": {"raw_arguments": "not json"}},
    ]
    first, second, follow_up = turns[2]["content"]
    assert (
        first["type"] == "tool_result"
        and first["tool_use_id"] == "t1"
        and len(first["content"]) < 6000
        and "is_error" not in first
    )
    assert second == {"type": "tool_result", "tool_use_id": "t2", "content": "denied", "is_error": True}
    assert follow_up == {"type": "text", "text": "and now?"}
    cached = {"cache_control": {"type": "ephemeral"}}
    assert turns[3]["content"] == [{"type": "text", "text": "done", **cached}], (
        "unsigned reasoning is not sent; the last block is cached"
    )


def test_a_conversation_opening_with_the_model_gets_a_user_turn_first() -> None:
    body = request_body(
        ChatRequest(model="m", messages=[{"role": "system", "content": "S"}, {"role": "assistant", "content": "hello"}])
    )
    assert body["messages"][0] == {"role": "user", "content": [{"type": "text", "text": CONTINUATION}]}
    assert body["messages"][1]["role"] == "assistant"


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_text_thinking_redacted_and_usage_with_cache(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, stream: bool
) -> None:
    reply = ScriptedReply(
        content="Hello, Ada.",
        reasoning="She said her name.",
        hidden_reasoning="ENCRYPTED",
        cache_read_tokens=100,
        cache_write_tokens=20,
    )

    response = await answer(llm, http, model_name, reply, stream=stream)

    assert response.content == "Hello, Ada."
    assert response.reasoning == "She said her name."
    assert response.reasoning_parts == [
        ReasoningContent(reasoning="She said her name.", signature=SIGNATURE),
        HiddenReasoningContent(data="ENCRYPTED"),
    ]
    assert response.finish_reason == "stop" and response.model == model_name
    assert response.usage is not None
    assert response.usage.cached_input_tokens == 100 and response.usage.cache_write_tokens == 20
    assert response.usage.prompt_tokens > 120, "prompt tokens count the cached ones too"
    assert response.usage.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tool_calls(llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, stream: bool) -> None:
    reply = ScriptedReply(
        content="Let me check.",
        tool_calls=[
            ScriptedToolCall(id="toolu_1", name="get_weather", arguments={"city": "Oslo"}),
            ScriptedToolCall(id="toolu_2", name="get_time"),
        ],
    )

    response = await answer(llm, http, model_name, reply, stream=stream)

    assert [(c.id, c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("toolu_1", "get_weather", {"city": "Oslo"}),
        ("toolu_2", "get_time", {}),
    ]
    assert response.finish_reason == "tool_calls"
    assert response.usage is not None and response.usage.cached_input_tokens is None


async def test_max_tokens_stop_reason_reads_as_length(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    response = await answer(llm, http, model_name, ScriptedReply(content="cut", finish_reason="max_tokens"))
    assert response.finish_reason == "length"


async def test_stream_pieces_arrive_in_order_with_call_ids(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    reply = ScriptedReply(
        reasoning="Think first.",
        content="Checking the weather now.",
        tool_calls=[ScriptedToolCall(id="toolu_9", name="get_weather", arguments={"city": "Oslo"})],
    )
    llm.script(model_name, [reply])
    pieces: list[StreamPiece] = []

    response = await provider_for(llm.base_url, http).stream(chat_request(model_name), pieces.append)

    assert llm.requests(model_name)[0]["stream"] is True
    assert [p.kind for p in pieces][0] == "reasoning"
    assert "".join(p.text for p in pieces if p.kind == "reasoning") == "Think first."
    assert "".join(p.text for p in pieces if p.kind == "content") == "Checking the weather now."
    calls = [p for p in pieces if p.kind == "tool_call"]
    assert len([p for p in pieces if p.kind == "content"]) > 1, "text arrives in pieces"
    assert {(p.tool_call_id, p.name, p.index) for p in calls} == {("toolu_9", "get_weather", 0)}
    assert (
        json.loads("".join(p.text for p in calls)) == {"city": "Oslo"} == json.loads(response.tool_calls[0].arguments)
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "error_class", "retryable"),
    [
        (400, LLMBadRequestError, False),
        (401, LLMAuthenticationError, False),
        (403, LLMAuthenticationError, False),
        (404, LLMNotFoundError, False),
        (413, ContextWindowExceededError, False),
        (429, LLMRateLimitError, True),
        (500, LLMServerError, True),
        (529, LLMServerError, True),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_status_maps_to_typed_error(
    llm: ScriptedLLMServer,
    http: httpx.AsyncClient,
    model_name: str,
    status: int,
    error_class: type[LLMError],
    retryable: bool,
    stream: bool,
) -> None:
    error = await failure(llm, http, model_name, ScriptedReply(status=status), stream=stream)

    assert type(error) is error_class and error.retryable is retryable
    assert error.status_code == status
    assert f"({anthropic_error(status, '')['error']['type']})" in error.message
    assert llm_failure(error).non_retryable is not retryable


async def test_overloaded_and_rate_limit_keep_retry_after(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    overloaded = await failure(llm, http, model_name, ScriptedReply(status=529, headers={"retry-after": "7"}))
    assert overloaded.retry_after == 7 and overloaded.retryable
    limited = await failure(llm, http, f"{model_name}-b", ScriptedReply(status=429, headers={"retry-after": "3"}))
    assert type(limited) is LLMRateLimitError and limited.retry_after == 3
    delay = llm_failure(limited).next_retry_delay
    assert delay is not None and delay.total_seconds() == 3


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_prompt_too_long_is_context_window_exceeded(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, stream: bool
) -> None:
    error = await failure(llm, http, model_name, ScriptedReply(status=400, error=TOO_LONG), stream=stream)
    assert type(error) is ContextWindowExceededError and not error.retryable
    assert "prompt is too long" in error.message


@pytest.mark.parametrize(
    ("error", "error_class", "retryable"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, LLMServerError, True),
        ({"type": "rate_limit_error", "message": "slow down"}, LLMRateLimitError, True),
        (TOO_LONG["error"], ContextWindowExceededError, False),
        ({"type": "api_error", "message": "boom"}, LLMServerError, True),
    ],
)
async def test_error_event_mid_stream(
    llm: ScriptedLLMServer,
    http: httpx.AsyncClient,
    model_name: str,
    error: dict[str, Any],
    error_class: type[LLMError],
    retryable: bool,
) -> None:
    reply = ScriptedReply(
        content="partial answer that breaks", error_after_chunks=2, error={"type": "error", "error": error}
    )
    raised = await failure(llm, http, model_name, reply, stream=True)
    assert type(raised) is error_class and raised.retryable is retryable
    assert error["message"] in raised.message


async def test_stream_cut_before_message_stop_is_a_retryable_connection_error(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    error = await failure(
        llm, http, model_name, ScriptedReply(content="a reply cut in the middle", drop_after_chunks=2), stream=True
    )
    assert type(error) is LLMConnectionError and error.retryable
    assert stop_reason_for_llm_error(error.error_type) is StopReasonType.llm_api_error


async def test_stream_ending_cleanly_without_message_stop_is_retried_too(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    start = {"type": "message_start", "message": {"model": model_name, "usage": {"input_tokens": 3}}}
    body = f"event: message_start\ndata: {json.dumps(start)}\n\n"
    error = await failure(llm, http, model_name, ScriptedReply(raw_body=body), stream=True)
    assert type(error) is LLMConnectionError and "message_stop" in error.message


async def test_a_2xx_body_that_is_not_json_is_a_retryable_transport_fault(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    error = await failure(llm, http, model_name, ScriptedReply(raw_body='{"type": "message", "content": [{"ty'))
    assert type(error) is LLMConnectionError and error.retryable
    assert llm_failure(error).non_retryable is False


@pytest.mark.parametrize(
    "raw_body",
    [
        pytest.param(json.dumps({"type": "message"}), id="no-content"),
        pytest.param(json.dumps({"content": [{"type": "text"}]}), id="text-block-without-text"),
        pytest.param(
            json.dumps({"content": [{"type": "tool_use", "id": "t", "name": "x", "input": "oops"}]}),
            id="input-not-an-object",
        ),
        pytest.param(json.dumps({"content": []}), id="empty-content"),
        pytest.param(json.dumps(["a", "list"]), id="top-level-list"),
    ],
)
async def test_a_json_body_of_the_wrong_shape_is_an_invalid_response(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str, raw_body: str
) -> None:
    error = await failure(llm, http, model_name, ScriptedReply(raw_body=raw_body))
    assert type(error) is LLMInvalidResponseError and not error.retryable
    assert stop_reason_for_llm_error(error.error_type) is StopReasonType.invalid_llm_response


async def test_connection_refused_is_retryable(refused_url: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(LLMConnectionError) as raised:
        await provider_for(refused_url, http).complete(chat_request("claude"))
    assert raised.value.retryable and "/v1/messages" in raised.value.message


async def test_the_scripted_server_refuses_a_request_without_the_version_header(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """As Anthropic does; the provider always sends it (the tests above pass through this check)."""
    response = await http.post(
        messages_url(llm.base_url), json={"model": model_name, "max_tokens": 5, "messages": USER_MESSAGES}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_a_block_that_opens_with_text_keeps_it(
    llm: ScriptedLLMServer, http: httpx.AsyncClient, model_name: str
) -> None:
    """Blocks usually open empty; text in `content_block_start` is the answer's first piece."""
    events = [
        {"type": "message_start", "message": {"model": model_name, "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop"},
    ]
    llm.script(
        model_name, [ScriptedReply(raw_body="".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events))]
    )
    pieces: list[StreamPiece] = []

    response = await provider_for(llm.base_url, http).stream(chat_request(model_name), pieces.append)

    assert [p.text for p in pieces] == ["Hel", "lo"] and response.content == "Hello"
    assert response.usage is not None and (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 2)


def test_thinking_waits_until_a_turn_that_called_tools_without_it_is_answered() -> None:
    """After a forced step (asked without thinking) the API wants the turn it answers to open
    with thinking, so the next request leaves thinking off too; a turn that thought is fine."""
    unthought = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
    ]
    request = chat_request("m", messages=unthought, tools=[WEATHER_TOOL], tool_choice="auto", reasoning_budget=2048)
    assert "thinking" not in request_body(request)
    thought = [
        unthought[0],
        {
            **unthought[1],
            "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, *unthought[1]["content"]],
        },
        unthought[2],
    ]
    assert "thinking" in request_body(request.model_copy(update={"messages": thought}))
    answered = [*unthought, {"role": "assistant", "content": "It is sunny."}, {"role": "user", "content": "thanks"}]
    assert "thinking" in request_body(request.model_copy(update={"messages": answered}))
