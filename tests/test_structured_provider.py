"""Tool calls by schema-constrained answers (`tool_calling: json_schema`), against the scripted
server over HTTP: what is sent, and how answers come back as ordinary tool calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from perdure.providers.anthropic import AnthropicProvider
from perdure.providers.base import ChatRequest, LLMInvalidResponseError
from perdure.providers.openai import OpenAICompatibleProvider
from perdure.providers.openai_stream import StreamPiece
from perdure.providers.structured import StructuredToolCalling
from perdure.schemas.letta import StopReasonType
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store import agents
from perdure.store.db import Database
from starter.client import PerdureClient
from tests.conftest import AgentFactory

APPEND = {
    "type": "function",
    "function": {
        "name": "core_memory_append",
        "description": "Append to a memory block.",
        "parameters": {
            "type": "object",
            "properties": {"label": {"type": "string"}, "content": {"type": "string"}},
            "required": ["label", "content"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "conversation_search",
        "description": "Search.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
CALL = {"tool_call": {"name": "core_memory_append", "arguments": {"label": "human", "content": "Name: Ada"}}}


@pytest_asyncio.fixture
async def provider(llm: ScriptedLLMServer) -> AsyncIterator[StructuredToolCalling]:
    async with httpx.AsyncClient() as http:
        yield StructuredToolCalling(OpenAICompatibleProvider(llm.base_url, None, client=http))


@pytest_asyncio.fixture
async def claude(llm: ScriptedLLMServer) -> AsyncIterator[StructuredToolCalling]:
    """The same wrapper around the Anthropic provider, at the scripted server's Messages API."""
    async with httpx.AsyncClient() as http:
        yield StructuredToolCalling(AnthropicProvider(llm.base_url, None, client=http))


def ask(
    model: str, tool_choice: str | dict[str, object] | None = "auto", tools: list[dict[str, object]] | None = None
) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "I'm Ada."}],
        tools=[APPEND, SEARCH] if tools is None else tools,
        tool_choice=tool_choice,
        parallel_tool_calls=False,
    )


def branches(request: dict[str, object]) -> list[dict[str, object]]:
    schema = request["response_format"]["json_schema"]["schema"]  # type: ignore[index]
    return schema.get("anyOf", [schema])  # type: ignore[union-attr, no-any-return]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_json_tool_call_comes_back_as_a_tool_call(
    provider: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str, stream: bool
) -> None:
    llm.script(model_name, [ScriptedReply(content=json.dumps(CALL))])
    pieces: list[StreamPiece] = []

    answer = await (provider.stream(ask(model_name), pieces.append) if stream else provider.complete(ask(model_name)))

    assert answer.content is None and answer.finish_reason == "tool_calls"
    [call] = answer.tool_calls
    assert call.name == "core_memory_append" and json.loads(call.arguments) == {
        "label": "human",
        "content": "Name: Ada",
    }
    assert call.id.startswith("call_")
    sent = llm.requests(model_name)[0]
    assert "tools" not in sent and "tool_choice" not in sent and "parallel_tool_calls" not in sent
    assert len(branches(sent)) == 3, "two tools and the answer"
    assert "core_memory_append" in sent["messages"][0]["content"], "the tools are described in the system prompt"
    if stream:
        assert {p.kind for p in pieces} == {"tool_call"}
        assert {p.tool_call_id for p in pieces} == {call.id} and {p.name for p in pieces} == {"core_memory_append"}
        assert "".join(p.text for p in pieces) == call.arguments


@pytest.mark.parametrize("stream", [False, True])
async def test_a_json_response_comes_back_as_text(
    provider: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str, stream: bool
) -> None:
    llm.script(model_name, [ScriptedReply(content=json.dumps({"response": 'Hello "Ada"!\nNice to meet you.'}))])
    pieces: list[StreamPiece] = []

    answer = await (provider.stream(ask(model_name), pieces.append) if stream else provider.complete(ask(model_name)))

    assert answer.content == 'Hello "Ada"!\nNice to meet you.' and answer.tool_calls == []
    if stream:
        assert len(pieces) > 1 and "".join(p.text for p in pieces) == answer.content, "the text streams, unescaped"


