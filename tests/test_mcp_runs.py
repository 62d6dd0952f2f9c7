"""MCP tools in runs, end to end: the real worker starts the stdio test server and talks to the
streamable-HTTP one (both written with the `mcp` SDK), the scripted model calls their tools."""

from __future__ import annotations

import os
import re
import signal
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from perdure.names import LIST_MCP_TOOLS, workflow_id
from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.letta import StopReasonType
from perdure.schemas.mcp import McpServerConfig
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store import mcp_servers
from perdure.settings import Settings
from perdure.store.db import Database
from perdure.store.errors import InvalidRequestError
from starter.client import PerdureClient
from tests.conftest import AgentFactory, eventually
from tests.helpers import call, text, tool_returns
from perdure.schemas.letta import LettaResponse
from tests.mcp_fixtures import HttpServer, free_port, http_server, register, server_name, stdio_server
from tests.test_replay import record, replayer
from worker import perdure_worker


@pytest.fixture(scope="module")
def shared_http() -> object:
    with http_server() as server:
        yield server


def offered(llm: ScriptedLLMServer, model_name: str, request: int = 0) -> dict[str, dict[str, object]]:
    """The tools the model was offered in one request, by name."""
    tools = llm.requests(model_name)[request].get("tools") or []
    return {t["function"]["name"]: t["function"] for t in tools}


async def history_json(client: PerdureClient, agent_id: str) -> str:
    history = await client.temporal.get_workflow_handle(workflow_id(agent_id)).fetch_history()
    return history.to_json()


