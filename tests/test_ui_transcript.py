"""A run reads like a transcript in the Temporal UI: checked through the `temporal` CLI, which
reads the same server APIs the UI does (`workflow show`, `workflow metadata`, `workflow list`).

Summaries name what each step decided, tool records carry parsed arguments and text returns,
the workflow result carries the answer, every handler says what to send, and a paused run's
current details hold its tool_call_id and a payload that can be pasted into a signal.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from perdure.names import workflow_id
from perdure.schemas.agent import LOCAL_MODEL
from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.letta import RunStatus, StopReasonType
from perdure.schemas.messages import ToolCall, ToolReturn
from perdure.schemas.run import LLMStepOutput, ToolStepOutput
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store.db import Database
from starter.client import PerdureClient
from starter.devserver import temporal_binary
from starter.local_model import LocalModelServer
from starter.ui_links import RUN_VIEWS, run_list_url
from tests.conftest import AgentFactory, eventually
from tests.helpers import PERDURE, REPO, block_value, call, text

ANSWER = "Nice to meet you, Ada."
HANDLERS = ("send_message", "answer", "compact", "approve", "deny", "client_tool_return", "state")


async def temporal_cli(temporal_address: str, *args: str) -> Any:
    """Run `temporal ARGS -o json` against the test server; its JSON output."""
    process = await asyncio.create_subprocess_exec(
        temporal_binary(),
        *args,
        "--address",
        temporal_address,
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout)


def payload_json(payloads: dict[str, Any]) -> Any:
    """The one JSON payload of a `payloads` object as `temporal workflow show -o json` prints it."""
    [payload] = payloads["payloads"]
    return decoded(payload)


def decoded(payload: dict[str, Any]) -> Any:
    """A `json/plain` payload (base64 data, as the CLI's JSON output holds it) as its value."""
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
    return json.loads(base64.b64decode(payload["data"]))


def summaries(events: list[dict[str, Any]]) -> list[str]:
    """The summary of every event that has one (activities, local activities, the workflow)."""
    return [decoded(e["userMetadata"]["summary"]) for e in events if e.get("userMetadata", {}).get("summary")]


def marker_results(events: list[dict[str, Any]], activity_type: str) -> list[Any]:
    """Results of the local activities of `activity_type` (recorded as marker events)."""
    results = []
    for event in events:
        marker = event.get("markerRecordedEventAttributes")
        if marker is None or "result" not in marker.get("details", {}):
            continue
        if payload_json(marker["details"]["data"]).get("activity_type") == activity_type:
            results.append(payload_json(marker["details"]["result"]))
    return results


async def test_a_run_reads_as_a_transcript(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, temporal_address: str
) -> None:
    name = f"transcript-{uuid.uuid4().hex[:8]}"
    agent = make_agent(name=name, memory_blocks=[{"label": "human", "value": ""}])
    llm.script(
        model_name,
        [call("memory_insert", label="human", new_string="Name: Ada."), text(ANSWER)],
    )

    response = await client.send_message(agent.id, "I'm Ada.")
    assert response.stop_reason.stop_reason is StopReasonType.end_turn

    history = await temporal_cli(temporal_address, "workflow", "show", "-w", workflow_id(agent.id))
    events = history["events"]
    shown = summaries(events)
    assert f"llm {model_name} step 1" in shown and f"llm {model_name} step 2" in shown
    assert "tool memory_insert(label=human, new_string=Name: Ada.)" in shown
    assert "checkpoint step 1: → memory_insert ok · 3 messages" in shown, shown
    assert "checkpoint step 2: → answer · 1 message" in shown, shown

    [first_answer, _] = [
        payload_json(e["activityTaskCompletedEventAttributes"]["result"])
        for e in events
        if "activityTaskCompletedEventAttributes" in e
    ]
    [recorded_call] = first_answer["tool_calls"]
    assert recorded_call["arguments"] == {"label": "human", "new_string": "Name: Ada."}, "arguments are an object"

    [tool_record] = marker_results(events, "execute_tool")
    assert tool_record["tool_call"]["name"] == "memory_insert"
    assert tool_record["tool_call"]["id"] == recorded_call["id"] == tool_record["tool_return"]["tool_call_id"]
    assert tool_record["tool_call"]["arguments"] == {"label": "human", "new_string": "Name: Ada."}
    returned = tool_record["tool_return"]["func_response"]
    assert returned["status"] == "OK" and isinstance(returned["message"], str), "the return is text, not JSON-in-JSON"

    [completed] = [
        e["workflowExecutionCompletedEventAttributes"]
        for e in events
        if "workflowExecutionCompletedEventAttributes" in e
    ]
    result = payload_json(completed["result"])
    assert result["answer"] == ANSWER and result["message_ids"]

    listed = await temporal_cli(temporal_address, "workflow", "list", "--query", f'AgentName="{name}"')
    assert [run["execution"]["workflowId"] for run in listed] == [workflow_id(agent.id)]


async def test_every_handler_says_what_to_send(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, temporal_address: str
) -> None:
    agent = make_agent()
    llm.script(model_name, [text("Hello.")])
    await client.send_message(agent.id, "Hi")

    metadata = await temporal_cli(temporal_address, "workflow", "metadata", "-w", workflow_id(agent.id))

    [answer] = metadata["queryResult"]
    handlers = {
        h["name"]: h.get("description", "")
        for kind in ("signalDefinitions", "updateDefinitions", "queryDefinitions")
        for h in answer["definition"].get(kind, [])
        if not h["name"].startswith("__")  # the SDK's own and the stream's, which the UI does not offer
    }
    assert sorted(handlers) == sorted(HANDLERS)
    for handler, description in handlers.items():
        assert description, f"{handler} has no description"
    for handler in ("approve", "deny", "client_tool_return", "answer", "send_message", "compact"):
        assert re.search(r"\{.*\}", handlers[handler]), f"{handler}: the description gives an example input"


async def test_a_paused_run_shows_what_to_send_and_agrees_with_its_search_attributes(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    temporal_address: str,
    db: Database,
) -> None:
    name = f"guarded-{uuid.uuid4().hex[:8]}"
    agent = make_agent(
        name=name,
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
    )
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[
                    ScriptedToolCall(
                        id="call_tea", name="core_memory_append", arguments={"label": "human", "content": "Likes tea."}
                    )
                ]
            ),
            ScriptedReply(content="Noted.", delay_s=5.0),
        ],
    )
    paused = await client.send_message(agent.id, "I like tea.")
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval

    metadata = await temporal_cli(temporal_address, "workflow", "metadata", "-w", workflow_id(agent.id))
    [answer] = metadata["queryResult"]
    details = answer["currentDetails"]
    assert "`call_tea`" in details and "since" in details
    pasted = re.search(r"signal `approve`: `(\{[^`]*\})`", details)
    assert pasted is not None, details
    assert json.loads(pasted.group(1)) == {"tool_call_id": "call_tea"}
    assert "“" not in details and '`{"label": "human", "content": "Likes tea."}`' in details

    state = await client.state(agent.id)
    assert state is not None and state.status is RunStatus.running
    assert state.stop_reason is StopReasonType.requires_approval and state.agent_name == name
    [waiting_view] = [query for title, query in RUN_VIEWS if title == "runs waiting for a person"]
    waiting = await temporal_cli(
        temporal_address,
        "workflow",
        "list",
        "--query",
        f'AgentName="{name}" AND {waiting_view}',
    )
    assert [run["execution"]["workflowId"] for run in waiting] == [workflow_id(agent.id)]

    # Approve with the payload the details hold, as a person does from the UI's Send signal.
    process = await asyncio.create_subprocess_exec(
        temporal_binary(),
        "workflow",
        "signal",
        "--address",
        temporal_address,
        "-w",
        workflow_id(agent.id),
        "--name",
        "approve",
        "--input",
        pasted.group(1),
    )
    assert await process.wait() == 0
    await eventually(lambda: block_value(db, agent.id) == "Likes tea." or None)
    working = await client.state(agent.id)
    assert working is not None and working.status is RunStatus.running, "the model's next answer takes 5 s"
    assert working.stop_reason is None and working.pending_approval is None
    query = f'AgentName="{name}" AND ExecutionStatus="Running" AND StopReason IS NULL'
    working_runs = await eventually(lambda: temporal_cli(temporal_address, "workflow", "list", "--query", query))
    assert [run["execution"]["workflowId"] for run in working_runs] == [workflow_id(agent.id)], (
        "a run that works again is no longer listed as waiting"
    )

    assert await eventually(lambda: _completed(temporal_address, agent.id), timeout=30)
    history = await temporal_cli(temporal_address, "workflow", "show", "-w", workflow_id(agent.id))
    shown = summaries(history["events"])
    assert "tool core_memory_append(label=human, content=Likes tea.)" in shown
    assert "checkpoint step 1: → core_memory_append awaits approval · 2 messages" in shown, shown
    assert "checkpoint step 1: approved core_memory_append → ok · 2 messages" in shown, shown


