"""The real local model drives the loop: llama.cpp serving SmolLM2-135M, tools by JSON schema.

No stand-in here: the model decides. What must hold whatever it decides: the run reaches a
valid stop reason within `max_steps`, every tool call it made is a JSON object that fits its
tool's schema, and a memory edit it made is stored.
"""

from __future__ import annotations

import json


from perdure.agents import create_agent
from perdure.schemas.agent import LOCAL_MODEL, AgentCreate
from perdure.schemas.letta import AssistantMessage, LettaStopReason, StopReasonType, ToolCallMessage
from perdure.schemas.stream import LettaErrorMessage
from perdure.store import agents, messages, runs
from perdure.store.db import Database
from perdure.tools.registry import get_tool_defs, validate_arguments
from starter.client import PerdureClient
from starter.updates import message_request
from starter.local_model import LocalModelServer

MAX_STEPS = 4
VALID_STOPS = (StopReasonType.end_turn, StopReasonType.max_steps, StopReasonType.invalid_llm_response)


async def test_a_run_on_the_local_model_stops_validly_with_well_formed_calls(
    client: PerdureClient, db: Database, local_model: LocalModelServer
) -> None:
    agent = create_agent(
        db,
        AgentCreate.model_validate(
            {
                "name": "local",
                "model": LOCAL_MODEL,
                "llm_config": {"endpoint": local_model.base_url},
                "memory_blocks": [{"label": "human", "value": "", "limit": 300}],
                "tools": ["core_memory_append"],
                "include_base_tools": False,
            }
        ),
    )
    assert agent.llm_config.context_window == 8_192 and agent.llm_config.tool_call_mode == "json_schema"

    events = [
        item.event
        async for item in client.stream_message(
            agent.id,
            message_request("My name is Ada. Please remember my name.", max_steps=MAX_STEPS, stream_tokens=True),
        )
    ]

    stops = [e.stop_reason for e in events if isinstance(e, LettaStopReason)]
    assert len(stops) == 1 and stops[0] in VALID_STOPS, events[-3:]
    with db.transaction(read_only=True) as session:
        stored = messages.list_messages(session, agent.id)
        tools = get_tool_defs(session, ["core_memory_append"])
        human = next(b for b in agents.get_agent(session, agent.id).blocks if b.label == "human")
    if stops[0] is StopReasonType.invalid_llm_response:
        # A 135M model may answer with an empty `response` or run out of tokens mid-answer:
        # the stream says so, and the store keeps every step before it.
        [failure] = [e for e in events if isinstance(e, LettaErrorMessage)]
        assert failure.detail and ("structured answer" in failure.detail or "JSON" in failure.detail), failure
    calls = [call for m in stored for call in m.tool_calls]
    assert len([m for m in stored if m.role == "assistant"]) <= MAX_STEPS
    for call in calls:
        arguments = json.loads(call.arguments)
        assert isinstance(arguments, dict)
        assert validate_arguments(tools[call.name], arguments) is None, call
    succeeded = {r.tool_call_id for m in stored for r in m.tool_returns if r.status == "success"}
    appended = [json.loads(c.arguments)["content"] for c in calls if c.id in succeeded]
    for content in appended:
        assert content in human.value, "a memory edit the model made is stored"
    streamed_calls = {e.tool_call.tool_call_id for e in events if isinstance(e, ToolCallMessage)}
    unstored = streamed_calls - {c.id for c in calls}
    assert len(unstored) <= (1 if stops[0] is StopReasonType.invalid_llm_response else 0), (
        "streamed calls carry the stored ids"
    )
    answers = [m for m in stored if m.role == "assistant" and m.text]
    streamed = {e.id: "" for e in events if isinstance(e, AssistantMessage)}
    for e in events:
        if isinstance(e, AssistantMessage):
            streamed[e.id] += e.content
    if stops[0] is not StopReasonType.invalid_llm_response:
        assert streamed == {m.id: m.text for m in answers}, "the streamed text is the stored answer"


async def test_a_worker_without_the_local_model_says_how_to_get_one(client: PerdureClient, db: Database) -> None:
    """This test worker was started without PERDURE_LOCAL_MODEL_URL, as `perdure worker` is."""
    agent = create_agent(db, AgentCreate(name="no-local", model=LOCAL_MODEL))

    response = await client.send_message(agent.id, "Hello")

    assert response.stop_reason.stop_reason is StopReasonType.llm_api_error
    with db.transaction(read_only=True) as session:
        error = runs.get_run(session, response.run_id).error
    assert error is not None and "perdure dev" in error and "PERDURE_LOCAL_MODEL_URL" in error
