"""Sending, answering, paging and cancelling over HTTP with the official letta-client, with
Letta's error answers: 409 PENDING_APPROVAL, 409 busy, 404, 400 and 422."""

from __future__ import annotations

import asyncio
from typing import Any

import letta_client
import pytest
from letta_client import AsyncLetta

from perdure.schemas.agent import AgentState
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from tests.conftest import eventually
from tests.helpers import block_value, call, text
from tests.letta_helpers import approve, body, content, extra, parts

pytestmark = pytest.mark.usefixtures("worker")

WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def guarded(make_agent: Any) -> AgentState:
    return make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
    )


async def pause(letta: AsyncLetta, llm: ScriptedLLMServer, model_name: str, agent_id: str) -> Any:
    llm.script(model_name, [call("core_memory_append", label="human", content="likes tea")])
    paused = await letta.agents.messages.create(agent_id, input="Remember that I like tea.")
    assert paused.stop_reason.stop_reason == "requires_approval"
    assert [m.message_type for m in paused.messages] == ["approval_request_message"]
    return parts(paused)[0]


async def test_approve_a_pending_call(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str, db: Any
) -> None:
    agent = guarded(make_agent)
    request = await pause(letta, llm, model_name, agent.id)
    call_id = request.tool_call.tool_call_id

    with pytest.raises(letta_client.ConflictError) as pending:
        await letta.agents.messages.create(agent.id, input="Are you there?")
    detail = body(pending.value)["detail"]
    assert detail["code"] == "PENDING_APPROVAL"
    assert detail["message"].startswith("Cannot send a new message: The agent is waiting for approval")
    assert detail["pending_request_id"] == request.id

    with pytest.raises(letta_client.BadRequestError, match="Invalid tool call IDs"):
        await letta.agents.messages.create(
            agent.id,
            messages=[approve("call_nope")],
        )

    llm.script(model_name, [text("Noted: tea.")])
    approval = approve(call_id)
    done = await letta.agents.messages.create(agent.id, messages=[approval])
    assert done.stop_reason.stop_reason == "end_turn"
    assert [m.message_type for m in done.messages] == ["tool_return_message", "assistant_message"]
    assert parts(done)[0].tool_call_id == call_id and parts(done)[0].status == "success"
    assert block_value(db, agent.id) == "likes tea"

    history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    answer = next(m for m in history if m.message_type == "approval_response_message")
    assert (answer.approve, answer.approval_request_id) == (True, request.id), "Letta's deprecated fields are kept"

    other = approve("call_other")
    with pytest.raises(letta_client.BadRequestError, match="No tool call is currently awaiting approval"):
        await letta.agents.messages.create(agent.id, messages=[other])


async def test_deny_with_the_deprecated_single_approval_form(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str, db: Any
) -> None:
    agent = guarded(make_agent)
    request = await pause(letta, llm, model_name, agent.id)
    follow_up: Any = [{"type": "approval", "approve": True}, {"role": "user", "content": "and then?"}]
    with pytest.raises(letta_client.UnprocessableEntityError, match="messages after the answers are taken only when"):
        await letta.agents.messages.create(agent.id, messages=follow_up)
    stale: Any = {"type": "approval", "approve": True, "approval_request_id": "message-stale"}
    with pytest.raises(letta_client.BadRequestError, match="Invalid approval request ID"):
        await letta.agents.messages.create(agent.id, messages=[stale])
    llm.script(model_name, [text("Fine, I will not.")])
    denial: Any = {"type": "approval", "approve": False, "approval_request_id": request.id, "reason": "not now"}
    done = await letta.agents.messages.create(agent.id, messages=[denial])
    assert done.stop_reason.stop_reason == "end_turn"
    assert parts(done)[0].message_type == "tool_return_message" and parts(done)[0].status == "error"
    assert "not now" in parts(done)[0].tool_return
    assert block_value(db, agent.id) == "", "the denied call did not run"


@pytest.mark.parametrize("shape", ["tool_return", "approval"])
async def test_return_a_client_tool_result(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str, shape: str
) -> None:
    agent = make_agent()
    llm.script(model_name, [call("get_weather", city="Lisbon")])
    paused = await letta.agents.messages.create(agent.id, input="Weather in Lisbon?", client_tools=[WEATHER])
    assert paused.stop_reason.stop_reason == "requires_approval"
    call_id = parts(paused)[-1].tool_call.tool_call_id
    result = {"type": "tool", "tool_call_id": call_id, "status": "success", "tool_return": "sunny, 24 C"}
    message: Any = (
        {"type": "tool_return", "tool_returns": [result]}
        if shape == "tool_return"
        else {"type": "approval", "approvals": [result]}
    )
    llm.script(model_name, [text("It is sunny in Lisbon.")])
    done = await letta.agents.messages.create(agent.id, messages=[message])
    assert [m.message_type for m in done.messages] == ["tool_return_message", "assistant_message"]
    assert parts(done)[0].tool_return == "sunny, 24 C"
    assert "sunny, 24 C" in str(llm.requests(model_name)[-1]["messages"][-1])


