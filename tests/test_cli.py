"""The `perdure` command as a user runs it: a real process, the test server, the test database."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import pytest_asyncio

from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from starter.client import PerdureClient
from tests.helpers import PERDURE, REPO


async def perdure(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI without blocking the event loop the test worker runs on."""
    process = await asyncio.create_subprocess_exec(
        str(PERDURE), *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, stdout.decode(), stderr.decode())


async def create(env: dict[str, str], *args: str) -> dict:
    result = await perdure(env, "agent", "create", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest_asyncio.fixture
async def scripted_agent(cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str) -> dict:
    return await create(
        cli_env, "--name", "cli", "--model", f"scripted/{model_name}", "--endpoint", llm.base_url, "--block", "human="
    )


async def test_create_with_flags(cli_env: dict[str, str], llm: ScriptedLLMServer) -> None:
    agent = await create(
        cli_env,
        "--name",
        "flags",
        "--model",
        "openai/gpt-4o-mini",
        "--endpoint",
        "http://127.0.0.1:9/v1",
        "--context-window",
        "32000",
        "--system",
        "Be brief.",
        "--block",
        "persona=A helper.",
        "--block",
        "human=Ada",
        "--tool",
        "archival_memory_search",
        "--parallel-tool-calls",
    )
    assert agent["id"].startswith("agent-") and agent["name"] == "flags"
    assert agent["llm_config"] == {
        "model": "openai/gpt-4o-mini",
        "endpoint": "http://127.0.0.1:9/v1",
        "context_window": 32000,
        "parallel_tool_calls": True,
    }
    assert [(b["label"], b["value"]) for b in agent["blocks"]] == [("persona", "A helper."), ("human", "Ada")]
    assert agent["tools"] == ["conversation_search", "memory_replace", "memory_insert", "archival_memory_search"]
    assert "api_key" not in json.dumps(agent)


async def test_create_from_letta_agent_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    spec = {
        "name": "from-file",
        "system": "You are a file agent.",
        "memory_blocks": [
            {"label": "persona", "value": "calm", "limit": 500, "read_only": True, "description": "who I am"}
        ],
        "tools": ["core_memory_append"],
        "tool_rules": [{"type": "exit_loop", "tool_name": "core_memory_append"}],
        "llm_config": {"model": "openai/gpt-4o-mini", "context_window": 16000},
    }
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(spec))
    agent = await create(cli_env, "--file", str(path))
    assert agent["system"] == "You are a file agent."
    assert agent["blocks"][0] | {"id": None} == {**spec["memory_blocks"][0], "id": None}
    assert agent["tool_rules"] == [{"type": "exit_loop", "tool_name": "core_memory_append"}]
    assert agent["llm_config"]["context_window"] == 16000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gpt-4o"], "model must be a handle 'provider/model-name'"),
        (["--block", "no-equals-sign"], "--block takes LABEL=VALUE"),
        (["--tool", "rm_rf"], "unknown tool(s): rm_rf"),
        (["--block", "human=a", "--block", "human=b"], "memory block labels must be unique"),
        (["--context-window", "10"], "context_window"),
        (["--file", "/nonexistent/agent.json"], "cannot read agent file"),
    ],
)
async def test_create_rejects_bad_input(cli_env: dict[str, str], args: list[str], message: str) -> None:
    before = await perdure(cli_env, "agent", "list", "--json")
    result = await perdure(cli_env, "agent", "create", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("perdure: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (await perdure(cli_env, "agent", "list", "--json")).stdout == before.stdout, "nothing was created"


async def test_rule_naming_a_missing_tool_is_rejected(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"tool_rules": [{"type": "exit_loop", "tool_name": "send_message"}]}))
    result = await perdure(cli_env, "agent", "create", "--file", str(path))
    assert result.returncode == 2 and "tool rules name tool(s) the agent does not have: send_message" in result.stderr


async def test_list_show_delete(cli_env: dict[str, str]) -> None:
    agent = await create(cli_env, "--name", "to-delete", "--block", "human=Grace")
    listed = json.loads((await perdure(cli_env, "agent", "list", "--json")).stdout)
    assert agent["id"] in [a["id"] for a in listed]
    shown = await perdure(cli_env, "agent", "show", agent["id"])
    assert shown.returncode == 0 and "[human] Grace" in shown.stdout
    deleted = await perdure(cli_env, "agent", "delete", agent["id"], "--json")
    assert json.loads(deleted.stdout) == {"id": agent["id"], "deleted": True}
    missing = await perdure(cli_env, "agent", "show", agent["id"])
    assert missing.returncode == 2 and f"agent '{agent['id']}' not found" in missing.stderr


