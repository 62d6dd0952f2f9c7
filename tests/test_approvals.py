"""Human-in-the-loop and client-side tools, as Letta's tests exercise them, on the real stack.

Letta's `integration_test_human_in_the_loop.py` and `integration_test_client_side_tools.py`
(reference §2, §3, §11) reproduced against the Temporal dev server, the SQLite store and a
scripted model over HTTP. A run that needs a person pauses *inside* its workflow; answers come
by the validated `answer` update or by signals, so besides Letta's behaviour these tests pin
what Temporal adds: a refused update leaves no trace in history, a signal that cannot be taken
is recorded as rejected instead of breaking the run, and a raw `temporal workflow signal`
from the shell is enough to approve.

Expected error texts are written out literally (not imported), so a change of wording that
Letta clients match on fails here.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

import pytest
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus

from perdure.schemas.agent import AgentState
from perdure.schemas.approvals import Answer, ApprovalAnswer, ClientTool, ClientToolReturn
from perdure.schemas.letta import (
    ApprovalRequestMessage,
    ApprovalResponseMessage,
    ApprovalReturn,
    LettaResponse,
    LettaToolReturn,
    RunStatus,
    StopReasonType,
    ToolReturnMessage,
)
from perdure.schemas.messages import Message
from perdure.schemas.run import RunState
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store import agents, messages, runs
from perdure.store.db import Database
from perdure.store.tables import PassageRow
from starter.client import PerdureClient
from starter.updates import RunRejectedError
from starter.devserver import temporal_binary
from tests.conftest import AgentFactory, eventually
from tests.helpers import block_value, in_context, text, types_of
from perdure.names import workflow_id

pytestmark = pytest.mark.both_stores

# Letta's texts (reference §2.4, §2.5, §2.6, §2.7), verbatim.
NO_PENDING = (
    "Cannot process approval response: No tool call is currently awaiting approval. "
    "Please send a regular message to interact with the agent."
)
PENDING_APPROVAL = (
    "Cannot send a new message: The agent is waiting for approval on a tool call. "
    "Please approve or deny the pending request before continuing."
)
DENIED_ON_CANCEL = "The user cancelled the request, so the tool call was denied."

HUMAN_START = "Name unknown."
WEATHER = ClientTool(
    name="get_weather",
    description="Current weather for a city, looked up by the client.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


# --- scripting ---------------------------------------------------------------------------


def call(name: str, call_id: str, **arguments: Any) -> ScriptedToolCall:
    """A tool call with a fixed id: answers address calls by id, so tests must know them."""
    return ScriptedToolCall(name=name, arguments=arguments, id=call_id)


def reply(*tool_calls: ScriptedToolCall, content: str | None = None, delay_s: float = 0.0) -> ScriptedReply:
    return ScriptedReply(content=content, tool_calls=list(tool_calls), delay_s=delay_s)


def remember(call_id: str, fact: str = "Likes tea.") -> ScriptedToolCall:
    """`core_memory_append` to the human block: its effect is easy to see in the store."""
    return call("core_memory_append", call_id, label="human", content=fact)


def archive(call_id: str, fact: str = "secret plan") -> ScriptedToolCall:
    return call("archival_memory_insert", call_id, content=fact)


def weather(call_id: str, city: str = "Paris") -> ScriptedToolCall:
    return call(WEATHER.name, call_id, city=city)


def approval_agent(make_agent: AgentFactory, *approval_tools: str, parallel: bool = False, **fields: Any) -> AgentState:
    """An agent whose `approval_tools` each need a person's yes (Letta's requires_approval rule).

    It has a `human` block (changed by core_memory_append) and an empty `notes` block (changed
    by the base tool memory_insert), so a test can see whether a tool ran.
    """
    llm_config = {"parallel_tool_calls": parallel, **fields.pop("llm_config", {})}
    return make_agent(
        memory_blocks=[{"label": "human", "value": HUMAN_START}, {"label": "notes", "value": ""}],
        tools=list(approval_tools),
        tool_rules=[{"type": "requires_approval", "tool_name": name} for name in approval_tools],
        llm_config=llm_config,
        **fields,
    )


# --- bounded waits ---------------------------------------------------------------------

DEADLINE_S = 30.0
QUERY_DEADLINE_S = 2.0


async def send(client: PerdureClient, agent_id: str, message: str, **options: Any) -> LettaResponse:
    """`send_message` with a deadline: a run that never stops or pauses fails instead of hanging."""
    return await asyncio.wait_for(client.send_message(agent_id, message, **options), DEADLINE_S)


async def answer(client: PerdureClient, agent_id: str, answers: list[Answer]) -> LettaResponse:
    """`answer` with a deadline: an answer wrongly taken leaves the update waiting for the rest."""
    return await asyncio.wait_for(client.answer(agent_id, answers), DEADLINE_S)


# --- reading responses -------------------------------------------------------------------


def approval_request_of(response: LettaResponse) -> ApprovalRequestMessage:
    """The paused response's last message: Letta clients look for the request there."""
    last = response.messages[-1]
    assert isinstance(last, ApprovalRequestMessage), types_of(response)
    return last


def only_tool_returns(response: LettaResponse) -> list[LettaToolReturn]:
    """The returns of the response's single tool_return_message (Letta: one per answered step)."""
    found = [m for m in response.messages if isinstance(m, ToolReturnMessage)]
    assert len(found) == 1, types_of(response)
    return found[0].tool_returns


def approval_response_of(response: LettaResponse) -> ApprovalResponseMessage:
    found = [m for m in response.messages if isinstance(m, ApprovalResponseMessage)]
    assert len(found) == 1, types_of(response)
    return found[0]


def assert_paused(response: LettaResponse) -> None:
    assert response.stop_reason.stop_reason is StopReasonType.requires_approval, types_of(response)


def assert_ended(response: LettaResponse) -> None:
    assert response.stop_reason.stop_reason is StopReasonType.end_turn, types_of(response)


# --- reading the store -------------------------------------------------------------------


def stored_messages(db: Database, agent_id: str) -> list[Message]:
    with db.transaction() as session:
        return messages.list_messages(session, agent_id)