async def test_message_types_max_steps_and_parts(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(
        model_name,
        [call("memory_insert", label="human", new_str="a"), call("memory_insert", label="human", new_str="b")],
    )
    capped = await letta.agents.messages.create(
        agent.id,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Note a,"}, {"type": "text", "text": "then b."}],
                "otid": "otid-1",
            }
        ],
        max_steps=1,
        include_return_message_types=["tool_return_message"],
    )
    assert capped.stop_reason.stop_reason == "max_steps"
    assert [m.message_type for m in capped.messages] == ["tool_return_message"]
    assert llm.requests(model_name)[0]["messages"][-1]["content"] == "Note a,\nthen b."
    history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    assert (history[0].message_type, history[0].otid) == ("user_message", "otid-1"), "the client's otid is kept"


async def test_the_writers_name_and_sender_id_are_kept_and_not_sent_to_the_model(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    """A conversation of several people: each message's `name` and `sender_id` come back with it,
    in the response and in the history; the model reads the text alone."""
    agent = make_agent()
    llm.script(model_name, [text("Hello Ada."), text("Hello Bo.")])
    first = await letta.agents.messages.create(
        agent.id, messages=[{"role": "user", "content": "Hi, I am Ada.", "name": "Ada", "sender_id": "user-ada"}]
    )
    await letta.agents.messages.create(agent.id, messages=[{"role": "user", "content": "Hi.", "sender_id": "user-bo"}])

    history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    users = [(m.content, m.name, m.sender_id) for m in history if m.message_type == "user_message"]
    assert users == [("Hi, I am Ada.", "Ada", "user-ada"), ("Hi.", None, "user-bo")]
    assert first.stop_reason.stop_reason == "end_turn"
    assert llm.requests(model_name)[0]["messages"][-1] == {"role": "user", "content": "Hi, I am Ada."}


async def test_bad_requests_get_one_readable_line(letta: AsyncLetta, make_agent: Any) -> None:
    agent = make_agent()
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "give exactly one of `messages` and `input`"),
        ({"input": "a", "messages": [{"role": "user", "content": "b"}]}, "give exactly one of"),
        ({"input": "x", "max_steps": 0}, "invalid body.max_steps"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "only text content is supported, got image",
        ),
        ({"input": "x", "override_model": "openai/gpt-4o"}, "override_model is not supported"),
    ]
    for request, expected in cases:
        with pytest.raises(letta_client.UnprocessableEntityError) as refused:
            await letta.agents.messages.create(agent.id, extra_body=request)
        detail = body(refused.value)["detail"]
        assert isinstance(detail, str) and expected in detail, request
    with pytest.raises(letta_client.NotFoundError, match="agent 'agent-missing' not found"):
        await letta.agents.messages.create("agent-missing", input="hello")


async def test_busy_agent_and_cancel(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent()
    with pytest.raises(letta_client.ConflictError, match="no run to cancel"):
        await letta.agents.messages.cancel(agent.id)
    llm.script(model_name, [ScriptedReply(content="too late", delay_s=30)])
    running = asyncio.create_task(letta.agents.messages.create(agent.id, input="a slow question"))
    await eventually(lambda: llm.in_flight(model_name) == 1, timeout=30)
    with pytest.raises(letta_client.ConflictError, match="is busy with run"):
        await letta.agents.messages.create(agent.id, input="and another")
    with pytest.raises(letta_client.ConflictError, match="none of the runs"):
        await letta.agents.messages.cancel(agent.id, run_ids=["run-other"])

    cancelled = await letta.agents.messages.cancel(agent.id)
    response = await asyncio.wait_for(running, timeout=30)
    assert response.stop_reason.stop_reason == "cancelled"
    assert cancelled == {extra(response, "run_id"): "cancelled"}
    with pytest.raises(letta_client.ConflictError, match="no live run to cancel"):
        await letta.agents.messages.cancel(agent.id)
    run = await letta.runs.retrieve(extra(response, "run_id"))
    assert (run.status, run.stop_reason, run.agent_id) == ("cancelled", "cancelled", agent.id)


async def test_paging_through_history(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent()
    for turn in range(3):
        llm.script(model_name, [text(f"answer {turn}")])
        await letta.agents.messages.create(agent.id, input=f"question {turn}")
    newest_first = [m async for m in letta.agents.messages.list(agent.id)]
    assert [content(m) for m in newest_first] == [
        "answer 2",
        "question 2",
        "answer 1",
        "question 1",
        "answer 0",
        "question 0",
    ]
    assert all(m.otid and m.date and m.run_id for m in newest_first), "every message carries its otid, date and run"
    page = await letta.agents.messages.list(agent.id, limit=2)
    assert [content(m) for m in page.items] == ["answer 2", "question 2"]
    paged = [m async for m in letta.agents.messages.list(agent.id, limit=2)]
    assert [m.id for m in paged] == [m.id for m in newest_first], (
        "the SDK's auto-paging (after=last id) walks every message once"
    )
    oldest_first = [m async for m in letta.agents.messages.list(agent.id, order="asc", limit=4)]
    assert [m.id for m in oldest_first] == [m.id for m in reversed(newest_first)]
    before = await letta.agents.messages.list(agent.id, before=newest_first[3].id, limit=2)
    assert [content(m) for m in before.items] == ["question 2", "answer 1"], (
        "the two right before the cursor, newest first"
    )
    only_users = await letta.agents.messages.list(agent.id, include_return_message_types=["user_message"])
    assert [content(m) for m in only_users.items] == ["question 2", "question 1", "question 0"]
    with pytest.raises(letta_client.NotFoundError, match="message 'message-nope' not found"):
        await letta.agents.messages.list(agent.id, after="message-nope")