async def test_forced_choices_narrow_the_schema(
    provider: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str
) -> None:
    llm.script(model_name, [ScriptedReply(content=json.dumps(CALL))] * 2)

    await provider.complete(ask(model_name, "required"))
    await provider.complete(ask(model_name, {"type": "function", "function": {"name": "core_memory_append"}}))

    required, named = llm.requests(model_name)
    assert len(branches(required)) == 2, "any tool, no answer"
    assert len(branches(named)) == 1 and "response" not in json.dumps(branches(named))


async def test_without_tools_the_request_passes_through(
    provider: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str
) -> None:
    llm.script(model_name, [ScriptedReply(content="plain words")])

    answer = await provider.complete(ask(model_name, None, tools=[]))

    assert answer.content == "plain words"
    assert "response_format" not in llm.requests(model_name)[0]


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        json.dumps({"tool_call": {"name": "delete_everything", "arguments": {}}}),
        json.dumps({"response": ""}),
        '{"response": "cut off',
    ],
    ids=["not-json", "tool-not-allowed", "empty-response", "cut-off"],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_outside_the_schema_is_an_invalid_response(
    provider: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str, content: str, stream: bool
) -> None:
    llm.script(model_name, [ScriptedReply(content=content)])

    with pytest.raises(LLMInvalidResponseError) as raised:
        await (provider.stream(ask(model_name), lambda piece: None) if stream else provider.complete(ask(model_name)))

    assert not raised.value.retryable


async def test_a_run_in_json_schema_mode_edits_memory_and_answers(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        llm_config={"tool_calling": "json_schema"},
    )
    llm.script(
        model_name,
        [ScriptedReply(content=json.dumps(CALL)), ScriptedReply(content=json.dumps({"response": "Hi Ada."}))],
    )

    response = await client.send_message(agent.id, "I'm Ada.")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert [m.message_type for m in response.messages] == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert response.messages[-1].content == "Hi Ada."  # type: ignore[union-attr]
    with db.transaction(read_only=True) as session:
        assert agents.get_agent(session, agent.id).blocks[0].value == "Name: Ada"
    second = llm.requests(model_name)[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": json.dumps(CALL)}, (
        "the earlier call is shown in the answer shape"
    )
    assert second[-1]["role"] == "user" and second[-1]["content"].startswith("Tool result (core_memory_append)")


async def test_json_schema_requests_read_plainly_and_hold_memory_arguments_to_the_blocks(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent(
        memory_blocks=[
            {"label": "human", "value": "", "limit": 300},
            {"label": "persona", "value": "calm", "read_only": True},
        ],
        tools=["core_memory_append"],
        llm_config={"tool_calling": "json_schema", "extra_body": {"repeat_penalty": 1.2}},
    )
    llm.script(model_name, [ScriptedReply(content=json.dumps({"response": "Hi."}))])

    await client.send_message(agent.id, "Hello")

    sent = llm.requests(model_name)[0]
    assert sent["repeat_penalty"] == 1.2, "extra_body goes out as it is"
    system = sent["messages"][0]["content"]
    assert "Your memory about the human: (empty)\nYour memory about the persona: calm" in system
    assert "<memory_blocks>" not in system
    [append] = [b for b in branches(sent) if "tool_call" in b["properties"] and "core_memory_append" in json.dumps(b)]  # type: ignore[index, operator]
    arguments = append["properties"]["tool_call"]["properties"]["arguments"]["properties"]  # type: ignore[index]
    assert arguments["label"]["enum"] == ["human"], "only writable blocks"
    assert arguments["content"]["maxLength"] == 300


async def test_native_requests_keep_lettas_memory_layout(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}], tools=["core_memory_append"])
    llm.script(model_name, [ScriptedReply(content="Hi.")])

    await client.send_message(agent.id, "Hello")

    sent = llm.requests(model_name)[0]
    assert "<memory_blocks>" in sent["messages"][0]["content"] and "response_format" not in sent
    [append] = [t for t in sent["tools"] if t["function"]["name"] == "core_memory_append"]
    assert "enum" not in append["function"]["parameters"]["properties"]["label"]


# --------------------------------------------------------------------------- Anthropic


def answer_schema(request: dict[str, Any]) -> dict[str, Any]:
    """The input schema of the one tool an Anthropic request offers, checking that it is forced."""
    [tool] = request["tools"]
    assert request["tool_choice"] == {"type": "tool", "name": tool["name"], "disable_parallel_tool_use": True}
    return tool["input_schema"]


