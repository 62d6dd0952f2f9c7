"""`perdure approve / deny / tool-return / cancel / status` as a user runs them: real processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus

from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from starter.client import PerdureClient
from tests.test_cli import create, perdure


def call(name: str, call_id: str, **arguments: object) -> ScriptedToolCall:
    return ScriptedToolCall(name=name, arguments=arguments, id=call_id)


@pytest_asyncio.fixture
async def guarded_agent(cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, tmp_path: Path) -> dict:
    """An agent whose core_memory_append needs approval, made from a Letta-style agent file."""
    spec = {
        "name": "guarded",
        "memory_blocks": [{"label": "human", "value": ""}],
        "tools": ["core_memory_append"],
        "tool_rules": [{"type": "requires_approval", "tool_name": "core_memory_append"}],
        "llm_config": {"model": f"scripted/{model_name}", "endpoint": llm.base_url, "parallel_tool_calls": True},
    }
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(spec))
    return await create(cli_env, "--file", str(path))


async def test_approve_prints_the_continuation(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, guarded_agent: dict, client: PerdureClient
) -> None:
    agent_id = guarded_agent["id"]
    llm.script(
        model_name,
        [
            ScriptedReply(tool_calls=[call("core_memory_append", "call_1", label="human", content="Ada")]),
            ScriptedReply(content="Saved."),
        ],
    )
    paused = await perdure(cli_env, "send", agent_id, "remember Ada", "--json")
    body = json.loads(paused.stdout)
    assert body["stop_reason"]["stop_reason"] == "requires_approval"
    assert body["messages"][-1]["message_type"] == "approval_request_message"
    assert body["messages"][-1]["tool_calls"][0]["tool_call_id"] == "call_1"

    status = await perdure(cli_env, "status", agent_id)
    assert "waiting since" in status.stdout and "core_memory_append" in status.stdout and "[call_1]" in status.stdout

    approved = await perdure(cli_env, "approve", agent_id, "call_1", "--json")
    assert approved.returncode == 0, approved.stderr
    continuation = json.loads(approved.stdout)
    assert [m["message_type"] for m in continuation["messages"]] == [
        "approval_response_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert continuation["stop_reason"]["stop_reason"] == "end_turn"
    shown = await perdure(cli_env, "agent", "show", agent_id)
    assert "[human] Ada" in shown.stdout


async def test_deny_and_tool_return_and_no_wait(
    cli_env: dict[str, str],
    llm: ScriptedLLMServer,
    model_name: str,
    guarded_agent: dict,
    client: PerdureClient,
    tmp_path: Path,
) -> None:
    agent_id = guarded_agent["id"]
    tools = tmp_path / "client_tools.json"
    tools.write_text(
        json.dumps(
            [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ]
        )
    )
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[
                    call("core_memory_append", "call_a", label="human", content="x"),
                    call("get_weather", "call_w", city="Paris"),
                ]
            ),
            ScriptedReply(content="It is sunny, and I did not save x."),
        ],
    )
    paused = await perdure(cli_env, "send", agent_id, "weather?", "--client-tools", str(tools))
    assert "stop_reason=requires_approval" in paused.stdout
    assert "approval   > get_weather" in paused.stdout
    offered = [t["function"]["name"] for t in llm.requests(model_name)[0]["tools"]]
    assert "get_weather" in offered

    delivered = await perdure(cli_env, "deny", agent_id, "call_a", "--reason", "not now", "--no-wait", "--json")
    assert json.loads(delivered.stdout) == {"agent_id": agent_id, "delivered": ["call_a"]}
    finished = await perdure(cli_env, "tool-return", agent_id, "call_w", "--status", "success", "--return", "sunny")
    assert finished.returncode == 0, finished.stderr
    assert "answer     > client success: sunny" in finished.stdout
    assert "stop_reason=end_turn" in finished.stdout
    last_request = llm.requests(model_name)[-1]["messages"]
    assert "request to call tool denied. User reason: not now" in last_request[-2]["content"]


async def test_answer_errors_are_one_line_and_exit_2(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, guarded_agent: dict, client: PerdureClient
) -> None:
    agent_id = guarded_agent["id"]
    nothing = await perdure(cli_env, "approve", agent_id)
    assert nothing.returncode == 2 and "No tool call is currently awaiting approval" in nothing.stderr
    llm.script(
        model_name,
        [
            ScriptedReply(tool_calls=[call("core_memory_append", "call_1", label="human", content="Ada")]),
            ScriptedReply(content="ok"),
        ],
    )
    await perdure(cli_env, "send", agent_id, "remember Ada")
    unknown = await perdure(cli_env, "approve", agent_id, "call_nope")
    assert unknown.returncode == 2
    assert (
        unknown.stderr.strip()
        == "perdure: error: Invalid tool call IDs. Expected '['call_1']', but received '['call_nope']'."
    )
    wrong_kind = await perdure(cli_env, "tool-return", agent_id, "call_1", "--return", "x")
    assert wrong_kind.returncode == 2 and "needs an approval (approve or deny)" in wrong_kind.stderr
    busy = await perdure(cli_env, "send", agent_id, "hello?")
    assert busy.returncode == 2 and "waiting for approval" in busy.stderr and "call_1" in busy.stderr
    bad_file = await perdure(cli_env, "send", agent_id, "hi", "--client-tools", "/nonexistent.json")
    assert bad_file.returncode == 2 and "cannot read client tools file" in bad_file.stderr
    approved = await perdure(cli_env, "approve", agent_id)
    assert approved.returncode == 0 and "stop_reason=end_turn" in approved.stdout


async def test_cancel_a_paused_run(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, guarded_agent: dict, client: PerdureClient
) -> None:
    agent_id = guarded_agent["id"]
    none_live = await perdure(cli_env, "cancel", agent_id)
    assert none_live.returncode == 2 and "has no run to cancel" in none_live.stderr
    llm.script(
        model_name,
        [
            ScriptedReply(tool_calls=[call("core_memory_append", "call_1", label="human", content="Ada")]),
            ScriptedReply(content="fresh start"),
        ],
    )
    await perdure(cli_env, "send", agent_id, "remember Ada")
    cancelled = await perdure(cli_env, "cancel", agent_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    state = json.loads(cancelled.stdout)
    assert (state["status"], state["stop_reason"]) == ("cancelled", "cancelled")
    history = json.loads((await perdure(cli_env, "messages", agent_id, "--json", "--limit", "2")).stdout)
    assert [m["message_type"] for m in history] == ["approval_response_message", "tool_return_message"]
    assert (
        history[1]["tool_returns"][0]["tool_return"] == "The user cancelled the request, so the tool call was denied."
    )
    again = await perdure(cli_env, "send", agent_id, "hello again")
    assert again.returncode == 0 and "fresh start" in again.stdout


async def test_approve_after_the_approval_timeout_resumes_in_a_new_run(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, guarded_agent: dict, client: PerdureClient
) -> None:
    """The paused run ended at its timeout; `perdure approve` then takes Letta's resume path."""
    agent_id = guarded_agent["id"]
    llm.script(
        model_name,
        [
            ScriptedReply(tool_calls=[call("core_memory_append", "call_1", label="human", content="Ada")]),
            ScriptedReply(content="Saved at last."),
        ],
    )
    paused = json.loads(
        (await perdure(cli_env, "send", agent_id, "remember Ada", "--approval-timeout", "0.5", "--json")).stdout
    )
    assert paused["stop_reason"]["stop_reason"] == "requires_approval"
    handle = client.temporal.get_workflow_handle(agent_id)
    for _ in range(100):
        if (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED:
            break
        await asyncio.sleep(0.1)
    assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED, (
        "the run ended at its approval timeout"
    )
    waiting = json.loads((await perdure(cli_env, "status", agent_id, "--json")).stdout)
    assert (
        waiting["stop_reason"] == "requires_approval"
        and waiting["pending_approval"]["calls"][0]["tool_call_id"] == "call_1"
    )
    refused = await perdure(cli_env, "send", agent_id, "hello?")
    assert refused.returncode == 2 and "waiting for approval" in refused.stderr

    resumed = await perdure(cli_env, "approve", agent_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    body = json.loads(resumed.stdout)
    assert body["run_id"] != paused["run_id"]
    assert [m["message_type"] for m in body["messages"]] == [
        "approval_response_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert body["stop_reason"]["stop_reason"] == "end_turn"