async def _completed(temporal_address: str, agent_id: str) -> bool | None:
    described = await temporal_cli(temporal_address, "workflow", "describe", "-w", workflow_id(agent_id))
    return described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED" or None


@pytest.mark.parametrize(("title", "query"), RUN_VIEWS, ids=[title for title, _ in RUN_VIEWS])
async def test_the_views_perdure_dev_links_to_are_queries_the_server_takes(
    client: PerdureClient, temporal_address: str, title: str, query: str
) -> None:
    link = run_list_url("http://localhost:8233", query)
    assert unquote(link.split("?query=", 1)[1]) == query and " " not in link

    await temporal_cli(temporal_address, "workflow", "list", "--query", query, "--limit", "1")


@pytest.mark.parametrize(
    ("recorded", "arguments"),
    [
        ({"id": "c", "name": "memory_insert", "arguments": '{"label":"human"}'}, '{"label":"human"}'),
        ({"id": "c", "name": "memory_insert", "arguments": {"label": "human"}}, '{"label": "human"}'),
        ({"id": "c", "name": "memory_insert", "arguments": "not json"}, "not json"),
    ],
)
def test_recorded_tool_calls_load_as_strings_and_objects(recorded: dict[str, Any], arguments: str) -> None:
    """Histories recorded before (arguments as a string) and after (an object) both load."""
    output = LLMStepOutput.model_validate({"model": "m", "tool_calls": [recorded]})
    assert output.tool_calls == [ToolCall(id="c", name="memory_insert", arguments=arguments)]


