"""Replay: the current workflow code must reproduce recorded histories exactly.

`tests/histories/` holds histories recorded from earlier versions of the loop; a loop change
that would break a running workflow fails here, and belongs behind `workflow.patched()`.
Record new ones with `PERDURE_RECORD_HISTORIES=1 pytest tests/test_replay.py` (they are
written as `<scenario>.json`; rename them with the release they come from before committing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from perdure.schemas.approvals import ApprovalAnswer, ClientTool, ClientToolReturn
from perdure.schemas.letta import StopReasonType
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from starter.client import PerdureClient
from starter.updates import message_request
from tests.conftest import AgentFactory, eventually
from tests.test_approvals import approval_agent
from tests.test_context_window import OVERFLOW, summarizing_agent, warm_up
from perdure.names import workflow_id
from worker import PerdurePlugin
from workflows.run_workflow import AgentRunWorkflow

HISTORY_DIR = Path(__file__).parent / "histories"
HISTORIES = sorted(HISTORY_DIR.glob("*.json"))

SCENARIOS: dict[str, tuple[list[ScriptedReply], StopReasonType]] = {
    "tool-calls": (
        [
            ScriptedReply(
                tool_calls=[ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": "x"})]
            ),
            ScriptedReply(tool_calls=[ScriptedToolCall(name="no_such_tool", arguments={})]),
            ScriptedReply(content="done"),
        ],
        StopReasonType.end_turn,
    ),
    "llm-error": (
        [ScriptedReply(status=400, error={"error": {"message": "bad request"}})],
        StopReasonType.llm_api_error,
    ),
}


def replayer() -> Replayer:
    return Replayer(workflows=[], plugins=[PerdurePlugin()])


def strict_replayer() -> Replayer:
    """The run workflow inside the SDK's default sandbox, only Perdure's schemas passed through."""
    strict = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("perdure"))
    return Replayer(workflows=[AgentRunWorkflow], data_converter=pydantic_data_converter, workflow_runner=strict)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer().replay_workflow(history)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays_in_the_strict_sandbox(path: Path) -> None:
    """The worker runs workflows without the SDK's sandbox (`workflows/runner.py`), so nothing
    guards `workflows/` at run time; here the sandbox does: replayed with `workflows/` imported
    inside it, a clock read, a random number or I/O on any recorded path fails the replay."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await strict_replayer().replay_workflow(history)


def test_recorded_histories_exist() -> None:
    assert HISTORIES, "tests/histories must hold at least one recorded run"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_fresh_run_replays(
    scenario: str, client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    replies, expected = SCENARIOS[scenario]
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(model_name, replies)
    response = await client.send_message(agent.id, "go")
    assert response.stop_reason.stop_reason is expected
    await replay_and_record(client, agent.id, scenario)


async def test_fresh_approval_run_replays(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """A run that pauses for an approval and a client tool, gets a bad signal, then both answers."""
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
        llm_config={"parallel_tool_calls": True},
    )
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[
                    ScriptedToolCall(
                        name="core_memory_append", arguments={"label": "human", "content": "Ada"}, id="call_a"
                    ),
                    ScriptedToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_b"),
                ]
            ),
            ScriptedReply(content="done"),
        ],
    )
    paused = await client.send_message(agent.id, "go", client_tools=[ClientTool(name="get_weather")])
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    await client.signal(agent.id, "deny", {"tool_call_id": "call_unknown"})
    await client.signal(agent.id, "approve", {"tool_call_id": "call_a"})
    finished = await client.answer(agent.id, [ClientToolReturn(tool_call_id="call_b", tool_return="sunny")])
    assert finished.stop_reason.stop_reason is StopReasonType.end_turn
    await replay_and_record(client, agent.id, "approval")


async def test_fresh_rules_and_compaction_run_replays(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """Tool rules (a forced first tool, a terminal tool) and a compaction in one run."""
    agent = summarizing_agent(
        make_agent,
        model_name,
        llm,
        llm_config={"context_window": 1_000},
        tools=["core_memory_append"],
        tool_rules=[
            {"type": "run_first", "tool_name": "conversation_search", "args": {"query": "go go"}},
            {"type": "exit_loop", "tool_name": "core_memory_append"},
        ],
    )
    llm.script(
        model_name,
        [
            ScriptedReply(tool_calls=[ScriptedToolCall(name="conversation_search", arguments={"query": "y"})]),
            ScriptedReply(
                tool_calls=[ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "z"})]
            ),
        ],
    )
    finished = await client.send_message(agent.id, "go " * 700)
    assert finished.stop_reason.stop_reason is StopReasonType.tool_rule
    assert "summary_message" in [m.message_type for m in finished.messages]
    await replay_and_record(client, agent.id, "rules-compaction")


