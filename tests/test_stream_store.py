"""A run's stream in the database: one offset space per run, written by the activities (token
chunks, committed steps, outcomes) and read by any process, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import delete, func, select
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.testing import ActivityEnvironment

from activities.run_stream import StreamActivities
from activities.runs import RunActivities
from perdure import names
from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.letta import AssistantMessage, LettaStopReason, LettaUsageStatistics, StopReasonType
from perdure.schemas.messages import Message, TextContent
from perdure.schemas.run import AppendStreamInput, CheckpointInput, StepRecord
from perdure.schemas.stream import STREAM_TOPIC
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from perdure.store import stream_chunks
from perdure.store.db import Database
from perdure.store.tables import StreamChunkRow
from starter.client import PerdureClient
from starter.stream import read_stream
from starter.updates import message_request
from tests.conftest import AgentFactory
from tests.test_approvals import approval_agent
from tests.test_store_concurrency import WRITERS, all_at_once
from tests.test_streaming import ANSWER, call, collect, kinds

pytestmark = pytest.mark.both_stores

RUN_KEY = ActivityEnvironment().info.workflow_run_id or ""
"""The Temporal run id the test activity environment gives its activities."""


def stored_rows(db: Database, key: str) -> list[int]:
    with db.transaction(read_only=True) as session:
        return sorted(session.scalars(select(StreamChunkRow.seq).where(StreamChunkRow.run_key == key)))


def test_writers_of_one_run_at_once_get_one_offset_each(db: Database) -> None:
    key = f"run-key-{uuid.uuid4()}"

    def write(n: int) -> int | None:
        with db.transaction() as session:
            return stream_chunks.append(session, key, "agent-x", [{"n": n, "part": 0}, {"n": n, "part": 1}])

    firsts = all_at_once([lambda n=n: write(n) for n in range(WRITERS)])

    assert sorted(f for f in firsts if f is not None) == list(range(0, 2 * WRITERS, 2))
    with db.transaction(read_only=True) as session:
        events = stream_chunks.read(session, key, 0)
    assert [e.offset for e in events] == list(range(2 * WRITERS))
    assert all(events[i].event["n"] == events[i + 1].event["n"] for i in range(0, len(events), 2)), (
        "a write's events stay together"
    )


def test_a_retried_checkpoint_or_pause_writes_its_events_once(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent()
    with db.transaction() as session:
        session.execute(delete(StreamChunkRow).where(StreamChunkRow.run_key == RUN_KEY))
    step = StepRecord(id=f"step-{uuid.uuid4()}", run_id="run-retried", agent_id=agent.id, step_number=1)
    answer = Message(id=f"message-{uuid.uuid4()}", agent_id=agent.id, role="assistant", step_id=step.id)
    answer.content = [TextContent(text="Hello.")]
    commit = CheckpointInput(agent_id=agent.id, messages=[answer], step=step, stream_in_store=True)
    pause = AppendStreamInput(agent_id=agent.id, events=[{"message_type": "stop_reason"}], dedup_key="pause:x")

    for _ in range(2):
        ActivityEnvironment().run(RunActivities(db).checkpoint_step, commit)
        ActivityEnvironment().run(StreamActivities(db).append_stream, pause)

    with db.transaction(read_only=True) as session:
        events = stream_chunks.read(session, RUN_KEY, 0)
    assert [e.event["message_type"] for e in events] == ["assistant_message", "stop_reason"]


async def test_a_streamed_run_across_a_pause_is_in_the_store_and_not_in_history(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(
        model_name,
        [
            call("core_memory_append", "call_ask", label="human", content="Ada"),
            ScriptedReply(content=ANSWER, chunk_delay_s=0.02),
        ],
    )

    paused = await collect(client.stream_message(agent.id, message_request("Remember me as Ada", stream_tokens=True)))
    resumed = await collect(client.stream_answer(agent.id, [ApprovalAnswer(tool_call_id="call_ask", approve=True)]))

    assert kinds(paused)[-2:] == ["stop_reason", "usage_statistics"]
    assert kinds(resumed)[-2:] == ["stop_reason", "usage_statistics"]
    assert "".join(i.event.content for i in resumed if isinstance(i.event, AssistantMessage)) == ANSWER
    whole = paused + resumed
    handle = client.temporal.get_workflow_handle(names.workflow_id(agent.id))
    key = (await handle.describe()).run_id
    assert stored_rows(db, key) == [i.offset for i in whole] == list(range(len(whole)))
    middle = len(whole) // 2
    assert await collect(client.follow(agent.id, middle)) == whole[middle:], "a reader resumes from any offset"
    history = await handle.fetch_history()
    signalled = [e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert signalled == [], "neither tokens nor steps travel as signals"
    with db.transaction(read_only=True) as session:
        count = session.scalar(select(func.count()).where(StreamChunkRow.agent_id == agent.id))
    assert count == len(whole)


async def test_a_run_whose_stream_is_in_its_workflow_is_read_from_there(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Runs started before the stream moved to the store publish into their Workflow Stream;
    here a live run's events are published there from outside (as its activities did)."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [call("core_memory_append", "call_old", label="human", content="Ada")])
    await client.send_message(agent.id, "Remember me as Ada")
    handle = client.temporal.get_workflow_handle(names.workflow_id(agent.id))
    with db.transaction() as session:
        session.execute(delete(StreamChunkRow).where(StreamChunkRow.run_key == (await handle.describe()).run_id))
    old = [
        AssistantMessage(id="message-old", content="Saved in history."),
        LettaStopReason(stop_reason=StopReasonType.requires_approval),
        LettaUsageStatistics(step_count=1),
    ]
    publisher = WorkflowStreamClient.create(client.temporal, names.workflow_id(agent.id))
    async with publisher:
        for event in old:
            publisher.topic(STREAM_TOPIC).publish(event.model_dump(mode="json", exclude_none=True))

    items = await collect(client.follow(agent.id))

    assert [i.event for i in items] == old
    assert [i.offset for i in items] == [0, 1, 2]


async def test_a_reader_of_a_run_ended_before_its_last_event_stops(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [call("core_memory_append", "call_cut", label="human", content="Ada")])
    paused = await collect(client.stream_message(agent.id, message_request("Remember me", stream_tokens=True)))
    handle = client.temporal.get_workflow_handle(names.workflow_id(agent.id))
    reader = asyncio.ensure_future(collect(read_stream(client.temporal, client.db, agent.id, paused[-1].offset + 1)))
    await handle.terminate("cut short")

    assert await reader == [], "the reader sees the run closed and stops, with nothing after the pause"
