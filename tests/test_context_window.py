"""Context window management, end to end: what reaches the model stays within its window."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from perdure.schemas.agent import AgentState
from perdure.schemas.messages import Message
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store import messages
from perdure.store.db import Database
from starter.client import PerdureClient
from tests.conftest import AgentFactory
from tests.helpers import in_context, text

pytestmark = pytest.mark.both_stores


async def test_a_huge_tool_return_is_capped_in_the_request_and_stored_whole(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's request-level cap: max(5000, window * 0.2 * 4) characters per tool return."""
    agent = make_agent(llm_config={"context_window": 8_000})  # cap 6,400 chars; no compaction needed
    tail = f"tail-{uuid.uuid4().hex}"
    llm.script(model_name, [ScriptedReply(content="noted")])
    await client.send_message(agent.id, "needle " + "x" * 20_000 + f" {tail}")
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[ScriptedToolCall(name="conversation_search", arguments={"query": "needle", "limit": 1})]
            ),
            ScriptedReply(content="Summary: the user sent a long needle message."),  # if the context gets compacted
            ScriptedReply(content="found it"),
        ],
    )
    response = await client.send_message(agent.id, "find the needle")

    answered = [r for r in llm.requests(model_name) if r["messages"][-1]["role"] == "tool"]
    assert answered, "the model was sent the tool's return"
    message = json.loads(answered[-1]["messages"][-1]["content"])["message"]  # the envelope stays valid JSON
    assert len(message) < 6_400 + 40 and message.endswith(" chars]") and "... [truncated " in message
    assert tail not in answered[-1]["messages"][-1]["content"]
    with db.transaction() as session:
        stored = messages.list_messages(session, agent.id, run_id=response.run_id)
    (tool,) = [m for m in stored if m.role == "tool"]
    assert tail in (tool.tool_returns[0].func_response or ""), "the store keeps the whole return"


OVERFLOW = {"error": {"message": "maximum context length exceeded", "code": "context_length_exceeded"}}
"""The provider's context-length error, as an error response or inside a stream."""


def assert_calls_paired(context: list[Message]) -> None:
    """Every tool return in the context still has its call before it (Letta issue 2605)."""
    called: set[str] = set()
    for message in context:
        called |= {c.id for c in message.tool_calls}
        for tool_return in message.tool_returns:
            assert tool_return.tool_call_id in called, f"orphaned return {tool_return.tool_call_id}"


def summarizing_agent(
    make_agent: AgentFactory,
    model_name: str,
    llm: ScriptedLLMServer,
    *,
    llm_config: dict[str, Any] | None = None,
    **fields: Any,
) -> AgentState:
    """An agent whose summaries come from a scripted model of their own (Letta's
    compaction_settings.model), so each test scripts its answers and its summaries apart."""
    llm.script(f"{model_name}-summary", [text(f"SUMMARY {i}: earlier facts and answers.") for i in range(20)])
    return make_agent(
        llm_config={**(llm_config or {}), "compaction_model": f"scripted/{model_name}-summary"},
        memory_blocks=[{"label": "human", "value": ""}],
        **fields,
    )


async def warm_up(client: PerdureClient, llm: ScriptedLLMServer, model_name: str, agent_id: str, turns: int) -> None:
    """Some turns of plain questions and answers, so there is history to compact."""
    for turn in range(turns):
        llm.script(model_name, [text(f"answer {turn}")])
        await client.send_message(agent_id, f"question {turn}")


async def test_a_long_conversation_compacts_and_keeps_working(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """With a small window, the loop compacts after a step that leaves the next request over 90%
    of it: a summary replaces the oldest messages, which stay searchable in the database."""
    agent = summarizing_agent(make_agent, model_name, llm, llm_config={"context_window": 1_200})
    compacted = 0
    for turn in range(8):
        llm.script(
            model_name,
            [
                ScriptedReply(
                    tool_calls=[
                        ScriptedToolCall(
                            name="memory_insert", arguments={"label": "human", "new_string": f"fact {turn}"}
                        )
                    ]
                ),
                text(f"Noted fact {turn}. " + "detail " * 40),
            ],
        )
        response = await client.send_message(agent.id, f"Remember fact number {turn}. " + "context " * 40)
        types = [m.message_type for m in response.messages]
        assert response.stop_reason.stop_reason.value == "end_turn", (turn, types)
        if "summary_message" in types:
            compacted += 1
            event = next(m for m in response.messages if m.message_type == "event_message")
            assert event.event_data["tokens_after"] < event.event_data["tokens_before"]
            assert event.event_data["mode"] in ("sliding_window", "all", "hard_eviction")
        assert_calls_paired(in_context(db, agent.id))
    assert compacted >= 2, "the small window forced repeated compactions"
    context = in_context(db, agent.id)
    assert context[0].role == "system" and context[1].role == "summary"
    with db.transaction() as session:
        everything = messages.list_messages(session, agent.id)
    assert len(everything) > len(context), "evicted messages stay in the database"
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[
                    ScriptedToolCall(name="conversation_search", arguments={"query": "fact number 0", "limit": 1})
                ]
            ),
            text("found"),
        ],
    )
    found = await client.send_message(agent.id, "search")
    (tool,) = [m for m in found.messages if m.message_type == "tool_return_message"]
    assert "fact number 0" in (tool.tool_return or ""), "conversation_search still finds evicted messages"


