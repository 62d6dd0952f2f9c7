"""`perdure send --stream` and `perdure follow` as a user runs them, in real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re

import pytest
import pytest_asyncio

from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from tests.helpers import PERDURE, REPO
from tests.test_cli import create, perdure

pytestmark = pytest.mark.usefixtures("worker")

ANSWER = "Hello Ada, I have saved your name for next time."


@pytest_asyncio.fixture
async def agent(cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str) -> dict:
    return await create(
        cli_env,
        "--name", "stream",
        "--model", f"scripted/{model_name}",
        "--endpoint", llm.base_url,
        "--block", "human=",
        "--tool", "core_memory_append",
    )  # fmt: skip


def remember_then_answer(llm: ScriptedLLMServer, model_name: str) -> None:
    call = ScriptedToolCall(
        id="call_cli_stream", name="core_memory_append", arguments={"label": "human", "content": "Ada"}
    )
    llm.script(model_name, [ScriptedReply(tool_calls=[call]), ScriptedReply(content=ANSWER, chunk_delay_s=0.02)])


async def test_send_stream_prints_tokens_and_steps(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, agent: dict
) -> None:
    remember_then_answer(llm, model_name)

    result = await perdure(cli_env, "send", agent["id"], "I'm Ada", "--stream")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'tool call  > core_memory_append({"label": "human", "content": "Ada"})  [call_cli_stream]'
    assert lines[1].startswith("tool return> success")
    assert lines[2] == f"assistant  > {ANSWER}", "the chunks join on one line"
    assert re.match(r"-- run run-[0-9a-f-]+: stop_reason=end_turn, steps=2, tokens=", lines[3]), lines[3]


async def test_send_stream_json_is_one_letta_message_per_line_with_its_offset(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, agent: dict
) -> None:
    remember_then_answer(llm, model_name)

    result = await perdure(cli_env, "send", agent["id"], "I'm Ada", "--stream", "--json")

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq_id"] for e in events] == list(range(len(events)))
    assert events[-2] == {"message_type": "stop_reason", "stop_reason": "end_turn", "seq_id": len(events) - 2}
    assert events[-1]["message_type"] == "usage_statistics"
    assert "".join(e["content"] for e in events if e["message_type"] == "assistant_message") == ANSWER

    resumed = await perdure(cli_env, "follow", agent["id"], "--from", str(events[2]["seq_id"] + 1), "--json")

    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(line) for line in resumed.stdout.splitlines()] == events[3:]


async def test_stream_shows_a_pending_approval_and_exits_like_send(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, agent: dict
) -> None:
    call = ScriptedToolCall(id="call_needs_yes", name="send_email", arguments={"to": "ada@example.com"})
    llm.script(model_name, [ScriptedReply(tool_calls=[call]), ScriptedReply(content="Sent.")])
    tools = '[{"name": "send_email", "description": "Send an email.", "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}]'
    tools_file = f"{cli_env['PERDURE_HOME']}/client-tools-{model_name}.json"
    with open(tools_file, "w") as f:
        f.write(tools)

    paused = await perdure(cli_env, "send", agent["id"], "Email Ada", "--stream", "--client-tools", tools_file)

    assert paused.returncode == 0, paused.stderr
    assert 'approval   > send_email({"to": "ada@example.com"}) needs an answer  [call_needs_yes]' in paused.stdout
    assert "stop_reason=requires_approval" in paused.stdout

    refused = await perdure(cli_env, "send", agent["id"], "Anything else?", "--stream")
    assert refused.returncode == 2 and refused.stdout == "", (
        "refused before anything streams, not the last run's events"
    )
    assert refused.stderr.startswith("perdure: error: Cannot send a new message: The agent is waiting for approval")
    wrong = await perdure(cli_env, "tool-return", agent["id"], "call_wrong", "--return", "x", "--stream")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.startswith("perdure: error: Invalid tool call IDs.")

    answered = await perdure(cli_env, "tool-return", agent["id"], "call_needs_yes", "--return", "sent", "--stream")

    assert answered.returncode == 0, answered.stderr
    assert "assistant  > Sent." in answered.stdout.splitlines()
    assert "stop_reason=end_turn" in answered.stdout


async def test_stream_bad_input_is_one_line(cli_env: dict[str, str], agent: dict) -> None:
    never_ran = await perdure(cli_env, "follow", agent["id"])
    assert never_ran.returncode == 2
    assert (
        never_ran.stderr.strip() == f"perdure: error: agent {agent['id']} has no run yet; start one with `perdure send`"
    )

    negative = await perdure(cli_env, "follow", agent["id"], "--from", "-1")
    assert negative.returncode == 2 and "--from must be 0 or more" in negative.stderr

    both = await perdure(cli_env, "approve", agent["id"], "call_x", "--stream", "--no-wait")
    assert both.returncode == 2 and "--stream and --no-wait do not go together" in both.stderr

    no_such_run = await perdure(cli_env, "follow", agent["id"], "--run", "run-00000000-0000-0000-0000-000000000000")
    assert no_such_run.returncode == 2
    assert (
        no_such_run.stderr.strip()
        == f"perdure: error: agent {agent['id']} has no run run-00000000-0000-0000-0000-000000000000"
    )

    unknown = await perdure(cli_env, "follow", "agent-00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 2 and "not found" in unknown.stderr


async def test_a_reader_that_leaves_early_is_not_an_error(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, agent: dict
) -> None:
    """`perdure follow ... | head -1`: the pipe's reader is gone before the output is written."""
    remember_then_answer(llm, model_name)
    sent = await perdure(cli_env, "send", agent["id"], "I'm Ada", "--stream", "--json")
    assert sent.returncode == 0, sent.stderr
    read, write = os.pipe()
    os.close(read)  # the reader leaves before the command prints anything

    process = await asyncio.create_subprocess_exec(
        str(PERDURE),
        "follow",
        agent["id"],
        "--json",
        cwd=REPO,
        env=cli_env,
        stdout=write,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(write)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert stderr.decode() == "", "no 'Broken pipe' error when the reader closes the pipe"
    assert process.returncode == 141
