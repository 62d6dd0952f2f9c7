"""The run loop on both providers: the same scripts answered over chat completions and over
Anthropic's Messages API must make the same runs.

This module's `make_agent` makes each test's agent on either protocol (the scripted server
speaks both), so the loop, approvals, rules, compaction and token streaming are checked once
per provider; what only Anthropic has (signed and redacted thinking, cache usage, overloaded)
follows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from perdure.agents import create_agent
from perdure.schemas.agent import AgentCreate, AgentState
from perdure.schemas.approvals import ApprovalAnswer, ClientToolReturn
from perdure.schemas.letta import (
    AssistantMessage,
    HiddenReasoningMessage,
    ReasoningMessage,
    StopReasonType,
    ToolCallMessage,
)
from perdure.schemas.messages import HiddenReasoningContent, ReasoningContent
from perdure.scripted.anthropic_replies import SIGNATURE, anthropic_error
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store.db import Database
from starter.client import PerdureClient
from starter.updates import message_request
from tests.conftest import AgentFactory
from tests.helpers import block_value, call, calls, in_context, text, types_of
from tests.test_approvals import WEATHER, answer, approval_agent, remember, weather
from tests.test_context_window import OVERFLOW, summarizing_agent, warm_up
from tests.test_streaming import collect, stored_answer


@dataclass(frozen=True)
class Wire:
    """What differs between the two protocols, as far as these tests look."""

    name: str
    prefix: str
    overflow: ScriptedReply

    @property
    def anthropic(self) -> bool:
        return self.name == "anthropic"

    def forced(self, tool: str) -> dict[str, Any]:
        if self.anthropic:
            return {"type": "tool", "name": tool, "disable_parallel_tool_use": True}
        return {"type": "function", "function": {"name": tool}}

    def tool_result_ids(self, body: dict[str, Any]) -> list[str]:
        """The call ids whose results the request sends back to the model."""
        if self.anthropic:
            return [b["tool_use_id"] for m in body["messages"] for b in m["content"] if b.get("type") == "tool_result"]
        return [m["tool_call_id"] for m in body["messages"] if m["role"] == "tool"]

    def system_text(self, body: dict[str, Any]) -> str:
        if self.anthropic:
            return "".join(block["text"] for block in body["system"])
        return body["messages"][0]["content"]


OPENAI = Wire("openai", "scripted", ScriptedReply(status=400, error=OVERFLOW))
ANTHROPIC = Wire(
    "anthropic",
    "anthropic",
    ScriptedReply(status=400, error=anthropic_error(400, "prompt is too long: 9000 tokens > 8000 maximum")),
)


@pytest.fixture(params=[OPENAI, ANTHROPIC], ids=lambda wire: wire.name)
def wire(request: pytest.FixtureRequest) -> Wire:
    return request.param


@pytest.fixture
def make_agent(db: Database, llm: ScriptedLLMServer, model_name: str, wire: Wire) -> AgentFactory:
    """Agents on this test's protocol: `scripted/…` asks chat completions, `anthropic/…` the
    Messages API, both at the scripted server."""

    def make(**fields: Any) -> AgentState:
        llm_config = {"model": f"{wire.prefix}/{model_name}", "endpoint": llm.base_url, **fields.pop("llm_config", {})}
        if "compaction_model" in llm_config:
            llm_config["compaction_model"] = f"{wire.prefix}/{llm_config['compaction_model'].partition('/')[2]}"
        return create_agent(db, AgentCreate.model_validate({"name": "test", "llm_config": llm_config, **fields}))

    return make


async def test_tools_run_until_the_answer(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database, wire: Wire
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": "Name unknown."}])
    replace = ScriptedToolCall(
        id="toolu_replace",
        name="memory_replace",
        arguments={"label": "human", "old_string": "Name unknown.", "new_string": "Name: Ada."},
    )
    llm.script(model_name, [ScriptedReply(tool_calls=[replace]), text("Nice to meet you, Ada.")])

    response = await client.send_message(agent.id, "I'm Ada.")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert types_of(response) == ["user_message", "tool_call_message", "tool_return_message", "assistant_message"]
    assert block_value(db, agent.id) == "Name: Ada."
    assert response.usage.step_count == 2 and response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    first, second = llm.requests(model_name)
    assert "Name unknown." in wire.system_text(first) and "Name: Ada." in wire.system_text(second)
    assert wire.tool_result_ids(second) == ["toolu_replace"]


async def test_parallel_calls_all_run_and_return_in_order(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, wire: Wire
) -> None:
    agent = make_agent(llm_config={"parallel_tool_calls": True})
    searches = [
        ScriptedToolCall(id=f"toolu_{i}", name="conversation_search", arguments={"query": q})
        for i, q in enumerate(["tea", "sailing"])
    ]
    llm.script(model_name, [calls(*searches), text("Nothing found.")])

    response = await client.send_message(agent.id, "Search twice.")

    (returns,) = [m for m in response.messages if m.message_type == "tool_return_message"]
    assert [r.tool_call_id for r in returns.tool_returns] == ["toolu_0", "toolu_1"]  # type: ignore[union-attr]
    first, second = llm.requests(model_name)
    assert wire.tool_result_ids(second) == ["toolu_0", "toolu_1"]
    if wire.anthropic:
        assert first["tool_choice"] == {"type": "auto"}, "parallel use is left on"
    else:
        assert first["parallel_tool_calls"] is True


async def test_an_approval_pauses_and_the_approved_call_runs(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database, wire: Wire
) -> None:
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [ScriptedReply(tool_calls=[remember("call_a")]), text("Saved.")])

    paused = await client.send_message(agent.id, "Remember that I like tea.")
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    finished = await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_a", approve=True)])

    assert finished.stop_reason.stop_reason is StopReasonType.end_turn
    assert "Likes tea." in block_value(db, agent.id)
    assert wire.tool_result_ids(llm.requests(model_name)[-1]) == ["call_a"]
    if wire.anthropic:
        assert llm.requests(model_name)[0]["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


async def test_held_and_client_calls_go_back_in_the_models_turn_with_every_result(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, wire: Wire
) -> None:
    """A response whose calls partly wait (an approval, a client tool): after the answers, the
    model sees all its calls in one turn and every result after it, in its order."""
    agent = approval_agent(make_agent, "core_memory_append", parallel=True)
    model_calls = [
        remember("call_a"),
        ScriptedToolCall(id="call_s", name="conversation_search", arguments={"query": "tea"}),
        weather("call_c"),
    ]
    llm.script(model_name, [ScriptedReply(content="Three things.", tool_calls=model_calls), text("All done.")])

    paused = await client.send_message(agent.id, "Do it all.", client_tools=[WEATHER])
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    finished = await answer(
        client,
        agent.id,
        [
            ApprovalAnswer(tool_call_id="call_a", approve=True),
            ClientToolReturn(tool_call_id="call_c", tool_return="sunny"),
        ],
    )

    assert finished.stop_reason.stop_reason is StopReasonType.end_turn
    last = llm.requests(model_name)[-1]
    assert wire.tool_result_ids(last) == ["call_a", "call_s", "call_c"]
    if wire.anthropic:
        (model_turn,) = [m for m in last["messages"] if m["role"] == "assistant"]
        called = [b.get("id") for b in model_turn["content"] if b["type"] == "tool_use"]
        assert sorted(called) == ["call_a", "call_c", "call_s"], "one model turn holds every call, the held ones too"


async def test_rules_force_the_tools_and_end_the_run(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database, wire: Wire
) -> None:
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        tool_rules=[
            {"type": "run_first", "tool_name": "conversation_search", "args": {"query": "todo"}},
            {"type": "constrain_child_tools", "tool_name": "conversation_search", "children": ["core_memory_append"]},
            {"type": "exit_loop", "tool_name": "core_memory_append"},
        ],
    )
    llm.script(
        model_name,
        [call("conversation_search", query="anything"), call("core_memory_append", label="human", content="Ada.")],
    )

    response = await client.send_message(agent.id, "I'm Ada.")

    assert response.stop_reason.stop_reason is StopReasonType.tool_rule
    assert block_value(db, agent.id) == "Ada."
    first, second = llm.requests(model_name)
    assert first["tool_choice"] == wire.forced("conversation_search")
    assert second["tool_choice"] == wire.forced("core_memory_append")
    tool_names = [t["name"] if wire.anthropic else t["function"]["name"] for t in second["tools"]]
    assert tool_names == ["core_memory_append"], "only the allowed child is offered"


async def test_a_too_long_prompt_compacts_and_asks_again(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database, wire: Wire
) -> None:
    agent = summarizing_agent(make_agent, model_name, llm)
    await warm_up(client, llm, model_name, agent.id, 3)
    llm.script(model_name, [wire.overflow, text("answer after compaction")])

    response = await client.send_message(agent.id, "question 3")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert "summary_message" in types_of(response)
    assert in_context(db, agent.id)[1].role == "summary"
    summary_request = llm.requests(f"{model_name}-summary")[-1]
    assert ("system" in summary_request) is wire.anthropic, "the summary is asked of the agent's own provider"
    retried = json.dumps(llm.requests(model_name)[-1]["messages"])
    assert "SUMMARY 0" in retried and "question 3" in retried


async def test_tokens_stream_and_match_the_stored_answer(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}], tools=["core_memory_append"])
    answer_text = "Nice to meet you, Ada. I will remember your name."
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[
                    ScriptedToolCall(
                        id="toolu_r", name="core_memory_append", arguments={"label": "human", "content": "Ada"}
                    )
                ]
            ),
            text(answer_text),
        ],
    )

    items = await collect(client.stream_message(agent.id, message_request("I'm Ada.", stream_tokens=True)))

    stored = stored_answer(db, agent.id)
    chunks = [i.event for i in items if isinstance(i.event, AssistantMessage)]
    assert "".join(c.content for c in chunks) == answer_text == stored.text
    call_chunks = [i.event for i in items if isinstance(i.event, ToolCallMessage)]
    assert "".join(c.tool_call.arguments for c in call_chunks) == '{"label": "human", "content": "Ada"}'
    assert {c.tool_call.tool_call_id for c in call_chunks} == {"toolu_r"}
    assert [i.event.message_type for i in items][-2:] == ["stop_reason", "usage_statistics"]
    assert all(r["stream"] is True for r in llm.requests(model_name))


def plain_turns(body: dict[str, Any]) -> list[tuple[str, str]]:
    """A request's conversation as (role, text): json_schema mode sends only text turns."""
    return [
        (m["role"], m["content"] if isinstance(m["content"], str) else "".join(b["text"] for b in m["content"]))
        for m in body["messages"]
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_json_schema_mode_calls_tools_by_structured_answers(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
    wire: Wire,
    stream: bool,
) -> None:
    """Anthropic gives the answer as a forced tool's input, an OpenAI-compatible server as its
    text; the same scripts make the same run either way."""
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        llm_config={"tool_calling": "json_schema"},
    )
    structured_call = {"tool_call": {"name": "core_memory_append", "arguments": {"label": "human", "content": "Ada"}}}
    llm.script(model_name, [text(json.dumps(structured_call)), text(json.dumps({"response": "Hi Ada."}))])

    if stream:
        items = await collect(client.stream_message(agent.id, message_request("I'm Ada.", stream_tokens=True)))
        chunks = [i.event for i in items if isinstance(i.event, ToolCallMessage)]
        assert "".join(c.tool_call.arguments for c in chunks) == '{"label": "human", "content": "Ada"}'
        answer = "".join(i.event.content for i in items if isinstance(i.event, AssistantMessage))
        assert answer == "Hi Ada." == stored_answer(db, agent.id).text
    else:
        response = await client.send_message(agent.id, "I'm Ada.")
        assert response.stop_reason.stop_reason is StopReasonType.end_turn
        assert types_of(response) == ["user_message", "tool_call_message", "tool_return_message", "assistant_message"]
        assert response.messages[-1].content == "Hi Ada."  # type: ignore[union-attr]
    assert block_value(db, agent.id) == "Ada"
    first, second = llm.requests(model_name)
    for body in (first, second):
        if wire.anthropic:
            assert body["tool_choice"]["name"] == "answer" and "response_format" not in body
        else:
            assert "response_format" in body and "tool_choice" not in body
    assert plain_turns(second)[-2] == ("assistant", json.dumps(structured_call)), "the call in the answer's shape"
    role, result = plain_turns(second)[-1]
    assert role == "user" and result.startswith("Tool result (core_memory_append)")


