"""What durability promises: crashes cost a repeated activity at most, history stays small,
secrets stay out of history."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from perdure.schemas.letta import AssistantMessage, StopReasonType
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.settings import Settings
from perdure.store import agents, messages
from perdure.store.db import Database
from starter.client import PerdureClient
from starter.devserver import temporal_binary
from tests.conftest import AgentFactory, eventually
from perdure.names import workflow_id

REPO = Path(__file__).resolve().parent.parent


def insert(value: str) -> ScriptedReply:
    return ScriptedReply(
        tool_calls=[ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": value})]
    )


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "worker.py"], cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def worker_env(temporal_address: str, settings: Settings, llm: ScriptedLLMServer, queue: str) -> dict[str, str]:
    """A worker process's environment: this test's server, database, task queue and model."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_address,
        "PERDURE_DATABASE_URL": settings.database_url,
        "PERDURE_TASK_QUEUE": queue,
        "PERDURE_SCRIPTED_BASE_URL": llm.base_url,
    }


async def test_killed_worker_resumes_the_run_without_duplicates(
    temporal_env: WorkflowEnvironment,
    temporal_address: str,
    settings: Settings,
    db: Database,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    queue = f"perdure-crash-{uuid.uuid4().hex[:8]}"
    env = worker_env(temporal_address, settings, llm, queue)
    crash_client = PerdureClient(temporal_env.client, db, queue)
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(
        model_name,
        [insert("Likes tea."), ScriptedReply(content="never delivered", delay_s=5), ScriptedReply(content="final")],
    )

    worker = start_worker(env, tmp_path / "worker.log")
    run = asyncio.create_task(crash_client.send_message(agent.id, "remember that I like tea"))
    await eventually(lambda: len(llm.requests(model_name)) == 2, timeout=30)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    replacement = start_worker(env, tmp_path / "worker.log")
    try:
        response = await asyncio.wait_for(run, timeout=90)
    finally:
        replacement.send_signal(signal.SIGTERM)
        replacement.wait(timeout=30)
    assert replacement.returncode == 0, "SIGTERM stops the worker cleanly"
    assert "worker stopped" in (tmp_path / "worker.log").read_text()

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert [m.message_type for m in response.messages] == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert isinstance(response.messages[-1], AssistantMessage)
    assert response.messages[-1].content == "final"
    with db.transaction() as session:
        stored = messages.list_messages(session, agent.id)
        state = agents.get_agent(session, agent.id)
    assert len({m.id for m in stored}) == len(stored) == 5  # system + the four above
    assert state.message_ids == [m.id for m in stored]
    human = state.block("human")
    assert human is not None
    assert human.value.count("Likes tea.") == 1


async def test_a_lost_worker_does_not_use_up_the_providers_attempts(
    temporal_env: WorkflowEnvironment,
    temporal_address: str,
    settings: Settings,
    db: Database,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    """Four provider failures, then the worker dies mid-call: the fifth attempt is the worker's
    loss, not the provider's, so the call is asked again and the run ends well."""
    queue = f"perdure-budget-{uuid.uuid4().hex[:8]}"
    env = worker_env(temporal_address, settings, llm, queue)
    crash_client = PerdureClient(temporal_env.client, db, queue)
    agent = make_agent()
    overloaded = ScriptedReply(status=503, error={"error": {"message": "overloaded"}}, headers={"retry-after-ms": "0"})
    slow = ScriptedReply(content="never delivered", delay_s=5)
    llm.script(model_name, [overloaded, overloaded, overloaded, overloaded, slow, ScriptedReply(content="final")])

    worker = start_worker(env, tmp_path / "worker.log")
    run = asyncio.create_task(crash_client.send_message(agent.id, "hello"))
    await eventually(lambda: len(llm.requests(model_name)) == 5, timeout=30)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    replacement = start_worker(env, tmp_path / "worker.log")
    try:
        response = await asyncio.wait_for(run, timeout=90)
    finally:
        replacement.send_signal(signal.SIGTERM)
        replacement.wait(timeout=30)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert len(llm.requests(model_name)) == 6
    assert isinstance(response.messages[-1], AssistantMessage) and response.messages[-1].content == "final"


async def history_bytes(env: WorkflowEnvironment, agent_id: str) -> int:
    history = await env.client.get_workflow_handle(workflow_id(agent_id)).fetch_history()
    return len(history.to_json())


async def test_history_does_not_grow_with_context_size(
    temporal_env: WorkflowEnvironment, client: PerdureClient, llm: ScriptedLLMServer, make_agent: AgentFactory
) -> None:
    sizes = {}
    for label, block_size in (("small", 1_000), ("large", 100_000)):
        model = f"size-{label}-{uuid.uuid4().hex[:6]}"
        agent = make_agent(
            memory_blocks=[{"label": "human", "value": "x" * block_size, "limit": block_size}],
            llm_config={"model": f"scripted/{model}"},
        )
        llm.script(model, [insert("one"), insert("two"), insert("three"), ScriptedReply(content="done")])
        response = await client.send_message(agent.id, "go")
        assert response.usage.step_count == 4
        sizes[label] = await history_bytes(temporal_env, agent.id)
    # Ids differ run to run, so allow a little slack; a 99 KB larger block must add nothing real.
    assert abs(sizes["large"] - sizes["small"]) < 1_000, sizes


async def test_api_key_never_enters_history(
    temporal_env: WorkflowEnvironment,
    temporal_address: str,
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
) -> None:
    secret = f"sk-test-{uuid.uuid4().hex}"
    os.environ["OPENAI_API_KEY"] = secret
    try:
        agent = make_agent(llm_config={"model": f"openai/{model_name}"})
        llm.script(model_name, [ScriptedReply(content="hi")])
        response = await client.send_message(agent.id, "hello")
    finally:
        del os.environ["OPENAI_API_KEY"]
    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert llm.requests(model_name), "the request reached the endpoint"
    shown = subprocess.run(
        [
            temporal_binary(),
            "workflow",
            "show",
            "--workflow-id",
            workflow_id(agent.id),
            "--address",
            temporal_address,
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(shown), "temporal workflow show printed the history"
    assert agent.id in shown
    assert secret not in shown


async def test_large_tool_return_is_stored_whole_but_only_previewed_in_history(
    temporal_env: WorkflowEnvironment,
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
) -> None:
    """History carries a preview of a tool's return; the database and the model get all of it."""
    agent = make_agent()
    tail = f"tail-{uuid.uuid4().hex}"
    llm.script(model_name, [ScriptedReply(content="noted")])
    await client.send_message(agent.id, "needle " + "x" * 60_000 + f" {tail}")
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[ScriptedToolCall(name="conversation_search", arguments={"query": "needle", "limit": 1})]
            ),
            ScriptedReply(content="found it"),
        ],
    )
    response = await client.send_message(agent.id, "find the needle")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    (tool_message,) = [m for m in response.messages if m.message_type == "tool_return_message"]
    assert tail in (tool_message.tool_return or ""), "the stored return is whole"
    assert tail in llm.requests(model_name)[-1]["messages"][-1]["content"], "the model saw all of it"
    history = await client.temporal.get_workflow_handle(workflow_id(agent.id)).fetch_history()
    assert tail not in history.to_json(), "history holds only a preview"
    assert len(history.to_json()) < 40_000
    with db.transaction() as session:
        stored = messages.list_messages(session, agent.id, run_id=response.run_id)
    assert tail in (stored[-2].tool_returns[0].func_response or "")
