"""What happens to a run that waits: cancellation, approval timeouts with Letta's resume path,
and a paused run surviving a worker crash and a Temporal server restart.

Letta's rules (reference sections 2.4-2.7, 8, 11) are the yardstick: a cancel never leaves a
tool call without its return (Letta issues 3250, 3273, 3308), a timed-out approval ends the run
`requires_approval` and must be answered by the next request, and a paused run is only data
in Temporal and the database, so no process restart may lose or duplicate anything.

Everything is real: the shared dev server (or one of this file's own), the SQLite file, the
scripted model over HTTP, and worker subprocesses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from perdure.approvals import NO_PENDING, PENDING_APPROVAL
from perdure.schemas.agent import AgentState
from perdure.schemas.approvals import TOOL_CALL_DENIAL_ON_CANCEL, Answer, ApprovalAnswer, ApprovalCreate
from perdure.schemas.letta import LettaResponse, RunStatus, StopReasonType
from perdure.schemas.messages import Message
from perdure.schemas.run import MessageCreate, RunResult, RunState, RunWorkflowInput, SendMessageRequest
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.settings import Settings
from perdure.store import agents, messages, runs
from perdure.store.db import Database
from perdure.approvals import KEEP_ALIVE
from starter.client import PerdureClient
from starter.updates import RunRejectedError
from starter.devserver import dev_server_command
from starter.temporal import connect_when_serving
from worker import ensure_search_attributes
from tests.conftest import AgentFactory, eventually
from tests.helpers import REPO, calls, in_context, settings_at, types_of
from perdure.names import workflow_id
from workflows.run_workflow import AgentRunWorkflow
from tests.ports import free_port

APPROVAL_RULE = {"type": "requires_approval", "tool_name": "core_memory_append"}
WORKER_READY = "worker serving task queue"
SLOW_REPLY_S = 8.0


# --- agents and scripts ---------------------------------------------------------------------


def approval_agent(make_agent: AgentFactory, **fields: Any) -> AgentState:
    """An agent whose `core_memory_append` needs a person's approval; the `human` block shows
    whether (and how often) an approved append really ran."""
    return make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        tool_rules=[APPROVAL_RULE],
        **fields,
    )


def append_call(content: str) -> ScriptedToolCall:
    return ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": content})


def resume_request(answers: Sequence[Answer], *follow_ups: str) -> SendMessageRequest:
    """Letta's resume path: a new request that opens with the answers, user messages after."""
    return SendMessageRequest(
        messages=[ApprovalCreate(approvals=list(answers)), *(MessageCreate(content=text) for text in follow_ups)]
    )


def approve(*tool_call_ids: str) -> list[Answer]:
    return [ApprovalAnswer(tool_call_id=i, approve=True) for i in tool_call_ids]


# --- reading the store ----------------------------------------------------------------------


def stored_messages(db: Database, agent_id: str, run_id: str | None = None) -> list[Message]:
    with db.transaction() as session:
        return messages.list_messages(session, agent_id, run_id=run_id)


def human_block(db: Database, agent_id: str) -> str:
    with db.transaction() as session:
        block = agents.get_agent(session, agent_id).block("human")
    assert block is not None
    return block.value


def run_row(db: Database, run_id: str) -> runs.RunInfo:
    with db.transaction() as session:
        return runs.get_run(session, run_id)


def run_count(db: Database, agent_id: str) -> int:
    with db.transaction() as session:
        return len(runs.list_runs(session, agent_id))


def snapshot(db: Database, agent_id: str) -> tuple[list[str], list[str], int]:
    """Stored message ids, in-context ids and the number of runs: equal before and after a
    refused request proves it wrote nothing."""
    with db.transaction() as session:
        stored = [m.id for m in messages.list_messages(session, agent_id)]
        context = agents.get_agent(session, agent_id).message_ids
    return stored, context, run_count(db, agent_id)