# --------------------------------------------------------------------------- Anthropic only


@pytest.mark.parametrize("wire", [ANTHROPIC], ids=["anthropic"])
async def test_thinking_is_shown_stored_with_its_signature_and_sent_back(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        llm_config={"enable_reasoner": True, "max_reasoning_tokens": 2000},
    )
    thinking = ScriptedReply(
        reasoning="She told me her name.",
        hidden_reasoning="ENCRYPTED",
        tool_calls=[
            ScriptedToolCall(id="toolu_t", name="memory_insert", arguments={"label": "human", "new_string": "Ada"})
        ],
        cache_read_tokens=500,
        cache_write_tokens=40,
    )
    llm.script(model_name, [thinking, text("Hello Ada.")])

    response = await client.send_message(agent.id, "I'm Ada.")

    assert types_of(response)[:3] == ["user_message", "reasoning_message", "hidden_reasoning_message"]
    reasoning = next(m for m in response.messages if isinstance(m, ReasoningMessage))
    hidden = next(m for m in response.messages if isinstance(m, HiddenReasoningMessage))
    assert reasoning.reasoning == "She told me her name." and reasoning.signature == SIGNATURE
    assert hidden.state == "redacted" and hidden.hidden_reasoning == "ENCRYPTED"
    stored = next(m for m in in_context(db, agent.id) if m.tool_calls)
    assert stored.content[:2] == [
        ReasoningContent(reasoning="She told me her name.", signature=SIGNATURE),
        HiddenReasoningContent(data="ENCRYPTED"),
    ]
    first, second = llm.requests(model_name)
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    model_turn = next(m for m in second["messages"] if m["role"] == "assistant")
    assert [b["type"] for b in model_turn["content"]] == ["thinking", "redacted_thinking", "tool_use"]
    assert model_turn["content"][0]["signature"] == SIGNATURE
    assert response.usage.cached_input_tokens == 500 and response.usage.cache_write_tokens == 40