async def test_fresh_streamed_run_replays(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """Token streaming with a reader: chunks by signal, polls by update, a retried attempt
    that broke off mid-stream, and a pause whose continuation streams too."""
    agent = approval_agent(make_agent, "core_memory_append")
    remember = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "Ada"}, id="call_s")
    llm.script(
        model_name,
        [
            ScriptedReply(content="cut off before the end of this answer", chunk_delay_s=0.1, drop_after_chunks=6),
            ScriptedReply(tool_calls=[remember], chunk_delay_s=0.05),
            ScriptedReply(content="Saved, Ada.", chunk_delay_s=0.05),
        ],
    )
    paused = [item async for item in client.stream_message(agent.id, message_request("go", stream_tokens=True))]
    assert paused[-2].event.stop_reason is StopReasonType.requires_approval  # type: ignore[union-attr]
    finished = [
        item async for item in client.stream_answer(agent.id, [ApprovalAnswer(tool_call_id="call_s", approve=True)])
    ]
    assert finished[-2].event.stop_reason is StopReasonType.end_turn  # type: ignore[union-attr]
    await client.temporal.get_workflow_handle(workflow_id(agent.id)).result()
    await replay_and_record(client, agent.id, "streaming")


async def test_fresh_cancelled_runs_replay(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """Two cancels: one of a run paused for an approval (its call is denied on cancel), one
    of a run whose LLM request is still in flight."""
    paused_agent = approval_agent(make_agent, "core_memory_append")
    remember = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "Ada"}, id="call_c")
    llm.script(model_name, [ScriptedReply(tool_calls=[remember])])
    paused = await client.send_message(paused_agent.id, "go")
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    assert (await client.cancel(paused_agent.id)).stop_reason is StopReasonType.cancelled

    slow_agent = make_agent()
    llm.script(model_name, [ScriptedReply(content="too late", delay_s=30)])
    run = asyncio.create_task(client.send_message(slow_agent.id, "go"))
    await eventually(lambda: llm.in_flight(model_name) > 0)
    assert (await client.cancel(slow_agent.id)).stop_reason is StopReasonType.cancelled
    with contextlib.suppress(Exception):
        await run

    await replay_and_record(client, paused_agent.id, "cancel-paused")
    await replay_and_record(client, slow_agent.id, "cancel-llm")


async def test_fresh_overflow_and_approval_timeout_runs_replay(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """The provider's context-length error mid-stream, a compaction and the step asked again;
    then a pause that times out."""
    agent = summarizing_agent(make_agent, model_name, llm)
    await warm_up(client, llm, model_name, agent.id, 3)
    llm.script(
        model_name,
        [
            ScriptedReply(content="An answer that the server cuts off", error_after_chunks=3, error=OVERFLOW),
            ScriptedReply(content="answer 3"),
        ],
    )
    streamed = [
        item async for item in client.stream_message(agent.id, message_request("question 3", stream_tokens=True))
    ]
    assert streamed[-2].event.stop_reason is StopReasonType.end_turn  # type: ignore[union-attr]
    await replay_and_record(client, agent.id, "overflow")

    waiting = approval_agent(make_agent, "core_memory_append")
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "Ada"})]
            )
        ],
    )
    await client.send_message(waiting.id, "go", approval_timeout_seconds=1)
    await client.temporal.get_workflow_handle(workflow_id(waiting.id)).result()
    assert (await client.state(waiting.id)).stop_reason is StopReasonType.requires_approval  # type: ignore[union-attr]
    await replay_and_record(client, waiting.id, "approval-timeout")


async def replay_and_record(client: PerdureClient, agent_id: str, scenario: str) -> None:
    """Replay the agent's latest run with the current code, as the worker runs it and in the
    strict sandbox; record it when asked to."""
    history = await client.temporal.get_workflow_handle(workflow_id(agent_id)).fetch_history()
    await replayer().replay_workflow(history)
    await strict_replayer().replay_workflow(history)
    record(scenario, history)


def record(scenario: str, history: WorkflowHistory) -> None:
    if os.environ.get("PERDURE_RECORD_HISTORIES"):
        HISTORY_DIR.mkdir(exist_ok=True)
        (HISTORY_DIR / f"{scenario}.json").write_text(history.to_json())