def assert_no_duplicates(db: Database, agent_id: str) -> None:
    """Each message stored once, and the context is exactly the stored history in order."""
    with db.transaction() as session:
        stored = messages.list_messages(session, agent_id)
        state = agents.get_agent(session, agent_id)
    assert len({m.id for m in stored}) == len(stored)
    assert state.message_ids == [m.id for m in stored]


def pending_ids(response: LettaResponse) -> list[str]:
    """The ids of the calls an approval request holds, from the caller's response."""
    (request,) = [m for m in response.messages if m.message_type == "approval_request_message"]
    return [c.tool_call_id for c in request.tool_calls]  # type: ignore[union-attr]


# --- what the model was sent ----------------------------------------------------------------


def assert_calls_paired(wire: list[dict[str, Any]]) -> None:
    """Every call of a model response is followed by all its returns and no tool message is an
    orphan: what providers require, and what a cancel must never break (Letta 3250/3273/3308)."""
    for index, message in enumerate(wire):
        if message["role"] == "assistant" and message.get("tool_calls"):
            expected = sorted(c["id"] for c in message["tool_calls"])
            returned: list[str] = []
            for following in wire[index + 1 :]:
                if following["role"] != "tool":
                    break
                returned.append(following["tool_call_id"])
            assert sorted(returned) == expected, f"calls {expected} answered by {returned} at wire[{index}]"
        if message["role"] == "tool":
            owner = next(m for m in reversed(wire[:index]) if m["role"] != "tool")
            assert owner["role"] == "assistant" and message["tool_call_id"] in {
                c["id"] for c in owner.get("tool_calls") or []
            }


def last_request(llm: ScriptedLLMServer, model: str) -> list[dict[str, Any]]:
    requests = llm.requests(model)
    assert requests, f"model {model} was never asked"
    return requests[-1]["messages"]


# --- workflow helpers -----------------------------------------------------------------------


async def workflow_result(client: PerdureClient, agent_id: str, timeout: float = 30) -> RunResult | None:
    """The run workflow's own result: it ends by itself when the approval times out."""
    handle = client.temporal.get_workflow_handle_for(AgentRunWorkflow.run, workflow_id(agent_id))
    return await asyncio.wait_for(handle.result(), timeout=timeout)


async def workflow_status(client: PerdureClient, agent_id: str) -> WorkflowExecutionStatus | None:
    return (await client.temporal.get_workflow_handle(workflow_id(agent_id)).describe()).status


async def pause(client: PerdureClient, agent_id: str, text: str, **options: Any) -> LettaResponse:
    response = await client.send_message(agent_id, text, **options)
    assert response.stop_reason.stop_reason is StopReasonType.requires_approval, types_of(response)
    assert types_of(response)[-1] == "approval_request_message"
    return response


async def timed_out_pause(client: PerdureClient, agent_id: str, text: str, **options: Any) -> LettaResponse:
    """Pause, then let the approval timeout end the run (`completed` / `requires_approval`)."""
    response = await pause(client, agent_id, text, **options)
    result = await workflow_result(client, agent_id)
    assert result is not None
    assert (result.run_id, result.status, result.stop_reason) == (
        response.run_id,
        RunStatus.completed,
        StopReasonType.requires_approval,
    )
    return response


async def send_past_the_client(client: PerdureClient, agent_id: str, text: str) -> str:
    """The update-with-start `PerdureClient.start_run` does, without the client's early check:
    the begin activity's race-free refusal, which any other caller meets. Returns its reason."""
    operation = WithStartWorkflowOperation(
        AgentRunWorkflow.run,
        RunWorkflowInput(agent_id=agent_id),
        id=workflow_id(agent_id),
        task_queue=client.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    request = SendMessageRequest(messages=[MessageCreate(content=text)])
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await client.temporal.execute_update_with_start_workflow(
            AgentRunWorkflow.send_message, request, start_workflow_operation=operation
        )
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RequestRejected", cause
    return cause.message


async def rejected(action: Awaitable[Any]) -> str:
    with pytest.raises(RunRejectedError) as caught:
        await action
    return str(caught.value)


# --- processes ------------------------------------------------------------------------------


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
    return True


def log_count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text) if log.exists() else 0