@pytest.mark.parametrize("wire", [ANTHROPIC], ids=["anthropic"])
async def test_overloaded_is_retried_and_the_run_ends_normally(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(status=529, headers={"retry-after": "0"}), text("Here now.")])

    response = await client.send_message(agent.id, "Hi")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert len(llm.requests(model_name)) == 2


@pytest.mark.parametrize("wire", [ANTHROPIC], ids=["anthropic"])
async def test_an_invalid_key_ends_the_run_without_retry(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(status=401), text("never")])

    response = await client.send_message(agent.id, "Hi")

    assert response.stop_reason.stop_reason is StopReasonType.llm_api_error
    assert len(llm.requests(model_name)) == 1


@pytest.mark.parametrize("wire", [ANTHROPIC], ids=["anthropic"])
async def test_streamed_thinking_arrives_as_reasoning_and_hidden_reasoning(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent(llm_config={"enable_reasoner": True})
    llm.script(
        model_name,
        [ScriptedReply(reasoning="Think about the greeting.", hidden_reasoning="ENCRYPTED", content="Hello.")],
    )

    items = await collect(client.stream_message(agent.id, message_request("Hi", stream_tokens=True)))

    stored = stored_answer(db, agent.id)
    reasoning = [i.event for i in items if isinstance(i.event, ReasoningMessage)]
    hidden = [i.event for i in items if isinstance(i.event, HiddenReasoningMessage)]
    assert "".join(r.reasoning for r in reasoning) == "Think about the greeting."
    assert [(h.id, h.state, h.hidden_reasoning) for h in hidden] == [(stored.id, "redacted", "ENCRYPTED")]
    assert stored.content[0] == ReasoningContent(reasoning="Think about the greeting.", signature=SIGNATURE)