@pytest.mark.parametrize("stream", [False, True])
async def test_on_anthropic_the_answer_is_a_forced_tools_input_and_a_call_comes_back_as_a_call(
    claude: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str, stream: bool
) -> None:
    llm.script(model_name, [ScriptedReply(content=json.dumps(CALL))])
    pieces: list[StreamPiece] = []
    request = ask(model_name).model_copy(update={"reasoning_budget": 2048})

    answer = await (claude.stream(request, pieces.append) if stream else claude.complete(request))

    assert answer.content is None and answer.finish_reason == "tool_calls"
    [call] = answer.tool_calls
    assert call.name == "core_memory_append" and json.loads(call.arguments) == CALL["tool_call"]["arguments"]
    sent = llm.requests(model_name)[0]
    schema = answer_schema(sent)
    assert schema["type"] == "object" and "anyOf" not in schema, "the API refuses alternatives at the top"
    assert schema["required"] == [] and schema["properties"]["response"] == {"type": "string"}
    calls = schema["properties"]["tool_call"]["anyOf"]
    assert [c["properties"]["name"]["const"] for c in calls] == ["core_memory_append", "conversation_search"]
    assert "response_format" not in sent and "thinking" not in sent, "a forced tool cannot think first"
    assert "core_memory_append" in sent["system"][0]["text"], "the tools are described in the system prompt"
    if stream:
        assert {p.kind for p in pieces} == {"tool_call"} and {p.tool_call_id for p in pieces} == {call.id}
        assert "".join(p.text for p in pieces) == call.arguments


@pytest.mark.parametrize("stream", [False, True])
async def test_on_anthropic_a_response_comes_back_as_text_and_a_text_aside_is_dropped(
    claude: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str, stream: bool
) -> None:
    said = 'Hello "Ada"!\nNice to meet you.'
    answer_call = ScriptedToolCall(name="answer", arguments={"response": said})
    llm.script(model_name, [ScriptedReply(content="Let me answer.", tool_calls=[answer_call])])
    pieces: list[StreamPiece] = []

    answer = await (claude.stream(ask(model_name), pieces.append) if stream else claude.complete(ask(model_name)))

    assert answer.content == said and answer.tool_calls == [] and answer.finish_reason == "stop"
    if stream:
        assert len(pieces) > 1 and "".join(p.text for p in pieces) == said, "the text streams, unescaped"


async def test_on_anthropic_forced_choices_narrow_the_answers_schema(
    claude: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str
) -> None:
    llm.script(model_name, [ScriptedReply(content=json.dumps(CALL))] * 2)

    await claude.complete(ask(model_name, "required"))
    await claude.complete(ask(model_name, {"type": "function", "function": {"name": "core_memory_append"}}))

    required, named = (answer_schema(sent) for sent in llm.requests(model_name))
    assert list(required["properties"]) == ["tool_call"] and required["required"] == ["tool_call"]
    assert len(required["properties"]["tool_call"]["anyOf"]) == 2
    assert named["required"] == ["tool_call"] and "anyOf" not in json.dumps(named)
    assert named["properties"]["tool_call"]["properties"]["name"] == {"const": "core_memory_append"}


async def test_on_anthropic_without_tools_the_answer_is_plain_text(
    claude: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str
) -> None:
    llm.script(model_name, [ScriptedReply(content="plain words")])

    answer = await claude.complete(ask(model_name, None, tools=[]))

    assert answer.content == "plain words"
    sent = llm.requests(model_name)[0]
    assert "tools" not in sent and "tool_choice" not in sent


@pytest.mark.parametrize(
    "content",
    [
        "not json: the model wrote text instead of calling the tool",
        json.dumps({"tool_call": {"name": "delete_everything", "arguments": {}}}),
        json.dumps({"response": ""}),
        json.dumps({"tool_call": {"name": "core_memory_append"}}),
        json.dumps({"response": "Hi.", **CALL}),
    ],
    ids=["text-instead", "tool-not-allowed", "empty-response", "no-arguments", "both-branches"],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_on_anthropic_an_answer_outside_the_schema_is_an_invalid_response(
    claude: StructuredToolCalling, llm: ScriptedLLMServer, model_name: str, content: str, stream: bool
) -> None:
    llm.script(model_name, [ScriptedReply(content=content)])

    with pytest.raises(LLMInvalidResponseError) as raised:
        await (claude.stream(ask(model_name), lambda piece: None) if stream else claude.complete(ask(model_name)))

    assert not raised.value.retryable