async def test_stdio_tools_are_offered_and_called_and_the_env_stays_secret(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-worker-secret")  # the worker's key: its MCP servers must not see it
    token = "tok-" + "x" * 20
    server = stdio_server(db, env={"MCP_TOKEN": token})
    agent = make_agent(tools=[f"{server.name}/echo", f"{server.name}/token.length"])
    llm.script(model_name, [call("echo", text="hi"), call("token_length"), text("done")])

    response = await client.send_message(agent.id, "go")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    (echo_status, echoed), (length_status, length) = returns(response)
    assert echo_status == "success" and "echo: hi (pid " in echoed
    assert length_status == "success" and f"token length {len(token)}; worker key seen: False" in length
    tools = offered(llm, model_name)
    assert {"echo", "token_length"} <= set(tools) and "crash" not in tools
    assert tools["echo"]["parameters"]["properties"]["text"]["type"] == "string"  # type: ignore[index]
    recorded = await history_json(client, agent.id)
    assert token not in recorded and "MCP_TOKEN" not in recorded


async def test_a_server_killed_mid_run_is_an_error_return_and_the_next_call_restarts_it(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    server = stdio_server(db)
    agent = make_agent(tools=[f"{server.name}/*"])
    llm.script(model_name, [call("echo", text="before"), call("crash"), call("echo", text="after"), text("still here")])

    response = await client.send_message(agent.id, "go")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    before, crashed, after = returns(response)
    assert crashed[0] == "error" and f"MCP server {server.name} failed" in crashed[1]
    assert before[0] == after[0] == "success"
    assert _pid(before[1]) != _pid(after[1])


async def test_a_server_that_died_between_runs_is_started_again_for_the_next(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    server = stdio_server(db)
    agent = make_agent(tools=[f"{server.name}/echo"])
    llm.script(model_name, [call("echo", text="first"), text("done"), call("echo", text="second"), text("done")])
    ((_, first),) = returns(await client.send_message(agent.id, "go"))
    os.kill(int(_pid(first)), signal.SIGKILL)
    await eventually(lambda: not _running(int(_pid(first))))

    response = await client.send_message(agent.id, "again")

    ((status, second),) = returns(response)
    assert status == "success" and "echo: second" in second and _pid(second) != _pid(first)


async def test_tool_rules_and_parallel_calls_apply_to_mcp_tools(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    server = stdio_server(db)
    ending = make_agent(tools=[f"{server.name}/echo"], tool_rules=[{"type": "exit_loop", "tool_name": "echo"}])
    parallel = make_agent(tools=[f"{server.name}/*"], llm_config={"parallel_tool_calls": True})
    both = [ScriptedToolCall(name="echo", arguments={"text": t}) for t in ("a", "b")]
    llm.script(model_name, [call("echo", text="last"), ScriptedReply(tool_calls=both), text("done")])

    ended = await client.send_message(ending.id, "go")
    answered = await client.send_message(parallel.id, "go")

    assert ended.stop_reason.stop_reason is StopReasonType.tool_rule
    assert [r[0] for r in returns(ended)] == ["success"]
    assert answered.stop_reason.stop_reason is StopReasonType.end_turn
    assert [(status, said.split(" (pid")[0]) for status, said in returns(answered)] == [
        ("success", "echo: a"),
        ("success", "echo: b"),
    ]


async def test_tool_errors_and_timeouts_are_error_returns_and_the_loop_goes_on(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    server = stdio_server(db, timeout=2)
    agent = make_agent(tools=[f"{server.name}/*"])
    llm.script(
        model_name,
        [call("fail", reason="no luck"), call("slow", seconds=30), call("echo", text="later"), text("done")],
    )

    response = await client.send_message(agent.id, "go")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    failed, slow, later = returns(response)
    assert failed[0] == "error" and "failed on purpose: no luck" in failed[1]
    assert slow[0] == "error" and f"MCP server {server.name} did not answer within 2 s" in slow[1]
    assert later[0] == "success" and "echo: later" in later[1]


async def test_http_tools_are_called_with_the_servers_headers_kept_out_of_history(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
    shared_http: HttpServer,
) -> None:
    server = register(
        db,
        McpServerConfig(
            name=server_name("h"), transport="http", url=shared_http.url, headers={"X-Api-Key": shared_http.key}
        ),
    )
    agent = make_agent(tools=[f"{server.name}/*"])
    llm.script(model_name, [call("add", a=2, b=3), call("shout", text="hi"), text("done")])

    response = await client.send_message(agent.id, "go")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert returns(response) == [("success", "5"), ("success", "HI")]
    assert shared_http.key not in await history_json(client, agent.id)


async def test_servers_that_cannot_be_listed_leave_their_tools_out_and_the_run_goes_on(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
    shared_http: HttpServer,
) -> None:
    down = register(
        db, McpServerConfig(name=server_name("d"), transport="http", url=f"http://127.0.0.1:{free_port()}/mcp")
    )
    refused = register(
        db,
        McpServerConfig(name=server_name("r"), transport="http", url=shared_http.url, headers={"X-Api-Key": "wrong"}),
    )
    agent = make_agent(tools=[f"{down.name}/*", f"{refused.name}/add"])
    llm.script(model_name, [call("add", a=1, b=1), text("done")])

    response = await client.send_message(agent.id, "go")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert "add" not in offered(llm, model_name)
    ((status, refused_call),) = returns(response)
    assert status == "error" and "Cannot call add" in refused_call


async def test_an_http_server_down_when_an_approved_call_runs_gives_an_error_return(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    with http_server() as live:
        server = register(
            db,
            McpServerConfig(
                name=server_name("h"),
                transport="http",
                url=live.url,
                headers={"X-Api-Key": live.key},
                timeout_seconds=5,
            ),
        )
        agent = make_agent(tools=[f"{server.name}/add"], tool_rules=[{"type": "requires_approval", "tool_name": "add"}])
        llm.script(
            model_name,
            [
                ScriptedReply(tool_calls=[ScriptedToolCall(name="add", arguments={"a": 1, "b": 2}, id="call_add")]),
                text("ok"),
            ],
        )
        paused = await client.send_message(agent.id, "go")
        assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
        live.stop()

        finished = await client.answer(agent.id, [ApprovalAnswer(tool_call_id="call_add", approve=True)])

    assert finished.stop_reason.stop_reason is StopReasonType.end_turn
    ((status, added),) = returns(finished)
    assert status == "error" and f"MCP server {server.name} failed" in added


async def test_the_tool_list_is_fetched_once_per_run_and_replays_after_it_changed(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    server = stdio_server(db)
    agent = make_agent(tools=[f"{server.name}/*"])
    llm.script(model_name, [call("echo", text="one"), call("echo", text="two"), text("done")])
    first = await client.send_message(agent.id, "go")
    assert first.stop_reason.stop_reason is StopReasonType.end_turn
    history = await client.temporal.get_workflow_handle(workflow_id(agent.id)).fetch_history()
    listings = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == LIST_MCP_TOOLS
    ]
    assert len(listings) == 1
    assert all("extra" not in offered(llm, model_name, n) for n in range(3))

    with db.transaction() as session:  # the server now offers another tool
        mcp_servers.remove_server(session, server.name)
    register(db, server.model_copy(update={"env": {"EXTRA_TOOL": "1"}}))
    await replayer().replay_workflow(history)
    record("mcp-tools", history)

    llm.script(model_name, [text("again")])
    await client.send_message(agent.id, "again")
    assert "extra" in offered(llm, model_name, 3)


async def test_the_workers_stdio_servers_stop_with_it(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    db: Database,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
) -> None:
    own = settings.model_copy(update={"task_queue": f"mcp-stop-{uuid.uuid4().hex[:8]}"})
    server = stdio_server(db)
    agent = make_agent(tools=[f"{server.name}/echo"])
    llm.script(model_name, [call("echo", text="x"), text("done")])
    async with perdure_worker(temporal_env.client, own) as running:
        async with running:
            response = await PerdureClient(temporal_env.client, db, own.task_queue).send_message(agent.id, "go")
            ((status, echoed),) = returns(response)
            pid = int(_pid(echoed))
            assert status == "success" and _running(pid)
    assert not _running(pid)


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_agents_naming_mcp_tools_wrongly_are_refused(make_agent: AgentFactory, db: Database) -> None:
    server = stdio_server(db)
    other = stdio_server(db)
    refusals = {
        "unknown MCP server(s): nosuchserver": ["nosuchserver/echo"],
        "MCP tools are named SERVER/TOOL or SERVER/*": [f"{server.name}/"],
        "which another of the agent's tools is called already": [f"{server.name}/echo", f"{other.name}/echo"],
    }
    for expected, tools in refusals.items():
        with pytest.raises(InvalidRequestError, match=re.escape(expected)):
            make_agent(tools=tools)
    with pytest.raises(InvalidRequestError, match="is called already"):
        make_agent(tools=[f"{server.name}/conversation_search"])
    with pytest.raises(InvalidRequestError, match="tool rules name tool"):
        make_agent(tools=[f"{server.name}/*"], tool_rules=[{"type": "exit_loop", "tool_name": "echo"}])
    agent = make_agent(tools=[f"{server.name}/echo"], tool_rules=[{"type": "exit_loop", "tool_name": "echo"}])
    assert f"{server.name}/echo" in agent.tools


def returns(response: LettaResponse) -> list[tuple[str, str]]:
    """Each tool return of the response as (status, text)."""
    return [(r.status, r.tool_return or "") for r in tool_returns(response)]


def _pid(tool_return: str) -> str:
    found = re.search(r"pid (\d+)", tool_return)
    assert found is not None, tool_return
    return found.group(1)
