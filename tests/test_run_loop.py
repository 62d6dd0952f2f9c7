"""The run loop end to end: real dev server, real SQLite file, scripted model over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.client import WorkflowExecutionStatus

from perdure.schemas.letta import StopReasonType
from perdure.schemas.run import MessageCreate
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store import agents, messages, runs
from perdure.store.db import Database
from starter.client import PerdureClient
from starter.updates import RunRejectedError
from tests.conftest import AgentFactory, eventually
from tests.helpers import call, text, types_of
from perdure.names import workflow_id

pytestmark = pytest.mark.both_stores


async def test_loop_runs_tools_until_end_turn(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": "Name unknown."}], tools=["core_memory_append"])
    llm.script(
        model_name,
        [
            call("memory_replace", label="human", old_string="Name unknown.", new_string="Name: Ada."),
            call("core_memory_append", label="human", content="Likes sailing."),
            text("Nice to meet you, Ada.", reasoning="The user introduced themselves."),
        ],
    )

    response = await client.send_message(agent.id, "I'm Ada and I like sailing.")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert types_of(response) == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "tool_call_message",
        "tool_return_message",
        "reasoning_message",
        "assistant_message",
    ]
    assert all(
        r.status == "success"
        for m in response.messages
        if m.message_type == "tool_return_message"
        for r in m.tool_returns
    )
    assert response.usage.step_count == 3
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens > 0
    with db.transaction() as session:
        human = agents.get_agent(session, agent.id).block("human")
        assert human is not None and human.value == "Name: Ada.\nLikes sailing."
        steps = runs.list_steps(session, response.run_id)
        run = runs.get_run(session, response.run_id)
    assert [s.step_number for s in steps] == [1, 2, 3]
    assert all(s.llm_request_ns and s.step_ns for s in steps)
    assert run.status.value == "completed" and run.usage is not None and run.usage.step_count == 3
    # Each later request sees the memory the previous tool call wrote.
    system_prompts = [r["messages"][0]["content"] for r in llm.requests(model_name)]
    assert "Name unknown." in system_prompts[0]
    assert "Name: Ada." in system_prompts[1] and "Likes sailing." not in system_prompts[1]
    assert "Likes sailing." in system_prompts[2]


async def test_context_persists_across_runs(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    llm.script(model_name, [text("first answer"), text("second answer")])
    await client.send_message(agent.id, "first question")
    await client.send_message(agent.id, "second question")
    second_request = llm.requests(model_name)[1]["messages"]
    assert [(m["role"], m.get("content")) for m in second_request[1:]] == [
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]


async def test_max_steps_stops_a_looping_model(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent()
    llm.script(model_name, [call("conversation_search", query="x")] * 3)
    response = await client.send_message(agent.id, "search forever", max_steps=2)
    assert response.stop_reason.stop_reason is StopReasonType.max_steps
    assert response.usage.step_count == 2
    assert llm.pending(model_name) == 1
    with db.transaction() as session:
        assert runs.get_run(session, response.run_id).status.value == "completed"


async def test_length_finish_without_tool_call_is_max_tokens_exceeded(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent()
    llm.script(model_name, [text("This answer was cut", finish_reason="length")])
    response = await client.send_message(agent.id, "write a novel")
    assert response.stop_reason.stop_reason is StopReasonType.max_tokens_exceeded
    assert types_of(response) == ["user_message", "assistant_message"]
    with db.transaction() as session:
        assert runs.get_run(session, response.run_id).status.value == "failed"


async def test_server_error_is_retried(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(status=500, error={"error": {"message": "overloaded"}}), text("recovered")])
    response = await client.send_message(agent.id, "hello")
    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert [m.content for m in response.messages if m.message_type == "assistant_message"] == ["recovered"]
    assert len(llm.requests(model_name)) == 2


async def test_bad_request_fails_the_run_and_stores_nothing_of_the_step(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(status=400, error={"error": {"message": "unsupported parameter"}})])
    response = await client.send_message(agent.id, "this message must not be lost")

    assert response.stop_reason.stop_reason is StopReasonType.llm_api_error
    assert response.messages == []
    assert len(llm.requests(model_name)) == 1, "a 400 must not be retried"
    with db.transaction() as session:
        assert agents.get_agent(session, agent.id).message_ids == agent.message_ids
        run = runs.get_run(session, response.run_id)
        (step,) = runs.list_steps(session, response.run_id)
    assert run.status.value == "failed" and "unsupported parameter" in (run.error or "")
    first_message = run.request.messages[0]
    assert isinstance(first_message, MessageCreate)
    assert first_message.content == "this message must not be lost"
    assert step.status == "failed" and step.error_type == "LLMBadRequestError"
    description = await client.temporal.get_workflow_handle(workflow_id(agent.id)).describe()
    assert description.status is WorkflowExecutionStatus.FAILED


async def test_malformed_model_response_is_invalid_llm_response(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """JSON of the wrong shape breaks the protocol: not retried (a body that is not JSON at all is)."""
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(raw_body='{"choices": []}')])
    response = await client.send_message(agent.id, "hello")
    assert response.stop_reason.stop_reason is StopReasonType.invalid_llm_response
    assert len(llm.requests(model_name)) == 1


async def test_unknown_tool_and_malformed_arguments_get_error_returns(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(
        model_name,
        [
            call("launch_rockets", count=3),
            ScriptedReply(tool_calls=[ScriptedToolCall(name="memory_insert", arguments='{"label": "human", ')]),
            call("memory_insert", label="human", unexpected=1),
            text("done"),
        ],
    )
    response = await client.send_message(agent.id, "go")
    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    returns = [m.tool_returns[0] for m in response.messages if m.message_type == "tool_return_message"]
    assert [r.status for r in returns] == ["error", "error", "error"]
    unknown_tool, bad_json, bad_argument = (r.tool_return for r in returns)
    assert unknown_tool is not None and bad_json is not None and bad_argument is not None
    assert unknown_tool.startswith("[ToolConstraintError] Cannot call launch_rockets, valid tools include:")
    assert "not valid JSON" in bad_json
    assert "unexpected" in bad_argument
    # The model saw each error in its next request, paired with its call.
    second = llm.requests(model_name)[1]["messages"]
    assert second[-1]["role"] == "tool" and "ToolConstraintError" in second[-1]["content"]


async def test_memory_tool_error_reaches_the_model_and_changes_nothing(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent(memory_blocks=[{"label": "persona", "value": "fixed", "read_only": True}])
    llm.script(
        model_name,
        [
            call("memory_insert", label="persona", new_string="hacked"),
            call("memory_replace", label="nope", old_string="a", new_string="b"),
            text("ok"),
        ],
    )
    response = await client.send_message(agent.id, "edit")
    returns = [m.tool_returns[0] for m in response.messages if m.message_type == "tool_return_message"]
    assert [r.status for r in returns] == ["error", "error"]
    assert returns[0].tool_return is not None and "read-only" in returns[0].tool_return
    with db.transaction() as session:
        persona = agents.get_agent(session, agent.id).block("persona")
        assert persona is not None and persona.value == "fixed"


async def test_second_message_while_running_is_rejected_and_not_recorded(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent()
    llm.script(model_name, [text("slow answer", delay_s=2.0)])
    first = asyncio.create_task(client.send_message(agent.id, "first"))
    await eventually(lambda: len(llm.requests(model_name)) == 1)

    with pytest.raises(RunRejectedError, match=r"busy with run run-"):
        await client.send_message(agent.id, "second")

    response = await first
    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    with db.transaction() as session:
        stored = messages.list_messages(session, agent.id)
    assert [m.text for m in stored if m.role == "user"] == ["first"]


async def test_unknown_agent_is_a_clear_error(client: PerdureClient) -> None:
    from perdure.store.errors import NotFoundError

    with pytest.raises(NotFoundError, match="agent 'agent-missing' not found"):
        await client.send_message("agent-missing", "hello")


async def test_tool_call_ids_are_assigned_when_the_model_sends_none(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[
                    ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": "x"}, id="")
                ]
            ),
            text("ok"),
        ],
    )
    response = await client.send_message(agent.id, "go")
    (call_message,) = [m for m in response.messages if m.message_type == "tool_call_message"]
    (return_message,) = [m for m in response.messages if m.message_type == "tool_return_message"]
    assert call_message.tool_call.tool_call_id.startswith("call_")
    assert return_message.tool_call_id == call_message.tool_call.tool_call_id
    sent = llm.requests(model_name)[1]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == sent[-1]["tool_call_id"] == call_message.tool_call.tool_call_id


async def test_parallel_calls_are_cut_to_the_first_unless_enabled(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    two_calls = ScriptedReply(
        tool_calls=[
            ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": "one"}),
            ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": "two"}),
        ]
    )
    llm.script(model_name, [two_calls, text("ok")])
    response = await client.send_message(agent.id, "go")
    (call_message,) = [m for m in response.messages if m.message_type == "tool_call_message"]
    assert [c.arguments for c in call_message.tool_calls] == [json.dumps({"label": "human", "new_string": "one"})]
    assert llm.requests(model_name)[0]["parallel_tool_calls"] is False


async def test_agent_deleted_mid_run_ends_the_run_with_error_not_a_hang(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A checkpoint that can never succeed must end the run with a stop reason (Letta PR 2846)."""
    agent = make_agent()
    llm.script(model_name, [text("too late", delay_s=1.5)])
    run = asyncio.create_task(client.send_message(agent.id, "hello"))
    await eventually(lambda: len(llm.requests(model_name)) == 1)
    with db.transaction() as session:
        agents.delete_agent(session, agent.id)

    response = await asyncio.wait_for(run, timeout=30)

    assert response.stop_reason.stop_reason is StopReasonType.error
    description = await client.temporal.get_workflow_handle(workflow_id(agent.id)).describe()
    assert description.status is WorkflowExecutionStatus.FAILED
    state = await client.state(agent.id)
    assert state is not None and f"agent '{agent.id}' not found" in (state.error or "")


async def test_state_query_follows_the_run(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    assert await client.state(agent.id) is None, "an agent that never ran has no workflow"
    llm.script(model_name, [text("thinking...", delay_s=1.0)])
    run = asyncio.create_task(client.send_message(agent.id, "hello"))
    await eventually(lambda: len(llm.requests(model_name)) == 1)

    live = await client.state(agent.id)
    assert live is not None
    assert (live.status.value, live.step, live.current, live.max_steps) == ("running", 1, "llm request, step 1", 50)
    assert live.run_id and live.run_id.startswith("run-")

    response = await run
    done = await client.state(agent.id)
    assert done is not None and done.run_id == response.run_id
    assert (done.status.value, done.stop_reason) == ("completed", StopReasonType.end_turn)
    assert done.usage.step_count == 1


async def test_oversized_message_is_refused_before_anything_starts(
    client: PerdureClient, make_agent: AgentFactory, db: Database
) -> None:
    """Temporal payloads are capped (2 MB); refuse a huge message up front, with the limit named."""
    from pydantic import ValidationError

    agent = make_agent()
    with pytest.raises(ValidationError, match="at most 200000 characters"):
        await client.send_message(agent.id, "x" * 200_001)
    assert await client.state(agent.id) is None, "no run was started"
