"""Sending the same message again never runs its turn twice, and a send rides through an outage.

A message's `otid` (Letta's field; the client makes one when the caller gives none) identifies
its turn: while the run lives, it is the update id Temporal deduplicates by; once the run has
ended, the begin activity and the client find the run that took it in the store.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

from temporalio.client import WorkflowExecutionStatus

from perdure.names import workflow_id
from perdure.schemas.letta import StopReasonType
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from perdure.settings import Settings
from perdure.store import runs
from perdure.store.db import Database
from starter.client import PerdureClient
from starter.updates import message_request
from starter.outages import RunUnfinishedError
from starter.stream import StreamItem
from tests.conftest import AgentFactory, eventually
from tests.helpers import call
from tests.ports import free_port
from tests.test_pause_lifecycle import (
    approval_agent,
    connect,
    run_count,
    start_dev_server,
    start_worker,
    stop_process,
    stored_messages,
    worker_env,
)


LATER_RUNS = 250
"""More runs than the 200 latest that a retried send used to be looked for in."""
OUTAGE_S = 12.0
"""Longer than the SDK's own retries of an unavailable server (about 10 s), so the client's
riding through is what carries a request over it."""


ANSWER_AND_SPARES = [ScriptedReply(content="Noted.", delay_s=3.0), *[ScriptedReply(content="Noted.")] * 3]
"""The slow answer the outage falls in, and answers for the LLM call's retries: a completion the
worker could not report while the server was down is asked for again once it is back (only
the attempt that completes is stored)."""


def user_texts(db: Database, agent_id: str) -> list[str]:
    return [m.text for m in stored_messages(db, agent_id) if m.role == "user"]


async def test_a_request_sent_again_returns_the_first_runs_outcome(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content="once"), ScriptedReply(content="twice")])
    request = message_request("hello")

    first = await client.start_run(agent.id, request)
    again = await client.start_run(agent.id, request)

    assert again.run_id == first.run_id
    assert again.stop_reason is first.stop_reason is StopReasonType.end_turn
    assert set(again.message_ids) == set(first.message_ids)
    assert len(llm.requests(model_name)) == 1
    assert user_texts(db, agent.id) == ["hello"]
    assert run_count(db, agent.id) == 1


async def test_a_request_sent_again_after_many_later_runs_returns_the_first_runs_outcome(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The turn is found by its key however many runs came after it (an indexed read, not a
    scan of the agent's latest runs). A run after it closes the workflow execution that took
    it, so only the store can answer the retry."""
    agent = make_agent()
    llm.script(
        model_name, [ScriptedReply(content="once"), ScriptedReply(content="next"), ScriptedReply(content="twice")]
    )
    request = message_request("hello")
    first = await client.start_run(agent.id, request)
    await client.start_run(agent.id, message_request("next"))
    with db.transaction() as session:
        for number in range(LATER_RUNS):
            runs.create_run(
                session,
                run_id=f"run-later-{number}",
                agent_id=agent.id,
                workflow_id=workflow_id(agent.id),
                request=message_request(f"later {number}"),
            )

    again = await client.start_run(agent.id, request)

    assert again.run_id == first.run_id
    assert len(llm.requests(model_name)) == 2
    assert run_count(db, agent.id) == 2 + LATER_RUNS


async def test_the_same_request_sent_twice_at_once_runs_once(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The second send arrives while the first run lives: Temporal answers it by update id."""
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content="slow", delay_s=1.0), ScriptedReply(content="never")])
    request = message_request("hello")

    first, second = await asyncio.gather(client.start_run(agent.id, request), client.start_run(agent.id, request))

    assert first.run_id == second.run_id
    assert len(llm.requests(model_name)) == 1
    assert user_texts(db, agent.id) == ["hello"]


async def test_a_fresh_otid_is_a_new_turn(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content="one"), ScriptedReply(content="two")])

    first = await client.start_run(agent.id, message_request("hello"))
    second = await client.start_run(agent.id, message_request("hello"))

    assert first.run_id != second.run_id
    assert user_texts(db, agent.id) == ["hello", "hello"]


async def test_the_begin_activity_refuses_a_turn_taken_before(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A retry that the client's own look-up cannot catch (it streams) reaches the workflow:
    the begin activity refuses it, and the stream is the first run's."""
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content="once"), ScriptedReply(content="twice")])
    request = message_request("hello", stream_tokens=True)
    first = await client.start_run(agent.id, request)

    events = [item.event async for item in client.stream_message(agent.id, request)]

    assert [e.message_type for e in events][-2:] == ["stop_reason", "usage_statistics"]
    assert {getattr(e, "run_id", first.run_id) for e in events} == {first.run_id}
    assert len(llm.requests(model_name)) == 1
    assert run_count(db, agent.id) == 1