async def test_send_json_has_lettas_response_shape(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, scripted_agent: dict, client: PerdureClient
) -> None:
    llm.script(
        model_name,
        [
            ScriptedReply(
                tool_calls=[ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": "Ada"})]
            ),
            ScriptedReply(content="Hello Ada"),
        ],
    )
    result = await perdure(cli_env, "send", scripted_agent["id"], "I am Ada", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"run_id", "messages", "stop_reason", "usage"}
    assert body["stop_reason"] == {"message_type": "stop_reason", "stop_reason": "end_turn"}
    assert body["usage"]["message_type"] == "usage_statistics" and body["usage"]["step_count"] == 2
    assert [m["message_type"] for m in body["messages"]] == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    tool_call = body["messages"][1]
    assert tool_call["tool_call"]["name"] == "memory_insert" and tool_call["tool_calls"][0]["tool_call_id"]
    assert body["messages"][2]["tool_returns"][0]["status"] == "success"

    history = json.loads((await perdure(cli_env, "messages", scripted_agent["id"], "--json")).stdout)
    assert [m["id"] for m in history] == [m["id"] for m in body["messages"]]
    last_two = json.loads((await perdure(cli_env, "messages", scripted_agent["id"], "--limit", "1", "--json")).stdout)
    assert [m["message_type"] for m in last_two] == ["assistant_message"]
    llm.script(model_name, [ScriptedReply(content="Hello again")])
    text = await perdure(cli_env, "send", scripted_agent["id"], "and again")
    assert text.returncode == 0 and "stop_reason=end_turn" in text.stdout


async def test_send_errors(cli_env: dict[str, str], scripted_agent: dict) -> None:
    missing = await perdure(cli_env, "send", "agent-nope", "hi")
    assert missing.returncode == 2 and "agent 'agent-nope' not found" in missing.stderr
    bad_steps = await perdure(cli_env, "send", scripted_agent["id"], "hi", "--max-steps", "0")
    assert bad_steps.returncode == 2 and "max_steps" in bad_steps.stderr
    too_many = await perdure(cli_env, "send", scripted_agent["id"], "hi", "--max-steps", "5000")
    assert too_many.returncode == 2 and "max_steps: Input should be less than or equal to 1000" in too_many.stderr
    unreachable = await perdure({**cli_env, "TEMPORAL_ADDRESS": "127.0.0.1:9"}, "send", scripted_agent["id"], "hi")
    assert unreachable.returncode == 1 and "cannot reach Temporal at 127.0.0.1:9" in unreachable.stderr
    bad_limit = await perdure(cli_env, "messages", scripted_agent["id"], "--limit", "0")
    assert bad_limit.returncode == 2 and "--limit must be at least 1" in bad_limit.stderr
    bad_timeout = await perdure(cli_env, "send", scripted_agent["id"], "hi", "--timeout", "0")
    assert bad_timeout.returncode == 2 and "--timeout must be more than 0 seconds, got 0" in bad_timeout.stderr
    assert bad_timeout.stderr.count("\n") == 1


async def test_status(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, scripted_agent: dict, client: PerdureClient
) -> None:
    idle = await perdure(cli_env, "status", scripted_agent["id"], "--json")
    assert idle.returncode == 0 and json.loads(idle.stdout) == {"agent_id": scripted_agent["id"], "status": "idle"}
    llm.script(model_name, [ScriptedReply(content="hi")])
    sent = json.loads((await perdure(cli_env, "send", scripted_agent["id"], "hello", "--json")).stdout)
    shown = await perdure(cli_env, "status", scripted_agent["id"], "--json")
    state = json.loads(shown.stdout)
    assert (state["run_id"], state["status"], state["stop_reason"]) == (sent["run_id"], "completed", "end_turn")
    text = await perdure(cli_env, "status", scripted_agent["id"])
    assert f"run {sent['run_id']} completed" in text.stdout
    missing = await perdure(cli_env, "status", "agent-nope")
    assert missing.returncode == 2 and "agent 'agent-nope' not found" in missing.stderr


async def test_failed_run_says_why_and_still_exits_zero(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, scripted_agent: dict, client: PerdureClient
) -> None:
    """A run that reached a stop reason exits 0 (Letta answers 200); the text names the cause."""
    llm.script(model_name, [ScriptedReply(status=401, error={"error": {"message": "Incorrect API key provided"}})])
    result = await perdure(cli_env, "send", scripted_agent["id"], "hello")
    assert result.returncode == 0, result.stderr
    assert "stop_reason=llm_api_error" in result.stdout
    assert "-- error: 401 from" in result.stdout and "Incorrect API key provided" in result.stdout

    llm.script(model_name, [ScriptedReply(status=401, error={"error": {"message": "Incorrect API key provided"}})])
    as_json = await perdure(cli_env, "send", scripted_agent["id"], "hello", "--json")
    assert as_json.returncode == 0, as_json.stderr
    error = json.loads(as_json.stdout)["error"]
    assert (error["message_type"], error["error_type"]) == ("error_message", "llm_authentication")
    assert "401 from" in error["detail"] and "Incorrect API key provided" in error["detail"]


async def test_workflow_id_is_the_agent_id(
    cli_env: dict[str, str],
    temporal_address: str,
    llm: ScriptedLLMServer,
    model_name: str,
    scripted_agent: dict,
    client: PerdureClient,
) -> None:
    """`temporal workflow ... -w AGENT_ID` must find the agent's run with the id the CLI prints."""
    from starter.devserver import temporal_binary

    llm.script(model_name, [ScriptedReply(content="hi")])
    assert (await perdure(cli_env, "send", scripted_agent["id"], "hello")).returncode == 0
    process = await asyncio.create_subprocess_exec(
        temporal_binary(),
        "workflow",
        "describe",
        "-w",
        scripted_agent["id"],
        "--address",
        temporal_address,
        "--output",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert json.loads(stdout)["workflowExecutionInfo"]["type"]["name"] == "AgentRun"