async def test_the_providers_context_length_error_compacts_and_retries(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = summarizing_agent(make_agent, model_name, llm)
    await warm_up(client, llm, model_name, agent.id, 3)
    overflow = ScriptedReply(status=400, error=OVERFLOW)
    llm.script(model_name, [overflow, text("answer after compaction")])

    response = await client.send_message(agent.id, "question 3")

    assert response.stop_reason.stop_reason.value == "end_turn"
    assert [m.message_type for m in response.messages][-1] == "assistant_message"
    assert "summary_message" in [m.message_type for m in response.messages]
    retried = llm.requests(model_name)[-1]["messages"]
    assert [m["role"] for m in retried[:2]] == ["system", "user"] and "SUMMARY 0" in retried[1]["content"]
    assert retried[-1] == {"role": "user", "content": "question 3"}, "the new message was not lost"
    assert len(in_context(db, agent.id)) < 9


async def test_a_system_prompt_larger_than_the_window_stops_with_its_stop_reason(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent(
        llm_config={"context_window": 300}, memory_blocks=[{"label": "human", "value": "a long memory " * 200}]
    )
    llm.script(model_name, [text("hello")])

    response = await client.send_message(agent.id, "hi")

    assert response.stop_reason.stop_reason.value == "context_window_overflow_in_system_prompt"
    state = await client.state(agent.id)
    assert state is not None and "shrink the memory blocks" in (state.error or "")
    assert "context window of 300 tokens" in (state.error or "")


async def test_perdure_compact_on_a_new_agent_and_after_a_conversation(
    cli_env: dict[str, str],
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
) -> None:
    """`perdure compact` with nothing to compact, then with a conversation to evict (a paused
    run's compaction is `test_a_pending_approval_survives_compaction`)."""
    from tests.test_cli import perdure

    agent = summarizing_agent(make_agent, model_name, llm)
    idle = await perdure(cli_env, "compact", agent.id)
    assert idle.returncode == 0 and "nothing to compact" in idle.stdout
    await warm_up(client, llm, model_name, agent.id, 4)
    done = await perdure(cli_env, "compact", agent.id, "--mode", "all", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mode"] == "all" and result["evicted"] == 8 and result["tokens_after"] < result["tokens_before"]
    assert [m.role for m in in_context(db, agent.id)] == ["system", "summary"]
    shown = await perdure(cli_env, "messages", agent.id, "--limit", "2")
    assert "summary    > " in shown.stdout or "event      > compaction: all" in shown.stdout


async def test_a_pending_approval_survives_compaction(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    from perdure.schemas.approvals import ApprovalAnswer

    agent = summarizing_agent(
        make_agent,
        model_name,
        llm,
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
    )
    await warm_up(client, llm, model_name, agent.id, 3)
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[
                    ScriptedToolCall(
                        name="core_memory_append", arguments={"label": "human", "content": "Ada"}, id="call_keep"
                    )
                ]
            ),
            text("saved"),
        ],
    )
    paused = await client.send_message(agent.id, "remember Ada")
    assert paused.stop_reason.stop_reason.value == "requires_approval"

    result = await client.compact(agent.id, "all")

    assert result.evicted >= 6
    context = in_context(db, agent.id)
    assert context[-1].role == "approval" and context[-1].tool_calls[0].id == "call_keep", "the pending request stays"
    finished = await client.answer(agent.id, [ApprovalAnswer(tool_call_id="call_keep", approve=True)])
    assert finished.stop_reason.stop_reason.value == "end_turn"
    assert_calls_paired(in_context(db, agent.id))


async def test_a_provider_without_usage_still_triggers_compaction(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """llama.cpp reports no usage (Letta issue 3508): the estimate falls back to the request
    counted with tiktoken, so the context is still compacted in time."""
    agent = summarizing_agent(make_agent, model_name, llm, llm_config={"context_window": 1_500})
    compacted = False
    for turn in range(6):
        llm.script(model_name, [ScriptedReply(content=f"answer {turn} " + "words " * 60, report_usage=False)])
        response = await client.send_message(agent.id, f"question {turn} " + "words " * 60)
        assert response.usage.prompt_tokens == 0, "the provider reported nothing"
        compacted |= "summary_message" in [m.message_type for m in response.messages]
    assert compacted
    assert [m.role for m in in_context(db, agent.id)][:2] == ["system", "summary"]