def test_a_tool_record_made_before_loads_and_a_new_one_round_trips() -> None:
    envelope = '{"status": "OK", "message": "None", "time": "2026-01-01 10:00:00 AM UTC+0000"}'
    old = ToolStepOutput.model_validate(
        {"tool_return": {"tool_call_id": "c", "status": "success", "func_response": envelope}, "duration_ns": 5}
    )
    assert old.tool_call is None and old.tool_return.func_response == envelope

    new = old.model_copy(update={"tool_call": ToolCall(id="c", name="memory_insert", arguments='{"label": "human"}')})
    written = json.loads(new.model_dump_json())
    assert written["tool_return"]["func_response"] == json.loads(envelope)
    assert written["tool_call"]["arguments"] == {"label": "human"}
    assert ToolStepOutput.model_validate_json(new.model_dump_json()) == new

    clipped = ToolReturn(tool_call_id="c", status="success", func_response=envelope[:30] + "... [preview]")
    kept = new.model_copy(update={"tool_return": clipped})
    assert json.loads(kept.model_dump_json())["tool_return"]["func_response"] == clipped.func_response
    assert ToolStepOutput.model_validate_json(kept.model_dump_json()) == kept


def readme_agent_file(name: str) -> dict[str, Any]:
    """The agent file the README writes with `cat > NAME <<'JSON'`."""
    readme = (REPO / "README.md").read_text()
    found = re.search(rf"cat > {re.escape(name)} <<'JSON'\n(.*?)\nJSON\n", readme, re.DOTALL)
    assert found is not None, f"README.md has no {name}"
    return json.loads(found.group(1))


async def test_the_readme_approval_example_pauses_on_the_local_model(
    client: PerdureClient,
    db: Database,
    local_model: LocalModelServer,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """`perdure dev` without provider keys runs the bundled local model: the agent the README's
    approval example creates with `perdure agent create --file guarded.json` must pause there,
    and an approval must run the call and end the run."""
    agent_file = tmp_path / "guarded.json"
    agent_file.write_text(json.dumps(readme_agent_file("guarded.json")))
    created = subprocess.run(
        [str(PERDURE), "agent", "create", "--file", str(agent_file), "--endpoint", local_model.base_url, "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    agent_id = json.loads(created.stdout)["id"]
    assert json.loads(created.stdout)["llm_config"]["model"] == LOCAL_MODEL, "the model `perdure dev` runs"

    paused = await client.send_message(agent_id, "Remember that I like tea.")

    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    state = await client.state(agent_id)
    assert state is not None and state.pending_approval is not None
    [pending] = state.pending_approval.calls
    assert pending.name == "core_memory_append" and block_value(db, agent_id) == ""

    finished = await client.answer(agent_id, [ApprovalAnswer(tool_call_id=pending.tool_call_id, approve=True)])

    assert finished.stop_reason.stop_reason is StopReasonType.tool_rule
    assert json.loads(pending.arguments)["content"] in block_value(db, agent_id)


async def test_the_details_mark_each_call_answered_while_others_still_wait(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, temporal_address: str
) -> None:
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
        llm_config={"parallel_tool_calls": True},
    )
    remember = [
        ScriptedToolCall(id=f"call_{n}", name="core_memory_append", arguments={"label": "human", "content": fact})
        for n, fact in ((1, "Likes tea."), (2, "Sails."))
    ]
    llm.script(model_name, [ScriptedReply(tool_calls=remember), text("Noted both.")])
    paused = await client.send_message(agent.id, "I like tea and I sail.")
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval

    handle = client.temporal.get_workflow_handle(workflow_id(agent.id))
    await handle.signal("approve", {"tool_call_id": "call_1"})

    async def details() -> str | None:
        [answer] = (await temporal_cli(temporal_address, "workflow", "metadata", "-w", workflow_id(agent.id)))[
            "queryResult"
        ]
        text = answer["currentDetails"]
        return text if "answered" in text else None

    shown = await eventually(details)
    first, second = shown.split("\n\n")[1:]
    assert "`call_1`" in first and "answered" in first and "signal" not in first
    assert "`call_2`" in second and 'signal `approve`: `{"tool_call_id": "call_2"}`' in second
    await handle.signal("approve", {"tool_call_id": "call_2"})
    assert await eventually(lambda: _completed(temporal_address, agent.id), timeout=30)


def test_deeply_nested_arguments_stay_a_string() -> None:
    deep = '{"label": ' + "[" * 5_000 + "]" * 5_000 + "}"
    output = LLMStepOutput(model="m", tool_calls=[ToolCall(id="c", name="memory_insert", arguments=deep)])

    written = json.loads(output.model_dump_json())

    assert written["tool_calls"][0]["arguments"] == deep
    assert LLMStepOutput.model_validate_json(output.model_dump_json()) == output