def last_stop_reason(db: Database, agent_id: str) -> str | None:
    with db.transaction() as session:
        return agents.get_agent(session, agent_id).last_stop_reason


def passage_count(db: Database, agent_id: str) -> int:
    """Archival passages: how a test sees whether archival_memory_insert ran."""
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(PassageRow).where(PassageRow.agent_id == agent_id)) or 0


def packed(func_response: str | None) -> dict[str, Any]:
    """Letta's `{"status", "message", "time"}` envelope around a stored or sent tool return."""
    assert func_response is not None
    data = json.loads(func_response)
    assert isinstance(data, dict)
    return data


# --- reading the workflow ----------------------------------------------------------------


async def history_length(client: PerdureClient, agent_id: str) -> int:
    """Events in the run's Temporal history: a refused update must not add any."""
    history = await client.temporal.get_workflow_handle(workflow_id(agent_id)).fetch_history()
    return len(history.events)


async def wait_for_state(
    client: PerdureClient, agent_id: str, check: Callable[[RunState], bool], timeout: float = 15.0
) -> RunState:
    """Poll the `state` query until `check` holds: signals are applied asynchronously."""

    async def probe() -> RunState | None:
        try:  # a query to a run whose workflow task keeps failing hangs: bound it
            state = await asyncio.wait_for(client.state(agent_id), QUERY_DEADLINE_S)
        except TimeoutError:
            return None
        return state if state is not None and check(state) else None

    return await eventually(probe, timeout)


async def wait_finished(client: PerdureClient, agent_id: str) -> RunState:
    """Wait for a run nobody awaits (answered by signal) to reach its end."""
    return await wait_for_state(
        client, agent_id, lambda s: s.status is not RunStatus.running and s.status is not RunStatus.created
    )


def answered(call_id: str) -> Callable[[RunState], bool]:
    def check(state: RunState) -> bool:
        pending = state.pending_approval
        return pending is not None and any(c.tool_call_id == call_id and c.answer is not None for c in pending.calls)

    return check


def answers_by_id(state: RunState) -> dict[str, Answer | None]:
    assert state.pending_approval is not None, state.current
    return {c.tool_call_id: c.answer for c in state.pending_approval.calls}


# --- reading what the model was sent -----------------------------------------------------