async def test_a_retry_of_a_run_that_paused_and_ended_returns_its_pause(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The run paused for approval and ended at its approval timeout; sending the same message
    again returns that pause instead of Letta's 'waiting for approval' refusal."""
    agent = approval_agent(make_agent)
    llm.script(model_name, [call("core_memory_append", label="human", content="Likes tea.")])
    request = message_request("remember tea", approval_timeout_seconds=0.5)
    first = await client.start_run(agent.id, request)
    assert first.stop_reason is StopReasonType.requires_approval
    await eventually(lambda: _closed(client, agent.id), timeout=20)

    again = await client.start_run(agent.id, request)

    assert again.run_id == first.run_id
    assert again.stop_reason is StopReasonType.requires_approval
    assert len(llm.requests(model_name)) == 1


async def _closed(client: PerdureClient, agent_id: str) -> bool:
    description = await client.temporal.get_workflow_handle(workflow_id(agent_id)).describe()
    return description.status is not WorkflowExecutionStatus.RUNNING


async def test_a_send_rides_through_a_server_restart_and_runs_once(
    settings: Settings, db: Database, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, tmp_path: Path
) -> None:
    """The dev server is killed while the model answers and comes back on the same file: the
    waiting send retries with the same key, and the turn runs exactly once."""
    port = free_port()
    state_file, server_log, worker_log = tmp_path / "temporal.db", tmp_path / "server.log", tmp_path / "worker.log"
    queue = f"perdure-outage-{uuid.uuid4().hex[:8]}"
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(
        model_name,
        [call("memory_insert", label="human", new_string="Likes tea."), *ANSWER_AND_SPARES],
    )
    processes: list[asyncio.subprocess.Process] = []
    try:
        processes.append(await start_dev_server(port, state_file, server_log))
        sender = PerdureClient(await connect(port), db, queue, timeout_s=120)
        processes.append(await start_worker(worker_env(f"127.0.0.1:{port}", settings, llm, queue), worker_log))
        send = asyncio.create_task(sender.send_message(agent.id, "remember that I like tea"))
        await eventually(lambda: len(llm.requests(model_name)) == 2, timeout=60)

        await stop_process(processes[0], signal.SIGKILL)
        await asyncio.sleep(OUTAGE_S)
        processes.append(await start_dev_server(port, state_file, server_log))
        response = await asyncio.wait_for(send, timeout=120)
    finally:
        for process in reversed(processes):
            await stop_process(process)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert user_texts(db, agent.id) == ["remember that I like tea"]
    assert run_count(db, agent.id) == 1
    assert [m.text for m in stored_messages(db, agent.id) if m.role == "assistant" and m.text].count("Noted.") == 1


async def test_a_follower_rides_through_a_server_restart_without_gaps_or_repeats(
    settings: Settings, db: Database, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, tmp_path: Path
) -> None:
    port = free_port()
    state_file, server_log, worker_log = tmp_path / "temporal.db", tmp_path / "server.log", tmp_path / "worker.log"
    queue = f"perdure-follow-{uuid.uuid4().hex[:8]}"
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(
        model_name,
        [
            call("memory_insert", label="human", new_string="Likes tea.").model_copy(update={"delay_s": 1.0}),
            *ANSWER_AND_SPARES,
        ],
    )
    processes: list[asyncio.subprocess.Process] = []
    try:
        processes.append(await start_dev_server(port, state_file, server_log))
        temporal = await connect(port)
        sender = PerdureClient(temporal, db, queue, timeout_s=120)
        processes.append(await start_worker(worker_env(f"127.0.0.1:{port}", settings, llm, queue), worker_log))
        send = asyncio.create_task(sender.send_message(agent.id, "remember that I like tea"))
        await eventually(lambda: len(llm.requests(model_name)) == 1, timeout=60)
        follower = PerdureClient(temporal, db, queue, timeout_s=120)
        followed = asyncio.create_task(_collect(follower, agent.id))
        await eventually(lambda: len(llm.requests(model_name)) == 2, timeout=60)

        await stop_process(processes[0], signal.SIGKILL)
        await asyncio.sleep(OUTAGE_S)
        processes.append(await start_dev_server(port, state_file, server_log))
        await asyncio.wait_for(send, timeout=120)
        items = await asyncio.wait_for(followed, timeout=120)
    finally:
        for process in reversed(processes):
            await stop_process(process)

    assert [item.offset for item in items] == list(range(len(items)))
    assert [item.event.message_type for item in items][-2:] == ["stop_reason", "usage_statistics"]


async def _collect(client: PerdureClient, agent_id: str) -> list[StreamItem]:
    return [item async for item in client.follow(agent_id)]


async def test_a_send_gives_up_after_its_timeout_with_one_line(
    settings: Settings, db: Database, llm: ScriptedLLMServer, make_agent: AgentFactory, tmp_path: Path
) -> None:
    port = free_port()
    server = await start_dev_server(port, tmp_path / "temporal.db", tmp_path / "server.log")
    try:
        sender = PerdureClient(await connect(port), db, "perdure-nobody", timeout_s=2)
    finally:
        await stop_process(server, signal.SIGKILL)
    agent = make_agent()

    try:
        await sender.send_message(agent.id, "hello")
    except RunUnfinishedError as err:
        reason = str(err)
    else:
        raise AssertionError("the send did not give up")

    assert "\n" not in reason
    assert "did not answer within 2 s" in reason and f"perdure status {agent.id}" in reason
    assert "no run has recorded it yet" in reason