async def start_worker(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """`python worker.py` as a real process; returns once it polls its task queue."""
    ready_before = log_count(log, WORKER_READY)
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "worker.py", cwd=REPO, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    await eventually(lambda: log_count(log, WORKER_READY) > ready_before or process.returncode is not None, timeout=60)
    assert process.returncode is None, f"worker exited with {process.returncode}:\n{log.read_text()}"
    return process


async def stop_process(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal one process we started and wait for it; SIGKILL if it does not go in time."""
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), timeout=timeout)
        except TimeoutError:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode


def worker_env(temporal_address: str, settings: Settings, llm: ScriptedLLMServer, queue: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PERDURE_", "TEMPORAL_"))}
    env.update(
        TEMPORAL_ADDRESS=temporal_address,
        PERDURE_DATABASE_URL=settings.database_url,
        PERDURE_TASK_QUEUE=queue,
        PERDURE_SCRIPTED_BASE_URL=llm.base_url,
    )
    return env


async def start_dev_server(port: int, db_file: Path, log: Path) -> asyncio.subprocess.Process:
    """A dev server of this test's own, its state in `db_file`, so the test may stop it."""
    command = dev_server_command(port=port, ui_port=None, db_file=db_file)
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(*command, stdout=out, stderr=asyncio.subprocess.STDOUT)
    await eventually(lambda: process.returncode is not None or port_open(port), timeout=60)
    assert process.returncode is None, f"dev server exited with {process.returncode}:\n{log.read_text()}"
    return process


async def connect(port: int) -> Client:
    """Connect as `perdure dev` does, while the server finishes starting."""
    settings = settings_at(f"127.0.0.1:{port}")
    client = await connect_when_serving(settings, within=20)
    await ensure_search_attributes(client)
    return client


# --- cancellation ---------------------------------------------------------------------------


async def test_cancel_while_paused_denies_every_call_of_the_response(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's cancel of a paused run (2.7): a denial per held call, an error return for every
    call of the response (the one that needed no approval too), and the agent keeps working."""
    agent = approval_agent(make_agent, parallel_tool_calls=True)
    insert = ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": "Likes tea."})
    append = append_call("Likes coffee.")
    llm.script(model_name, [calls(insert, append)])
    paused = await pause(client, agent.id, "I like tea and coffee")
    assert pending_ids(paused) == [append.id]
    assert types_of(paused) == ["user_message", "tool_call_message", "approval_request_message"]
    row = run_row(db, paused.run_id)
    assert (row.status, row.stop_reason) == (RunStatus.running, StopReasonType.requires_approval), "paused, not ended"

    state = await client.cancel(agent.id)

    assert (state.run_id, state.status, state.stop_reason) == (
        paused.run_id,
        RunStatus.cancelled,
        StopReasonType.cancelled,
    )
    assert state.pending_approval is None
    row = run_row(db, paused.run_id)
    assert (row.status, row.stop_reason) == (RunStatus.cancelled, StopReasonType.cancelled)
    assert row.completed_at is not None
    assert await workflow_status(client, agent.id) is WorkflowExecutionStatus.CANCELED

    *_, request, response, returns = in_context(db, agent.id)
    assert request.role == "approval" and [c.id for c in request.tool_calls] == [append.id]
    assert response.role == "approval" and response.run_id == paused.run_id
    assert response.approvals == [
        ApprovalAnswer(tool_call_id=append.id, approve=False, reason=TOOL_CALL_DENIAL_ON_CANCEL)
    ]
    assert returns.role == "tool"
    assert [r.tool_call_id for r in returns.tool_returns] == [insert.id, append.id], "a return for every call, in order"
    assert all(
        r.status == "error" and TOOL_CALL_DENIAL_ON_CANCEL in (r.func_response or "") for r in returns.tool_returns
    )
    assert human_block(db, agent.id) == "", "neither call ran"

    llm.script(model_name, [ScriptedReply(content="Still here.")])
    after = await client.send_message(agent.id, "are you there?")

    assert after.stop_reason.stop_reason is StopReasonType.end_turn
    assert after.messages[-1].content == "Still here."  # type: ignore[union-attr]
    wire = last_request(llm, model_name)
    assert_calls_paired(wire)
    assert {m["tool_call_id"] for m in wire if m["role"] == "tool"} == {insert.id, append.id}
    assert wire[-1] == {"role": "user", "content": "are you there?"}
    assert_no_duplicates(db, agent.id)


async def cancel_during_slow_llm_call(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, agent_id: str, text: str
) -> tuple[LettaResponse, RunState]:
    """Send `text`, cancel while the model takes 8 s to answer; returns the cancelled
    send's response and the state `cancel` returned."""
    llm.script(
        model_name, [ScriptedReply(content="too late", delay_s=SLOW_REPLY_S), ScriptedReply(content="Answered now.")]
    )
    run = asyncio.create_task(client.send_message(agent_id, text))
    await eventually(lambda: len(llm.requests(model_name)) == 1, timeout=30)
    state = await client.cancel(agent_id)
    return await asyncio.wait_for(run, timeout=10), state


async def test_cancel_during_a_slow_llm_call_is_prompt(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Cancelling must not wait for the model to answer (the workflow gives up on the call at
    once; the call heartbeats so the worker learns of it too), and the agent keeps working."""
    agent = make_agent()
    cancelled, _ = await cancel_during_slow_llm_call(client, llm, model_name, agent.id, "a slow question")

    assert llm.in_flight(model_name) == 1, "cancel returned while the model's reply was still on its way"
    assert await workflow_status(client, agent.id) is not WorkflowExecutionStatus.RUNNING
    assert run_row(db, cancelled.run_id).completed_at is not None, "the run ended"
    assert "too late" not in str(stored_messages(db, agent.id)), "the abandoned answer was not stored"

    after = await client.send_message(agent.id, "still there?")

    assert after.stop_reason.stop_reason is StopReasonType.end_turn
    assert after.messages[-1].content == "Answered now."  # type: ignore[union-attr]
    wire = last_request(llm, model_name)
    assert wire[-1] == {"role": "user", "content": "still there?"}
    assert "too late" not in str(wire)
    assert_no_duplicates(db, agent.id)


async def test_cancel_during_a_slow_llm_call_ends_cancelled_and_keeps_the_input(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's contract for a cancel (section 8, test_cancellation): run `cancelled`, stop reason
    `cancelled`; Perdure's own promise (workflows/drafts.py): nothing the user sent is lost."""
    agent = make_agent()
    text = f"a question worth keeping {uuid.uuid4().hex[:8]}"
    cancelled, state = await cancel_during_slow_llm_call(client, llm, model_name, agent.id, text)

    assert cancelled.stop_reason.stop_reason is StopReasonType.cancelled
    assert (state.status, state.stop_reason, state.error) == (RunStatus.cancelled, StopReasonType.cancelled, None)
    row = run_row(db, cancelled.run_id)
    assert (row.status, row.stop_reason) == (RunStatus.cancelled, StopReasonType.cancelled)
    assert await workflow_status(client, agent.id) is WorkflowExecutionStatus.CANCELED
    *_, last = in_context(db, agent.id)
    assert (last.role, last.text, last.run_id) == ("user", text, cancelled.run_id), "the input was kept"
    assert [m.role for m in stored_messages(db, agent.id, cancelled.run_id)] == ["user"], "nothing of the answer"

    after = await client.send_message(agent.id, "still there?")

    assert after.stop_reason.stop_reason is StopReasonType.end_turn
    assert [m["content"] for m in last_request(llm, model_name)[-2:]] == [text, "still there?"]
    assert_no_duplicates(db, agent.id)


async def test_cancel_without_a_live_run_is_refused_clearly(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """Letta answers 409 NoActiveRunsToCancel; Perdure says which case it is."""
    agent = make_agent()
    assert "has no run to cancel" in await rejected(client.cancel(agent.id))

    llm.script(model_name, [ScriptedReply(content="done")])
    await client.send_message(agent.id, "hi")
    message = await rejected(client.cancel(agent.id))
    assert "has no live run to cancel" in message and "completed" in message
    assert await workflow_status(client, agent.id) is WorkflowExecutionStatus.COMPLETED, "the finished run is untouched"


# --- approval timeout and Letta's resume path -----------------------------------------------


async def test_timed_out_approval_is_answered_by_the_next_request(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The run ends by itself `requires_approval`; a plain message is refused with Letta's text;
    a request opening with the answers runs the call in a new run, then its follow-up message."""
    agent = approval_agent(make_agent)
    append = append_call("Likes tea.")
    llm.script(model_name, [calls(append)])
    paused = await pause(client, agent.id, "remember that I like tea", approval_timeout_seconds=1)
    assert paused.messages and pending_ids(paused) == [append.id]
    live = await client.state(agent.id)
    assert live is not None and live.pending_approval is not None and live.pending_approval.timeout_at is not None

    result = await workflow_result(client, agent.id)

    assert result is not None and (result.status, result.stop_reason) == (
        RunStatus.completed,
        StopReasonType.requires_approval,
    )
    row = run_row(db, paused.run_id)
    assert (row.status, row.stop_reason) == (RunStatus.completed, StopReasonType.requires_approval)
    ended = await client.state(agent.id)
    assert ended is not None and (ended.status, ended.stop_reason) == (
        RunStatus.completed,
        StopReasonType.requires_approval,
    )
    assert in_context(db, agent.id)[-1].role == "approval", "the request stays pending in the context"
    assert human_block(db, agent.id) == ""

    before = snapshot(db, agent.id)
    asked = len(llm.requests(model_name))
    refusal = await rejected(client.send_message(agent.id, "hello?"))
    assert refusal.startswith(PENDING_APPROVAL) and append.id in refusal
    refusal = await send_past_the_client(client, agent.id, "hello?")
    assert refusal.startswith(PENDING_APPROVAL) and append.id in refusal
    assert snapshot(db, agent.id) == before, "a refused message is not stored"
    assert len(llm.requests(model_name)) == asked

    llm.script(model_name, [ScriptedReply(content="Tea and coffee, noted.")])
    resumed = client.response(await client.start_run(agent.id, resume_request(approve(append.id), "and coffee too")))

    assert resumed.stop_reason.stop_reason is StopReasonType.end_turn
    assert resumed.run_id != paused.run_id
    assert types_of(resumed) == [
        "approval_response_message",
        "tool_return_message",
        "user_message",
        "assistant_message",
    ]
    tool_return = resumed.messages[1]
    assert [(r.tool_call_id, r.status) for r in tool_return.tool_returns] == [(append.id, "success")]  # type: ignore[union-attr]
    assert all(m.run_id == resumed.run_id for m in resumed.messages), "the call ran in the new run"
    assert human_block(db, agent.id).count("Likes tea.") == 1
    row = run_row(db, resumed.run_id)
    assert (row.status, row.stop_reason) == (RunStatus.completed, StopReasonType.end_turn)
    wire = last_request(llm, model_name)
    assert_calls_paired(wire)
    assert [m["role"] for m in wire[-3:]] == ["assistant", "tool", "user"], "follow-up after the tool return"
    assert wire[-3]["tool_calls"][0]["id"] == wire[-2]["tool_call_id"] == append.id
    assert wire[-1]["content"] == "and coffee too"
    assert_no_duplicates(db, agent.id)


async def test_resume_request_is_validated_and_a_replay_keeps_alive(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's validation (2.4): all pending ids in one request (letta-code 276), nothing stored
    on refusal; answers without a pending call fail, unless they were processed already (a
    client retry), which takes the keep-alive path instead of running the calls again."""
    agent = approval_agent(make_agent, parallel_tool_calls=True)
    first, second = append_call("Likes tea."), append_call("Likes jazz.")
    assert await rejected(client.start_run(agent.id, resume_request(approve("call_nothing_pending")))) == NO_PENDING
    assert run_count(db, agent.id) == 0

    llm.script(model_name, [calls(first, second)])
    paused = await timed_out_pause(client, agent.id, "tea and jazz", approval_timeout_seconds=1)
    assert pending_ids(paused) == [first.id, second.id]
    expected = sorted([first.id, second.id])

    before = snapshot(db, agent.id)
    for answered in ([first.id], [first.id, "call_unknown"], [first.id, second.id, "call_extra"]):
        refusal = await rejected(client.start_run(agent.id, resume_request(approve(*answered))))
        assert refusal == f"Invalid tool call IDs. Expected '{expected}', but received '{sorted(answered)}'."
        assert snapshot(db, agent.id) == before, f"answers {answered} stored something"
    assert human_block(db, agent.id) == ""

    llm.script(model_name, [ScriptedReply(content="Noted both.")])
    answers = approve(first.id, second.id)
    resumed = client.response(await client.start_run(agent.id, resume_request(answers)))
    assert resumed.stop_reason.stop_reason is StopReasonType.end_turn
    assert [human_block(db, agent.id).count(v) for v in ("Likes tea.", "Likes jazz.")] == [1, 1], "both calls ran"
    block_after_resume = human_block(db, agent.id)

    llm.script(model_name, [ScriptedReply(content="Where were we?")])
    replay = client.response(await client.start_run(agent.id, resume_request(answers)))

    assert replay.stop_reason.stop_reason is StopReasonType.end_turn
    assert types_of(replay) == ["user_message", "assistant_message"]
    assert replay.messages[0].content == KEEP_ALIVE  # type: ignore[union-attr]
    assert [(m.role, m.text) for m in stored_messages(db, agent.id, replay.run_id)][0] == ("user", KEEP_ALIVE)
    assert human_block(db, agent.id) == block_after_resume, "the replayed approvals did not run the calls again"
    assert last_request(llm, model_name)[-1] == {"role": "user", "content": KEEP_ALIVE}
    row = run_row(db, replay.run_id)
    assert (row.status, row.stop_reason) == (RunStatus.completed, StopReasonType.end_turn)

    llm.script(model_name, [ScriptedReply(content="Sure.")])
    with_follow_up = client.response(await client.start_run(agent.id, resume_request(answers, "anything else?")))
    assert [(m.message_type, getattr(m, "content", None)) for m in with_follow_up.messages] == [
        ("user_message", "anything else?"),
        ("assistant_message", "Sure."),
    ], "a replay's follow-up replaces the keep-alive ping"

    assert await rejected(client.start_run(agent.id, resume_request(approve(first.id)))) == NO_PENDING
    assert_no_duplicates(db, agent.id)


async def test_agent_level_approval_timeout_ends_the_run_the_same_way(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The agent's own `approval_timeout_seconds` applies when the request sets none."""
    agent = approval_agent(make_agent, approval_timeout_seconds=1)
    append = append_call("Likes tea.")
    llm.script(model_name, [calls(append)])
    paused = await timed_out_pause(client, agent.id, "remember tea")
    row = run_row(db, paused.run_id)
    assert (row.status, row.stop_reason) == (RunStatus.completed, StopReasonType.requires_approval)
    refusal = await rejected(client.send_message(agent.id, "hello?"))
    assert refusal.startswith(PENDING_APPROVAL) and append.id in refusal

    llm.script(model_name, [ScriptedReply(content="Noted.")])
    resumed = client.response(await client.start_run(agent.id, resume_request(approve(append.id))))

    assert resumed.stop_reason.stop_reason is StopReasonType.end_turn
    assert types_of(resumed) == ["approval_response_message", "tool_return_message", "assistant_message"]
    assert human_block(db, agent.id).count("Likes tea.") == 1
    assert_calls_paired(last_request(llm, model_name))


# --- durability of a paused run -------------------------------------------------------------


async def test_paused_run_survives_a_killed_worker(
    temporal_env: WorkflowEnvironment,
    temporal_address: str,
    settings: Settings,
    db: Database,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    """A pause lives in Temporal and the database, not in a worker: SIGKILL the worker that
    paused, approve through a new one, and the call runs once with nothing duplicated."""
    queue = f"perdure-pause-{uuid.uuid4().hex[:8]}"
    env = worker_env(temporal_address, settings, llm, queue)
    log = tmp_path / "worker.log"
    pause_client = PerdureClient(temporal_env.client, db, queue)
    agent = approval_agent(make_agent)
    append = append_call("Likes tea.")
    llm.script(model_name, [calls(append), ScriptedReply(content="Noted.")])

    worker = await start_worker(env, log)
    replacement: asyncio.subprocess.Process | None = None
    try:
        paused = await asyncio.wait_for(pause(pause_client, agent.id, "remember tea"), timeout=60)
        assert await stop_process(worker, signal.SIGKILL) == -signal.SIGKILL
        replacement = await start_worker(env, log)
        done = await asyncio.wait_for(pause_client.answer(agent.id, approve(append.id)), timeout=90)
    finally:
        await stop_process(worker, signal.SIGKILL)
        exit_code = await stop_process(replacement) if replacement is not None else None

    assert exit_code == 0, "SIGTERM stops the replacement worker cleanly"
    assert done.run_id == paused.run_id
    assert done.stop_reason.stop_reason is StopReasonType.end_turn
    assert types_of(done) == ["approval_response_message", "tool_return_message", "assistant_message"]
    assert human_block(db, agent.id).count("Likes tea.") == 1, "the approved call ran once"
    assert len(llm.requests(model_name)) == 2
    assert_no_duplicates(db, agent.id)
    assert [m.role for m in stored_messages(db, agent.id)] == [
        "system",
        "user",
        "approval",
        "approval",
        "tool",
        "assistant",
    ]
    row = run_row(db, paused.run_id)
    assert (row.status, row.stop_reason) == (RunStatus.completed, StopReasonType.end_turn)


async def test_paused_run_survives_a_temporal_server_restart(
    settings: Settings, db: Database, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, tmp_path: Path
) -> None:
    """The dev server keeps its state in a file: stop it while a run waits for approval, start
    it again on the same port and file, and the approval completes the same run."""
    port = free_port()
    state_file, server_log, worker_log = tmp_path / "temporal.db", tmp_path / "server.log", tmp_path / "worker.log"
    queue = f"perdure-restart-{uuid.uuid4().hex[:8]}"
    agent = approval_agent(make_agent)
    append = append_call("Likes tea.")
    llm.script(model_name, [calls(append), ScriptedReply(content="Noted.")])

    servers: list[asyncio.subprocess.Process] = []
    workers: list[asyncio.subprocess.Process] = []

    async def started(
        into: list[asyncio.subprocess.Process], start: Awaitable[asyncio.subprocess.Process]
    ) -> asyncio.subprocess.Process:
        into.append(await start)
        return into[-1]

    try:
        server = await started(servers, start_dev_server(port, state_file, server_log))
        before = PerdureClient(await connect(port), db, queue)
        worker = await started(workers, start_worker(worker_env(f"127.0.0.1:{port}", settings, llm, queue), worker_log))
        paused = await asyncio.wait_for(pause(before, agent.id, "remember tea"), timeout=60)

        await stop_process(server)
        assert not await port_open(port), "the server is down"
        await started(servers, start_dev_server(port, state_file, server_log))
        after = PerdureClient(await connect(port), db, queue)
        state = await asyncio.wait_for(after.state(agent.id), timeout=60)
        assert state is not None and state.pending_approval is not None, "the pause survived the restart"
        assert [c.tool_call_id for c in state.pending_approval.calls] == [append.id]
        done = await asyncio.wait_for(after.answer(agent.id, approve(append.id)), timeout=90)
        assert worker.returncode is None, "the worker rode out the restart"
    finally:
        for process in [*workers, *servers]:
            await stop_process(process)

    assert done.run_id == paused.run_id
    assert done.stop_reason.stop_reason is StopReasonType.end_turn
    assert types_of(done) == ["approval_response_message", "tool_return_message", "assistant_message"]
    assert human_block(db, agent.id).count("Likes tea.") == 1
    assert_no_duplicates(db, agent.id)
    row = run_row(db, paused.run_id)
    assert (row.status, row.stop_reason) == (RunStatus.completed, StopReasonType.end_turn)


async def test_answers_given_before_a_cancel_stand(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Cancel keeps the record true: an approval stays an approval (the call did not run), a
    person's denial keeps its reason, a client's result is kept, and only the unanswered call
    gets Letta's denial-on-cancel."""
    from perdure.schemas.approvals import ClientTool

    agent = approval_agent(make_agent, llm_config={"parallel_tool_calls": True})
    approved, denied, unanswered = (
        ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": text}, id=f"call_{text}")
        for text in ("approved", "denied", "unanswered")
    )
    weather = ScriptedToolCall(name="get_weather", arguments={"city": "Oslo"}, id="call_weather")
    llm.script(model_name, [calls(approved, denied, weather, unanswered)])
    paused = await client.send_message(agent.id, "go", client_tools=[ClientTool(name="get_weather")])
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    await client.signal(agent.id, "approve", {"tool_call_id": "call_approved"})
    await client.signal(agent.id, "deny", {"tool_call_id": "call_denied", "reason": "not that"})
    await client.signal(agent.id, "client_tool_return", {"tool_call_id": "call_weather", "tool_return": "snow"})
    await eventually(lambda: _answered(client, agent.id, 3))

    await client.cancel(agent.id)

    response, tool = in_context(db, agent.id)[-2:]
    answers = {a.tool_call_id: a for a in response.approvals}
    approved_answer, denied_answer = answers["call_approved"], answers["call_denied"]
    unanswered_answer = answers["call_unanswered"]
    assert isinstance(approved_answer, ApprovalAnswer) and isinstance(denied_answer, ApprovalAnswer)
    assert isinstance(unanswered_answer, ApprovalAnswer)
    assert approved_answer.approve is True
    assert (denied_answer.approve, denied_answer.reason) == (False, "not that")
    assert unanswered_answer.reason == TOOL_CALL_DENIAL_ON_CANCEL
    returns = {r.tool_call_id: r for r in tool.tool_returns}
    assert [r.tool_call_id for r in tool.tool_returns] == [
        "call_approved",
        "call_denied",
        "call_weather",
        "call_unanswered",
    ]
    assert TOOL_CALL_DENIAL_ON_CANCEL in (returns["call_approved"].func_response or ""), "approved but never ran"
    assert "User reason: not that" in (returns["call_denied"].func_response or "")
    assert (returns["call_weather"].status, "snow" in (returns["call_weather"].func_response or "")) == (
        "success",
        True,
    )
    assert TOOL_CALL_DENIAL_ON_CANCEL in (returns["call_unanswered"].func_response or "")
    assert human_block(db, agent.id) == "", "no append ran"


async def _answered(client: PerdureClient, agent_id: str, count: int) -> bool:
    state = await client.state(agent_id)
    pending = state.pending_approval if state else None
    return pending is not None and sum(c.answer is not None for c in pending.calls) == count