def sent_tool_results(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tool messages of one chat-completions request, unpacked, by tool call id."""
    return {m["tool_call_id"]: packed(m["content"]) for m in request["messages"] if m["role"] == "tool"}


def offered_tool(request: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [t["function"] for t in request.get("tools") or [] if t["function"]["name"] == name]


def assert_calls_paired(wire: list[dict[str, Any]]) -> None:
    """Every tool call is answered by tool messages right after its assistant message, and no
    tool message answers a call that is not open: what OpenAI and Anthropic require."""
    open_ids: set[str] = set()
    for message in wire:
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_ids, f"orphaned tool result {message['tool_call_id']}"
            open_ids.remove(message["tool_call_id"])
            continue
        assert not open_ids, f"tool calls without results before a {message['role']} message: {sorted(open_ids)}"
        if message["role"] == "assistant" and message.get("tool_calls"):
            ids = [c["id"] for c in message["tool_calls"]]
            assert len(ids) == len(set(ids)), f"repeated tool call ids {ids}"
            open_ids = set(ids)
    assert not open_ids, f"tool calls without results at the end: {sorted(open_ids)}"


async def temporal_cli(*args: str) -> tuple[int, str]:
    """Run the real `temporal` CLI without blocking the loop the in-process worker runs on."""
    process = await asyncio.create_subprocess_exec(
        temporal_binary(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, (stdout + stderr).decode()


# --- approve / deny ----------------------------------------------------------------------


async def test_approve_runs_the_tool_and_the_run_continues(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's test_invoke_approval_request + test_approve_tool_call_request +
    test_agent_records_last_stop_reason_after_approval_flow: pause, show what waits, approve, go on."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a")), text("Noted: you like tea.")])

    paused = await send(client, agent.id, "I like tea.")

    assert_paused(paused)
    assert types_of(paused) == ["user_message", "approval_request_message"]
    request = approval_request_of(paused)
    assert [(c.tool_call_id, c.name) for c in request.tool_calls] == [("call_a", "core_memory_append")]
    assert request.tool_call == request.tool_calls[0]
    assert json.loads(request.tool_calls[0].arguments) == {"label": "human", "content": "Likes tea."}
    assert block_value(db, agent.id, "human") == HUMAN_START, "the tool ran before it was approved"
    assert last_stop_reason(db, agent.id) == "requires_approval"

    state = await client.state(agent.id)
    assert state is not None and state.status is RunStatus.running and state.run_id == paused.run_id
    assert state.pending_approval is not None
    assert state.pending_approval.since <= datetime.now(timezone.utc)
    assert state.pending_approval.timeout_at is None
    [pending] = state.pending_approval.calls
    assert (pending.tool_call_id, pending.name, pending.kind, pending.answer) == (
        "call_a",
        "core_memory_append",
        "approval",
        None,
    )
    assert json.loads(pending.arguments) == {"label": "human", "content": "Likes tea."}

    finished = await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_a", approve=True)])

    assert_ended(finished)
    assert finished.run_id == paused.run_id
    assert types_of(finished) == ["approval_response_message", "tool_return_message", "assistant_message"]
    assert approval_response_of(finished).approvals == [ApprovalReturn(tool_call_id="call_a", approve=True)]
    [tool_return] = only_tool_returns(finished)
    assert (tool_return.tool_call_id, tool_return.status) == ("call_a", "success")
    assert finished.messages[-1].content == "Noted: you like tea."  # type: ignore[union-attr]
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nLikes tea."
    assert last_stop_reason(db, agent.id) == "end_turn"
    with db.transaction() as session:
        run = runs.get_run(session, paused.run_id)
    assert (run.status, run.stop_reason) == (RunStatus.completed, StopReasonType.end_turn)
    after = await client.state(agent.id)
    assert after is not None and after.pending_approval is None and after.status is RunStatus.completed
    # The model's next request holds the executed result, paired with its call.
    second = llm.requests(model_name)[1]
    assert sent_tool_results(second)["call_a"]["status"] == "OK"
    assert_calls_paired(second["messages"])


async def test_deny_with_reason_does_not_run_the_tool_and_tells_the_model_why(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's test_deny_tool_call_request: the denial reason is the tool's error return."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(
        model_name, [reply(remember("call_a", "Password is swordfish.")), text("Understood, I will not store it.")]
    )
    assert_paused(await send(client, agent.id, "Remember my password: swordfish."))

    finished = await answer(
        client, agent.id, [ApprovalAnswer(tool_call_id="call_a", approve=False, reason="never store passwords")]
    )

    assert_ended(finished)
    expected = "Error: request to call tool denied. User reason: never store passwords"
    assert types_of(finished) == ["approval_response_message", "tool_return_message", "assistant_message"]
    assert approval_response_of(finished).approvals == [
        ApprovalReturn(tool_call_id="call_a", approve=False, reason="never store passwords")
    ]
    [tool_return] = only_tool_returns(finished)
    assert (tool_return.tool_call_id, tool_return.status, tool_return.tool_return) == ("call_a", "error", expected)
    assert block_value(db, agent.id, "human") == HUMAN_START, "a denied tool ran"
    second = llm.requests(model_name)[1]
    assert sent_tool_results(second)["call_a"]["status"] == "Failed"
    assert sent_tool_results(second)["call_a"]["message"] == expected
    assert_calls_paired(second["messages"])


async def test_deny_by_signal_without_reason(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A signal is the only answer: the run continues on its own and ends with Letta's text
    for a denial without a reason (`User reason: None`, as Letta formats it)."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a")), text("ok")])
    assert_paused(await send(client, agent.id, "go"))

    await client.signal(agent.id, "deny", {"tool_call_id": "call_a"})

    state = await wait_finished(client, agent.id)
    assert (state.status, state.stop_reason) == (RunStatus.completed, StopReasonType.end_turn)
    assert block_value(db, agent.id, "human") == HUMAN_START
    assert (
        sent_tool_results(llm.requests(model_name)[1])["call_a"]["message"]
        == "Error: request to call tool denied. User reason: None"
    )


async def test_a_second_approval_in_the_same_run_pauses_again(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The `answer` update returns when the run pauses again, with the new request, not only at the end."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a", "One.")), reply(remember("call_b", "Two.")), text("done")])
    first = await send(client, agent.id, "go")
    assert [c.tool_call_id for c in approval_request_of(first).tool_calls] == ["call_a"]

    second = await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_a", approve=True)])

    assert_paused(second)
    assert second.run_id == first.run_id
    assert types_of(second) == ["approval_response_message", "tool_return_message", "approval_request_message"]
    assert [c.tool_call_id for c in approval_request_of(second).tool_calls] == ["call_b"]
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nOne."

    third = await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_b", approve=True)])

    assert_ended(third)
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nOne.\nTwo."
    assert third.usage.step_count == 3


# --- client-side tools -------------------------------------------------------------------


@pytest.mark.parametrize(("status", "envelope"), [("success", "OK"), ("error", "Failed")])
async def test_client_tool_result_reaches_the_model(
    status: Literal["success", "error"],
    envelope: str,
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
) -> None:
    """Letta's test_client_side_tool_full_flow / test_client_side_tool_error_return: the run waits
    for the client's result, which the model then sees; an error result does not stop the run."""
    agent = make_agent()
    llm.script(model_name, [reply(weather("call_w")), text("Here is the weather.")])

    paused = await send(client, agent.id, "Weather in Paris?", client_tools=[WEATHER])

    assert_paused(paused)
    assert [(c.tool_call_id, c.name) for c in approval_request_of(paused).tool_calls] == [("call_w", "get_weather")]
    state = await client.state(agent.id)
    assert state is not None and state.pending_approval is not None
    assert [(c.tool_call_id, c.kind) for c in state.pending_approval.calls] == [("call_w", "client_tool")]
    first = llm.requests(model_name)[0]
    assert offered_tool(first, "get_weather") == [
        {"name": "get_weather", "description": WEATHER.description, "parameters": WEATHER.parameters}
    ]

    value = "sunny, 21C" if status == "success" else "weather service unreachable"
    result = ClientToolReturn(tool_call_id="call_w", status=status, tool_return=value, stdout=["looked it up"])
    finished = await answer(client, agent.id, [result])

    assert_ended(finished)
    assert types_of(finished) == ["approval_response_message", "tool_return_message", "assistant_message"]
    [tool_return] = only_tool_returns(finished)
    assert (tool_return.tool_call_id, tool_return.status, tool_return.tool_return) == ("call_w", status, value)
    assert tool_return.stdout == ["looked it up"]
    second = llm.requests(model_name)[1]
    assert sent_tool_results(second)["call_w"]["status"] == envelope
    assert sent_tool_results(second)["call_w"]["message"] == value
    assert offered_tool(second, "get_weather"), "the client tool was not offered after the pause"
    assert_calls_paired(second["messages"])


async def test_client_tool_shadows_a_server_tool_of_the_same_name(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's test_client_tool_overrides_server_tool: with a client tool named like a server tool
    the call pauses for the client; without it, the same call runs on the server."""
    agent = make_agent()
    shadow = ClientTool(name="conversation_search", description="The client's own search.")
    llm.script(
        model_name,
        [
            reply(call("conversation_search", "call_s1", query="tea")),
            text("client searched"),
            reply(call("conversation_search", "call_s2", query="tea")),
            text("server searched"),
        ],
    )

    paused = await send(client, agent.id, "Search for tea.", client_tools=[shadow])

    assert_paused(paused)
    assert [c.tool_call_id for c in approval_request_of(paused).tool_calls] == ["call_s1"]
    offered = offered_tool(llm.requests(model_name)[0], "conversation_search")
    assert offered == [
        {
            "name": "conversation_search",
            "description": "The client's own search.",
            "parameters": {"type": "object", "properties": {}},
        }
    ]
    finished = await answer(client, agent.id, [ClientToolReturn(tool_call_id="call_s1", tool_return="from the client")])
    assert_ended(finished)
    assert only_tool_returns(finished)[0].tool_return == "from the client"

    direct = await send(client, agent.id, "Search again for tea.")

    assert_ended(direct)
    assert types_of(direct) == ["user_message", "tool_call_message", "tool_return_message", "assistant_message"]
    [server_return] = only_tool_returns(direct)
    assert (server_return.tool_call_id, server_return.status) == ("call_s2", "success")
    assert server_return.tool_return != "from the client"
    offered = offered_tool(llm.requests(model_name)[2], "conversation_search")
    assert len(offered) == 1 and offered[0]["description"] != "The client's own search."


CAP_1000 = 5_000  # max(5000, 1000 * 0.2 * 4)
CAP_10000 = 8_000  # max(5000, 10000 * 0.2 * 4)


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)


TRUNCATION_CASES = {
    "text-over-floor": (1_000, "a" * 6_000, "a" * CAP_1000 + "... [truncated 1000 chars]"),
    "text-at-cap-kept": (1_000, "a" * CAP_1000, "a" * CAP_1000),
    "text-one-over": (1_000, "a" * (CAP_1000 + 1), "a" * CAP_1000 + "... [truncated 1 chars]"),
    "cap-grows-with-window": (10_000, "c" * 9_000, "c" * CAP_10000 + "... [truncated 1000 chars]"),
    "json-message-only": (
        1_000,
        _json({"message": "b" * 6_000, "source": "client"}),
        _json({"message": "b" * CAP_1000 + "... [truncated 1000 chars]", "source": "client"}),
    ),
    "json-message-not-a-string": (
        1_000,
        _json({"message": 7, "data": "d" * 6_000}),
        _json({"message": 7, "data": "d" * 6_000})[:CAP_1000]
        + f"... [truncated {len(_json({'message': 7, 'data': 'd' * 6_000})) - CAP_1000} chars]",
    ),
}


@pytest.mark.parametrize(
    ("context_window", "sent", "kept"), list(TRUNCATION_CASES.values()), ids=list(TRUNCATION_CASES)
)
async def test_oversized_client_result_is_truncated_before_it_is_stored(
    context_window: int,
    sent: str,
    kept: str,
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
) -> None:
    """Letta's cap on a client's result: max(5000, context_window * 0.2 * 4) characters, and in a
    JSON object with a string `message` only that field; the model and the store get the clip."""
    # A window this small is compacted after the answer; the rule-based demo model summarises.
    agent = make_agent(llm_config={"context_window": context_window, "compaction_model": "scripted/demo"})
    llm.script(model_name, [reply(weather("call_w")), text("ok")])
    assert_paused(await send(client, agent.id, "Weather?", client_tools=[WEATHER]))

    finished = await answer(client, agent.id, [ClientToolReturn(tool_call_id="call_w", tool_return=sent)])

    assert_ended(finished)
    assert only_tool_returns(finished)[0].tool_return == kept
    [tool_message] = [m for m in stored_messages(db, agent.id) if m.role == "tool"]
    assert packed(tool_message.tool_returns[0].func_response)["message"] == kept
    assert sent_tool_results(llm.requests(model_name)[1])["call_w"]["message"] == kept


# --- several calls in one response -------------------------------------------------------


async def test_parallel_mix_of_approve_deny_client_and_ordinary_calls(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's test_parallel_tool_calling: the ordinary call is shown but held back with the
    others; after every answer, ONE tool message returns all four in the model's order."""
    agent = approval_agent(make_agent, "core_memory_append", "archival_memory_insert", parallel=True)
    model_calls = [
        remember("call_a", "Ada."),
        call("memory_insert", "call_d", label="notes", new_string="met Ada"),
        archive("call_b"),
        weather("call_c"),
    ]
    llm.script(model_name, [reply(*model_calls, content="Doing four things."), text("All done.")])

    paused = await send(client, agent.id, "Do it all.", client_tools=[WEATHER])

    assert_paused(paused)
    assert types_of(paused) == ["user_message", "assistant_message", "tool_call_message", "approval_request_message"]
    tool_call_message = paused.messages[2]
    assert [c.tool_call_id for c in tool_call_message.tool_calls] == ["call_d"]  # type: ignore[union-attr]
    assert [c.tool_call_id for c in approval_request_of(paused).tool_calls] == ["call_a", "call_b", "call_c"]
    state = await client.state(agent.id)
    assert state is not None and state.pending_approval is not None
    assert [(c.tool_call_id, c.kind) for c in state.pending_approval.calls] == [
        ("call_a", "approval"),
        ("call_b", "approval"),
        ("call_c", "client_tool"),
    ]
    assert block_value(db, agent.id, "notes") == "", "the ordinary call ran before the held calls were answered"

    await client.signal(agent.id, "deny", {"tool_call_id": "call_b", "reason": "no archiving"})
    await wait_for_state(client, agent.id, answered("call_b"))
    assert block_value(db, agent.id, "notes") == "", "the ordinary call ran after a partial answer"
    finished = await answer(
        client,
        agent.id,
        [
            ApprovalAnswer(tool_call_id="call_a", approve=True),
            ClientToolReturn(tool_call_id="call_c", tool_return="rainy"),
        ],
    )

    assert_ended(finished)
    assert types_of(finished) == ["approval_response_message", "tool_return_message", "assistant_message"]
    assert sorted(a.tool_call_id for a in approval_response_of(finished).approvals) == ["call_a", "call_b", "call_c"]
    returns = only_tool_returns(finished)
    assert [(r.tool_call_id, r.status) for r in returns] == [
        ("call_a", "success"),
        ("call_d", "success"),
        ("call_b", "error"),
        ("call_c", "success"),
    ]
    assert returns[2].tool_return == "Error: request to call tool denied. User reason: no archiving"
    assert returns[3].tool_return == "rainy"
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nAda."
    assert block_value(db, agent.id, "notes") == "met Ada"
    assert passage_count(db, agent.id) == 0, "a denied archival insert ran"
    second = llm.requests(model_name)[1]
    assert_calls_paired(second["messages"])
    assert list(sent_tool_results(second)) == ["call_a", "call_d", "call_b", "call_c"]
    [assistant] = [m for m in second["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
    assert sorted(c["id"] for c in assistant["tool_calls"]) == ["call_a", "call_b", "call_c", "call_d"]
    assert assistant["content"] == "Doing four things."


async def test_approve_signal_without_id_approves_every_approval_but_not_client_tools(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """`approve` with no tool_call_id answers all pending approvals; a client tool still needs its result."""
    agent = approval_agent(make_agent, "core_memory_append", "archival_memory_insert", parallel=True)
    llm.script(model_name, [reply(remember("call_a"), archive("call_b"), weather("call_c")), text("done")])
    assert_paused(await send(client, agent.id, "go", client_tools=[WEATHER]))

    await client.signal(agent.id, "approve", {})

    state = await wait_for_state(client, agent.id, lambda s: answered("call_a")(s) and answered("call_b")(s))
    answers = answers_by_id(state)
    assert answers["call_a"] == ApprovalAnswer(tool_call_id="call_a", approve=True)
    assert answers["call_b"] == ApprovalAnswer(tool_call_id="call_b", approve=True)
    assert answers["call_c"] is None
    assert state.status is RunStatus.running and state.rejected == []
    assert block_value(db, agent.id, "human") == HUMAN_START

    finished = await answer(client, agent.id, [ClientToolReturn(tool_call_id="call_c", tool_return="sunny")])

    assert_ended(finished)
    assert [(r.tool_call_id, r.status) for r in only_tool_returns(finished)] == [
        ("call_a", "success"),
        ("call_b", "success"),
        ("call_c", "success"),
    ]
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nLikes tea."
    assert passage_count(db, agent.id) == 1


# --- the raw temporal CLI ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "payload", "approved"),
    [("approve", {"tool_call_id": "call_a"}, True), ("deny", {"tool_call_id": "call_a", "reason": "not now"}, False)],
    ids=["approve", "deny"],
)
async def test_answer_by_raw_temporal_cli_signal(
    signal: str,
    payload: dict[str, Any],
    approved: bool,
    temporal_address: str,
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
) -> None:
    """An operator with only the `temporal` CLI and the agent id can answer a paused run."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a")), text("ok")])
    paused = await send(client, agent.id, "go")
    assert_paused(paused)

    code, output = await temporal_cli(
        "workflow",
        "signal",
        "--workflow-id",
        agent.id,
        "--name",
        signal,
        "--input",
        json.dumps(payload),
        "--address",
        temporal_address,
    )

    assert code == 0, output
    state = await wait_finished(client, agent.id)
    assert (state.status, state.stop_reason, state.rejected) == (RunStatus.completed, StopReasonType.end_turn, [])
    expected_block = f"{HUMAN_START}\nLikes tea." if approved else HUMAN_START
    assert block_value(db, agent.id, "human") == expected_block
    tail = in_context(db, agent.id)[-3:]
    assert [m.role for m in tail] == ["approval", "tool", "assistant"]
    assert tail[0].approvals == [ApprovalAnswer(tool_call_id="call_a", approve=approved, reason=payload.get("reason"))]
    assert tail[1].tool_returns[0].status == ("success" if approved else "error")
    with db.transaction() as session:
        assert runs.get_run(session, paused.run_id).status is RunStatus.completed


async def test_raw_cli_approve_without_input_approves_every_approval(
    temporal_address: str,
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
) -> None:
    """`temporal workflow signal --name approve` with no input at all is "approve everything"."""
    agent = approval_agent(make_agent, "core_memory_append", "archival_memory_insert", parallel=True)
    llm.script(model_name, [reply(remember("call_a"), archive("call_b")), text("ok")])
    assert_paused(await send(client, agent.id, "go"))

    code, output = await temporal_cli(
        "workflow", "signal", "--workflow-id", agent.id, "--name", "approve", "--address", temporal_address
    )

    assert code == 0, output
    state = await wait_finished(client, agent.id)
    assert (state.status, state.stop_reason) == (RunStatus.completed, StopReasonType.end_turn)
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nLikes tea."
    assert passage_count(db, agent.id) == 1


# --- refused answers ---------------------------------------------------------------------

THREE_HELD = "['call_a', 'call_b', 'call_c']"
INVALID_ANSWERS: dict[str, tuple[list[Answer], str]] = {
    "unknown-id": (
        [ApprovalAnswer(tool_call_id="call_zzz", approve=True)],
        f"Invalid tool call IDs. Expected '{THREE_HELD}', but received '['call_zzz']'.",
    ),
    "approval-for-client-tool": (
        [ApprovalAnswer(tool_call_id="call_c", approve=True)],
        "Tool call 'call_c' (get_weather) is a client-side tool: send its result "
        "(client_tool_return / type 'tool'), not an approval.",
    ),
    "client-result-for-approval": (
        [ClientToolReturn(tool_call_id="call_a", tool_return="done it myself")],
        "Tool call 'call_a' (core_memory_append) needs an approval (approve or deny), not a client tool result.",
    ),
    "duplicate-ids": (
        [ApprovalAnswer(tool_call_id="call_a", approve=True), ApprovalAnswer(tool_call_id="call_a", approve=False)],
        "Invalid approval response: tool call id(s) ['call_a'] answered more than once.",
    ),
    "one-bad-answer-spoils-the-batch": (
        [ApprovalAnswer(tool_call_id="call_a", approve=True), ApprovalAnswer(tool_call_id="call_c", approve=True)],
        "Tool call 'call_c' (get_weather) is a client-side tool: send its result "
        "(client_tool_return / type 'tool'), not an approval.",
    ),
    "already-answered": (
        [ApprovalAnswer(tool_call_id="call_a", approve=False, reason="changed my mind")],
        "Tool call 'call_a' (core_memory_append) has already been answered.",
    ),
}


async def pause_with_three_held_calls(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> AgentState:
    """Two approvals (call_a, call_b) and a client tool (call_c) held in one paused run."""
    agent = approval_agent(make_agent, "core_memory_append", "archival_memory_insert", parallel=True)
    llm.script(model_name, [reply(remember("call_a"), archive("call_b"), weather("call_c")), text("finally done")])
    assert_paused(await send(client, agent.id, "go", client_tools=[WEATHER]))
    return agent


@pytest.mark.parametrize(("answers", "message"), list(INVALID_ANSWERS.values()), ids=list(INVALID_ANSWERS))
async def test_invalid_answer_update_is_refused_and_leaves_no_trace(
    answers: list[Answer],
    message: str,
    request: pytest.FixtureRequest,
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
) -> None:
    """The `answer` update's validator refuses with the reason, before anything is recorded: the
    run stays paused exactly as it was, history and store unchanged, and correct answers still work."""
    agent = await pause_with_three_held_calls(client, llm, model_name, make_agent)
    if answers == INVALID_ANSWERS["already-answered"][0]:
        await client.signal(agent.id, "approve", {"tool_call_id": "call_a"})
        await wait_for_state(client, agent.id, answered("call_a"))
    before_state = await client.state(agent.id)
    assert before_state is not None
    before_events = await history_length(client, agent.id)
    before_messages = stored_messages(db, agent.id)

    with pytest.raises(RunRejectedError) as refused:
        await answer(client, agent.id, answers)

    assert str(refused.value) == message
    after_state = await client.state(agent.id)
    assert after_state is not None and after_state.status is RunStatus.running
    assert answers_by_id(after_state) == answers_by_id(before_state)
    assert after_state.rejected == [], "a refused update is not a rejected signal"
    assert await history_length(client, agent.id) == before_events
    assert stored_messages(db, agent.id) == before_messages

    remaining: list[Answer] = [ClientToolReturn(tool_call_id="call_c", tool_return="sunny")]
    remaining += [
        ApprovalAnswer(tool_call_id=i, approve=True)
        for i, a in answers_by_id(after_state).items()
        if a is None and i != "call_c"
    ]
    finished = await answer(client, agent.id, remaining)
    assert_ended(finished)
    assert [r.status for r in only_tool_returns(finished)] == ["success", "success", "success"]
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nLikes tea."


async def test_answer_after_the_run_finished_is_refused(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's test_send_approval_without_pending_request: no live run, nothing to answer."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [text("hello")])
    assert_ended(await send(client, agent.id, "hi"))
    before_events = await history_length(client, agent.id)
    before_messages = stored_messages(db, agent.id)

    with pytest.raises(RunRejectedError) as refused:
        await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_a", approve=True)])

    assert str(refused.value).startswith(NO_PENDING)
    assert await history_length(client, agent.id) == before_events
    assert stored_messages(db, agent.id) == before_messages


async def test_answer_while_the_run_works_is_refused_with_lettas_text(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A live run that waits for nobody (its model is thinking) refuses answers with Letta's text
    exactly, and the run goes on untouched."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [ScriptedReply(content="slow answer", delay_s=1.5)])
    running = asyncio.create_task(send(client, agent.id, "hi"))
    try:
        await wait_for_state(client, agent.id, lambda s: s.current.startswith("llm request"))

        with pytest.raises(RunRejectedError) as refused:
            await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_a", approve=True)])

        assert str(refused.value) == NO_PENDING
    finally:
        finished = await running
    assert_ended(finished)
    assert types_of(finished) == ["user_message", "assistant_message"]


# --- rejected signals --------------------------------------------------------------------


async def test_bad_signals_are_recorded_as_rejected_and_the_run_still_completes(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Temporal cannot refuse a signal, so one that cannot be taken is recorded (via, payload,
    reason) for the state query and otherwise ignored; the run keeps waiting for good answers."""
    agent = approval_agent(make_agent, "core_memory_append", parallel=True)
    llm.script(model_name, [reply(remember("call_a"), weather("call_c"), delay_s=1.5), text("done")])
    running = asyncio.create_task(send(client, agent.id, "go", client_tools=[WEATHER]))
    await wait_for_state(client, agent.id, lambda s: s.current.startswith("llm request"))
    # Before the pause nothing is pending: an early approval must not count later.
    await client.signal(agent.id, "approve", {})
    await client.signal(agent.id, "approve", {"tool_call_id": "call_a"})
    await wait_for_state(client, agent.id, lambda s: len(s.rejected) == 2)
    paused = await running
    assert_paused(paused)

    bad: list[tuple[str, Any]] = [
        ("deny", {"reason": "no id"}),
        ("approve", {"tool_call_id": "call_nope"}),
        ("client_tool_return", "just a string"),
        ("approve", {"tool_call_id": "call_c"}),
        ("client_tool_return", {"tool_call_id": "call_a", "tool_return": "x"}),
    ]
    for name, payload in bad:
        await client.temporal.get_workflow_handle(workflow_id(agent.id)).signal(name, payload)
    state = await wait_for_state(client, agent.id, lambda s: len(s.rejected) == 2 + len(bad))

    assert [(r.via, r.payload) for r in state.rejected] == [
        ("approve", {}),
        ("approve", {"tool_call_id": "call_a"}),
        ("deny", {"reason": "no id"}),
        ("approve", {"tool_call_id": "call_nope"}),
        ("client_tool_return", {"value": "just a string"}),
        ("approve", {"tool_call_id": "call_c"}),
        ("client_tool_return", {"tool_call_id": "call_a", "tool_return": "x"}),
    ]
    reasons = [r.reason for r in state.rejected]
    assert reasons[0] == NO_PENDING
    assert reasons[1] == NO_PENDING
    assert reasons[2] == "invalid deny signal: tool_call_id: Field required"
    assert reasons[3] == "Invalid tool call IDs. Expected '['call_a', 'call_c']', but received '['call_nope']'."
    assert reasons[4].startswith("invalid client_tool_return signal: input: ")
    assert reasons[5] == (
        "Tool call 'call_c' (get_weather) is a client-side tool: send its result (client_tool_return / type 'tool'), not an approval."
    )
    assert (
        reasons[6]
        == "Tool call 'call_a' (core_memory_append) needs an approval (approve or deny), not a client tool result."
    )
    assert all(r.received_at <= datetime.now(timezone.utc) for r in state.rejected)
    assert state.status is RunStatus.running
    assert answers_by_id(state) == {"call_a": None, "call_c": None}

    await client.signal(agent.id, "approve", {"tool_call_id": "call_a"})
    await client.signal(agent.id, "client_tool_return", {"tool_call_id": "call_c", "tool_return": "sunny"})
    final = await wait_finished(client, agent.id)
    assert (final.status, final.stop_reason) == (RunStatus.completed, StopReasonType.end_turn)
    assert len(final.rejected) == 2 + len(bad)
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nLikes tea."


# --- new messages while paused -----------------------------------------------------------


async def test_user_message_while_paused_is_refused_and_not_stored(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's test_send_user_message_with_pending_request: refused with Letta's text and the ids
    still waiting (an id answered by signal is no longer listed); nothing is recorded."""
    agent = approval_agent(make_agent, "core_memory_append", parallel=True)
    llm.script(model_name, [reply(remember("call_a"), remember("call_b", "Likes jam.")), text("done")])
    assert_paused(await send(client, agent.id, "go"))
    await client.signal(agent.id, "approve", {"tool_call_id": "call_a"})
    await wait_for_state(client, agent.id, answered("call_a"))
    before_events = await history_length(client, agent.id)
    before_messages = stored_messages(db, agent.id)

    with pytest.raises(RunRejectedError) as refused:
        await send(client, agent.id, "Are you there?")

    assert str(refused.value) == f"{PENDING_APPROVAL} Pending tool call ids: ['call_b']"
    assert stored_messages(db, agent.id) == before_messages
    assert not any(m.role == "user" and "Are you there?" in m.text for m in stored_messages(db, agent.id))
    assert await history_length(client, agent.id) == before_events
    assert len(llm.requests(model_name)) == 1

    finished = await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_b", approve=True)])
    assert_ended(finished)
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nLikes tea.\nLikes jam."


async def test_timed_out_pause_is_resumed_by_an_approval_request(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's resume path: a pause that outlives `approval_timeout_seconds` ends the run
    `requires_approval`; the next request must answer it (a user message is refused, with
    nothing stored), and answering opens a new run that finishes the step."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a")), text("resumed")])
    paused = await send(client, agent.id, "go", approval_timeout_seconds=1)
    assert_paused(paused)
    state = await client.state(agent.id)
    assert state is not None and state.pending_approval is not None and state.pending_approval.timeout_at is not None

    ended = await wait_finished(client, agent.id)

    assert (ended.status, ended.stop_reason) == (RunStatus.completed, StopReasonType.requires_approval)
    assert last_stop_reason(db, agent.id) == "requires_approval"
    before_messages = stored_messages(db, agent.id)
    with pytest.raises(RunRejectedError) as refused:
        await send(client, agent.id, "hello?")
    assert str(refused.value) == f"{PENDING_APPROVAL} Pending tool call ids: ['call_a']"
    assert stored_messages(db, agent.id) == before_messages

    resumed = await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_a", approve=True)])

    assert_ended(resumed)
    assert resumed.run_id != paused.run_id
    assert types_of(resumed) == ["approval_response_message", "tool_return_message", "assistant_message"]
    assert block_value(db, agent.id, "human") == f"{HUMAN_START}\nLikes tea."
    assert_calls_paired(llm.requests(model_name)[1]["messages"])


async def test_cancel_while_paused_denies_every_call_and_the_agent_goes_on(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta §2.7: cancelling a paused run gives every call of the response (held and ordinary)
    an error return with Letta's cancel text, so the next run's context has no orphaned call."""
    agent = approval_agent(make_agent, "core_memory_append", parallel=True)
    llm.script(
        model_name,
        [
            reply(remember("call_a"), call("memory_insert", "call_d", label="notes", new_string="x")),
            text("fresh start"),
        ],
    )
    assert_paused(await send(client, agent.id, "go"))

    state = await client.cancel(agent.id)

    assert (state.status, state.stop_reason, state.pending_approval) == (
        RunStatus.cancelled,
        StopReasonType.cancelled,
        None,
    )
    tail = in_context(db, agent.id)[-2:]
    assert [m.role for m in tail] == ["approval", "tool"]
    assert tail[0].approvals == [ApprovalAnswer(tool_call_id="call_a", approve=False, reason=DENIED_ON_CANCEL)]
    assert [(r.tool_call_id, r.status) for r in tail[1].tool_returns] == [("call_a", "error"), ("call_d", "error")]
    assert {packed(r.func_response)["message"] for r in tail[1].tool_returns} == {DENIED_ON_CANCEL}
    assert block_value(db, agent.id, "human") == HUMAN_START
    assert block_value(db, agent.id, "notes") == ""

    after = await send(client, agent.id, "Let's start over.")

    assert_ended(after)
    assert_calls_paired(llm.requests(model_name)[1]["messages"])


async def test_cancel_after_partial_answers_keeps_what_was_given(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Cancelling after some answers: a person's denial keeps its reason and a client's result is
    kept (the client did the work); an approved call never ran, so it gets the cancel text too."""
    agent = approval_agent(make_agent, "core_memory_append", "archival_memory_insert", parallel=True)
    llm.script(model_name, [reply(remember("call_a"), archive("call_b"), weather("call_c"), weather("call_e", "Oslo"))])
    assert_paused(await send(client, agent.id, "go", client_tools=[WEATHER]))
    await client.signal(agent.id, "approve", {"tool_call_id": "call_a"})
    await client.signal(agent.id, "deny", {"tool_call_id": "call_b", "reason": "no"})
    await client.signal(agent.id, "client_tool_return", {"tool_call_id": "call_c", "tool_return": "hail"})
    await wait_for_state(client, agent.id, lambda s: all(answered(i)(s) for i in ("call_a", "call_b", "call_c")))

    state = await client.cancel(agent.id)

    assert state.stop_reason is StopReasonType.cancelled
    approval_response, tool_message = in_context(db, agent.id)[-2:]
    assert approval_response.approvals == [
        ApprovalAnswer(tool_call_id="call_a", approve=True),
        ApprovalAnswer(tool_call_id="call_b", approve=False, reason="no"),
        ClientToolReturn(tool_call_id="call_c", tool_return="hail"),
        ApprovalAnswer(tool_call_id="call_e", approve=False, reason=DENIED_ON_CANCEL),
    ]
    returned = {r.tool_call_id: (r.status, packed(r.func_response)["message"]) for r in tool_message.tool_returns}
    assert returned == {
        "call_a": ("error", DENIED_ON_CANCEL),
        "call_b": ("error", "Error: request to call tool denied. User reason: no"),
        "call_c": ("success", "hail"),
        "call_e": ("error", DENIED_ON_CANCEL),
    }
    assert block_value(db, agent.id, "human") == HUMAN_START, "an approved call ran after the cancel"


async def test_model_request_after_answers_pairs_every_call(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta issue class 3250/3273: a paused response with text and only held calls must still go
    to the model as one assistant message followed by all its results, in this run and the next."""
    agent = approval_agent(make_agent, "core_memory_append", parallel=True)
    llm.script(
        model_name,
        [
            reply(remember("call_a"), weather("call_c"), content="Two things first."),
            text("done"),
            text("again"),
        ],
    )
    paused = await send(client, agent.id, "go", client_tools=[WEATHER])
    assert types_of(paused) == ["user_message", "assistant_message", "approval_request_message"]
    both: list[Answer] = [
        ApprovalAnswer(tool_call_id="call_a", approve=True),
        ClientToolReturn(tool_call_id="call_c", tool_return="fog"),
    ]
    assert_ended(await answer(client, agent.id, both))
    assert_ended(await send(client, agent.id, "and now?"))

    for sent in llm.requests(model_name)[1:]:
        assert_calls_paired(sent["messages"])
        [assistant] = [m for m in sent["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
        assert [c["id"] for c in assistant["tool_calls"]] == ["call_a", "call_c"]
        assert assistant["content"] == "Two things first."
        assert not any(m["role"] == "user" and "approv" in (m["content"] or "") for m in sent["messages"])


# --- bugs these tests found, fixed: they stay as regression tests ---


async def terminate_if_running(client: PerdureClient, agent_id: str) -> None:
    """Stop a run a bug left stuck, so its failing workflow task does not retry for the session."""
    handle = client.temporal.get_workflow_handle(workflow_id(agent_id))
    description = await handle.describe()
    if description.status is WorkflowExecutionStatus.RUNNING:
        await handle.terminate(reason="test cleanup: run left stuck by a known bug")


@pytest.mark.parametrize("signal", ["approve", "deny"])
async def test_signal_with_empty_tool_call_id_is_rejected_not_fatal(
    signal: str, client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A bad signal must be recorded as rejected like any other; it must never brick the run."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a")), text("ok")])
    assert_paused(await send(client, agent.id, "go"))
    try:
        await client.signal(agent.id, signal, {"tool_call_id": ""})

        state = await wait_for_state(client, agent.id, lambda s: len(s.rejected) == 1, timeout=5)
        assert state.rejected[0].via == signal and state.rejected[0].payload == {"tool_call_id": ""}
        assert answers_by_id(state) == {"call_a": None}
        await client.signal(agent.id, "approve", {"tool_call_id": "call_a"})
        final = await wait_finished(client, agent.id)
        assert final.stop_reason is StopReasonType.end_turn
    finally:
        await terminate_if_running(client, agent.id)


@pytest.mark.parametrize("payload", [False, 0, "", []], ids=["false", "zero", "empty-string", "empty-list"])
async def test_malformed_falsy_approve_payload_approves_nothing(
    payload: Any, client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Approval is a safety gate: a payload that is not an object (nor absent) is malformed and
    must be rejected, as `approve "call_a"` is, not read as "approve everything"."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a")), text("ok")])
    assert_paused(await send(client, agent.id, "go"))

    await client.temporal.get_workflow_handle(workflow_id(agent.id)).signal("approve", payload)

    state = await wait_for_state(client, agent.id, lambda s: bool(s.rejected) or s.status is not RunStatus.running)
    assert state.status is RunStatus.running and answers_by_id(state) == {"call_a": None}
    assert block_value(db, agent.id, "human") == HUMAN_START, "a malformed approve ran the tool"
    assert_ended(await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_a", approve=True)]))


async def test_state_after_approval_timeout_shows_nothing_waiting_in_the_run(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """After the timeout the run has ended: its state must not say it waits, let alone show call_a
    as answered, since a resume has to answer call_a again (the signal's approval is gone)."""
    agent = approval_agent(make_agent, "core_memory_append", parallel=True)
    llm.script(model_name, [reply(remember("call_a"), remember("call_b", "Likes jam.")), text("ok")])
    assert_paused(await send(client, agent.id, "go", approval_timeout_seconds=1))
    await client.signal(agent.id, "approve", {"tool_call_id": "call_a"})
    await wait_for_state(client, agent.id, answered("call_a"))

    ended = await wait_finished(client, agent.id)

    assert (ended.status, ended.stop_reason) == (RunStatus.completed, StopReasonType.requires_approval)
    lost = "Invalid tool call IDs. Expected '['call_a', 'call_b']', but received '['call_b']'."
    with pytest.raises(RunRejectedError, match=re.escape(lost)):  # the resume must answer call_a again
        await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_b", approve=True)])
    assert ended.pending_approval is None


async def test_resuming_after_timeout_keeps_the_paused_steps_record(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The step whose LLM call produced the approval request belongs to the run that made that
    call, with that call's usage; answering it later in a new run must not rewrite it."""
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a")), text("ok")])
    paused = await send(client, agent.id, "go", approval_timeout_seconds=1)
    await wait_finished(client, agent.id)
    with db.transaction() as session:
        [before] = runs.list_steps(session, paused.run_id)
    assert before.usage.prompt_tokens > 0 and before.llm_request_ns

    resumed = await answer(client, agent.id, [ApprovalAnswer(tool_call_id="call_a", approve=True)])

    assert_ended(resumed)
    with db.transaction() as session:
        old_steps = runs.list_steps(session, paused.run_id)
        old_run = runs.get_run(session, paused.run_id)
    assert [s.id for s in old_steps] == [before.id], "the paused step left its run"
    assert old_run.usage is not None
    assert old_steps[0].usage.prompt_tokens == before.usage.prompt_tokens == old_run.usage.prompt_tokens
    assert old_steps[0].llm_request_ns == before.llm_request_ns
