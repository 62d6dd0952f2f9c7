"""The bad-input corpus: malformed and hostile agent files, tool arguments, answers and signals,
messages at and over the size limit, non-UTF-8 bytes, deeply nested JSON and unknown fields.

Each must be refused with one clear line (the CLI: exit 2 and `perdure: error: ...`; HTTP: a
4xx with a readable `detail`), store nothing and leave no run running; a model's bad tool
arguments are the exception that proves the rule: the run goes on with an error tool return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.service import RPCError

from perdure.providers.anthropic_format import tool_input
from perdure.providers.base import LLMConnectionError
from perdure.providers.openai import parse_completion
from perdure.providers.schema_answers import decode_structured
from perdure.providers.schema_tools import encode_tool_call
from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.letta import RunStatus, StopReasonType
from perdure.schemas.run import MESSAGE_CHAR_LIMIT
from perdure.scripted.server import ScriptedLLMServer, ScriptedToolCall
from perdure.store.db import Database
from perdure.store.tables import AgentRow, MessageRow, RunRow
from starter.client import PerdureClient
from starter.updates import RunRejectedError
from tests.conftest import API_KEY, AgentFactory
from tests.helpers import block_value, calls, text, tool_returns
from tests.test_approvals import HUMAN_START, approval_agent, remember, reply, send, temporal_cli, wait_for_state
from tests.test_cli import perdure

pytestmark = pytest.mark.usefixtures("worker")

DEEP = 10_000
"""Levels of nesting: far past Python's recursion limit, as a hostile file would go."""
DEEP_LIST = "[" * DEEP + "]" * DEEP
SHORT_WAIT_S = 10.0
"""A bound on a run of two scripted steps (done well within a second): a run stuck on a
failing workflow task is a bug to show, not to wait 300 s for."""


def stored(db: Database) -> dict[str, int]:
    """How many agents, messages and runs the store holds: a refusal must not change any."""
    with db.transaction() as session:
        return {
            row.__tablename__: session.scalar(select(func.count()).select_from(row)) or 0
            for row in (AgentRow, MessageRow, RunRow)
        }


def live_runs(db: Database, agent_id: str) -> int:
    """The agent's runs the store still counts as going (created or running)."""
    live = (RunStatus.created.value, RunStatus.running.value)
    with db.transaction() as session:
        query = select(func.count()).select_from(RunRow).where(RunRow.agent_id == agent_id, RunRow.status.in_(live))
        return session.scalar(query) or 0


def assert_one_cli_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit 2 and exactly one stderr line `perdure: error: ...` naming the problem."""
    lines = result.stderr.splitlines()
    assert (result.returncode, len(lines)) == (2, 1), result.stderr[-2000:]
    assert lines[0].startswith("perdure: error: ") and fragment in lines[0], lines[0]


def assert_one_http_error(answer: httpx.Response, status: int, fragment: str) -> None:
    """The status and one readable `detail` line naming the problem."""
    assert answer.status_code == status, answer.text[:2000]
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and fragment in detail, detail


# --- agent files ---------------------------------------------------------------------------

BAD_AGENT_FILES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "cannot read agent file"),
    ("not-json", b"name: helper\n", "cannot read agent file"),
    ("truncated", b'{"name": "helper", "memory_blocks": [', "cannot read agent file"),
    ("array", b'[{"name": "helper"}]', "must hold a JSON object"),
    ("string", b'"helper"', "must hold a JSON object"),
    ("null", b"null", "must hold a JSON object"),
    ("name-wrong-type", b'{"name": 5}', "name"),
    ("blocks-wrong-type", b'{"memory_blocks": "human"}', "memory_blocks"),
    ("block-without-label", b'{"memory_blocks": [{"value": "x"}]}', "label"),
    (
        "block-over-limit",
        json.dumps({"memory_blocks": [{"label": "h", "value": "x" * 60, "limit": 50}]}).encode(),
        "50",
    ),
    ("tools-wrong-type", b'{"tools": "core_memory_append"}', "tools"),
    ("unknown-tool", b'{"tools": ["rm_rf"]}', "unknown tool(s): rm_rf"),
    ("unknown-rule-type", b'{"tool_rules": [{"type": "teleport", "tool_name": "memory_insert"}]}', "tool_rules"),
    ("refused-field", b'{"tool_ids": ["tool-123"]}', "tool_ids"),
    ("context-window-string", b'{"llm_config": {"model": "openai/gpt-4o", "context_window": "big"}}', "context_window"),
    ("llm-config-string", b'{"llm_config": "openai/gpt-4o"}', "llm_config"),
    ("deeply-nested", ('{"metadata": ' + DEEP_LIST + "}").encode(), "agent file"),
    ("non-utf8", b'{"name": "caf\xe9"}', "agent file"),
    ("utf16-bom", '{"name": "x"}'.encode("utf-16"), "agent file"),
]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [pytest.param(content, fragment, id=case) for case, content, fragment in BAD_AGENT_FILES],
)
async def test_a_bad_agent_file_is_one_line_and_creates_nothing(
    cli_env: dict[str, str], db: Database, tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "agent.json"
    path.write_bytes(content)
    before = stored(db)
    result = await perdure(cli_env, "agent", "create", "--file", str(path))
    assert_one_cli_error(result, fragment)
    assert stored(db) == before


# --- what the CLI sends ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "fragment"),
    [
        pytest.param(["send", "AGENT", os.fsdecode(b"caf\xe9 \xff")], "invalid content", id="non-utf8-text"),
        pytest.param(["send", "AGENT", ""], "content", id="empty-text"),
        pytest.param(
            ["send", "AGENT", "hi", "--max-steps", "many"],
            "--max-steps",
            id="max-steps-not-a-number",
        ),
        pytest.param(
            ["tool-return", "AGENT", "call_a", "--status", "maybe", "--return", "x"],
            "--status",
            id="tool-return-bad-status",
        ),
    ],
)
async def test_a_bad_cli_message_is_one_line_and_starts_no_run(
    cli_env: dict[str, str],
    make_agent: AgentFactory,
    db: Database,
    client: PerdureClient,
    words: list[str],
    fragment: str,
) -> None:
    agent = make_agent()
    before = stored(db)
    result = await perdure(cli_env, *[agent.id if word == "AGENT" else word for word in words])
    assert_one_cli_error(result, fragment)
    assert stored(db) == before and live_runs(db, agent.id) == 0
    assert not await client.has_live_run(agent.id)


# --- tool arguments from the model -----------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        pytest.param('{"label": "human", "new_string": ', "are not valid JSON", id="malformed-json"),
        pytest.param('["human", "Ada"]', "must be a JSON object, got list", id="not-an-object"),
        pytest.param({"label": 5, "new_string": "Ada"}, "Invalid value for 'label'", id="wrong-type"),
        pytest.param({"label": "human", "new_string": "Ada", "sudo": True}, "Unknown argument 'sudo'", id="unknown"),
        pytest.param({"label": "human"}, "Missing required argument", id="missing"),
        pytest.param(
            '{"label": "human", "new_string": ' + DEEP_LIST + "}",
            "nested too deeply",
            id="deeply-nested",
        ),
    ],
)
async def test_bad_tool_arguments_get_an_error_return_and_the_run_goes_on(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
    arguments: dict[str, Any] | str,
    fragment: str,
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": "unknown"}])
    llm.script(model_name, [calls(ScriptedToolCall(name="memory_insert", arguments=arguments)), text("Sorry.")])
    try:
        response = await asyncio.wait_for(client.send_message(agent.id, "I am Ada."), SHORT_WAIT_S)
    except Exception:  # a run whose workflow task keeps failing must not spin for the rest of the session
        with contextlib.suppress(RPCError):
            await client.temporal.get_workflow_handle(agent.id).terminate("bad-input test cleanup")
        raise
    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    [returned] = tool_returns(response)
    assert returned.status == "error" and fragment in (returned.tool_return or ""), returned.tool_return
    assert block_value(db, agent.id) == "unknown", "the tool did not run"
    assert live_runs(db, agent.id) == 0


def test_deeply_nested_json_from_or_to_a_provider_is_a_typed_error_never_a_crash() -> None:
    """An exception other than the providers' typed errors would be retried until the LLM call's
    deadline; the history a provider is sent must never fail to build."""
    assert tool_input(DEEP_LIST) == {"raw_arguments": DEEP_LIST}
    assert json.loads(encode_tool_call("f", DEEP_LIST))["tool_call"]["arguments"] == DEEP_LIST
    with pytest.raises(LLMConnectionError):
        parse_completion(DEEP_LIST.encode())
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_structured('{"response": ' + DEEP_LIST + "}", None)


# --- answers: signals and the answer update --------------------------------------------------

BAD_SIGNALS: list[tuple[str, str, Any, str]] = [
    ("unknown-id", "approve", {"tool_call_id": "call_nope"}, "call_nope"),
    ("id-wrong-type", "approve", {"tool_call_id": ["call_a"]}, "tool_call_id"),
    ("string-payload", "approve", "yes please", "approve"),
    ("list-payload", "deny", ["call_a"], "deny"),
    ("deny-without-id", "deny", {"reason": "no"}, "tool_call_id"),
    ("reason-wrong-type", "deny", {"tool_call_id": "call_a", "reason": {"why": 1}}, "reason"),
    (
        "wrong-kind",
        "client_tool_return",
        {"tool_call_id": "call_a", "status": "success", "tool_return": "x"},
        "needs an approval",
    ),
    ("bad-status", "client_tool_return", {"tool_call_id": "call_a", "status": "maybe", "tool_return": "x"}, "status"),
]


@pytest.mark.parametrize("via", ["sdk", "temporal-cli"])
@pytest.mark.parametrize(("name", "payload", "fragment"), [pytest.param(*case[1:], id=case[0]) for case in BAD_SIGNALS])
async def test_a_bad_signal_is_recorded_as_rejected_and_changes_nothing(
    via: str,
    name: str,
    payload: Any,
    fragment: str,
    temporal_address: str,
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
) -> None:
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a")), text("ok")])
    await send(client, agent.id, "Remember that I like tea.")
    before = stored(db)
    if via == "sdk":
        await client.temporal.get_workflow_handle(agent.id).signal(name, payload)
    else:
        args = ["--workflow-id", agent.id, "--name", name, "--input", json.dumps(payload)]
        code, output = await temporal_cli("workflow", "signal", *args, "--address", temporal_address)
        assert code == 0, output
    state = await wait_for_state(client, agent.id, lambda s: len(s.rejected) == 1)
    assert fragment in state.rejected[0].reason, state.rejected[0].reason
    assert state.status is RunStatus.running and state.pending_approval is not None
    assert [c.answer for c in state.pending_approval.calls] == [None], "nothing was answered"
    assert stored(db) == before and block_value(db, agent.id) == HUMAN_START
    await client.cancel(agent.id)
    assert live_runs(db, agent.id) == 0


async def test_bad_answers_from_the_cli_and_the_update_are_refused(
    cli_env: dict[str, str],
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
) -> None:
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(model_name, [reply(remember("call_a")), text("ok")])
    await send(client, agent.id, "Remember that I like tea.")
    before = stored(db)
    assert_one_cli_error(await perdure(cli_env, "approve", agent.id, "call_nope"), "call_nope")
    with pytest.raises(RunRejectedError, match="call_nope"):
        await client.answer(agent.id, [ApprovalAnswer(tool_call_id="call_nope", approve=True)])
    state = await client.state(agent.id)
    assert state is not None and state.pending_approval is not None
    assert [c.answer for c in state.pending_approval.calls] == [None] and stored(db) == before
    await client.cancel(agent.id)
    assert live_runs(db, agent.id) == 0


# --- HTTP bodies -----------------------------------------------------------------------------


async def post(api_url: str, path: str, content: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=60) as http:
        return await http.post(path, content=content)


UNPARSED = "There was an error parsing the body"
"""FastAPI's 400 for a body its JSON parser gives up on (bytes that are not UTF-8, nesting
past the recursion limit): one line, though it does not say which of the two it was."""
BAD_AGENT_BODIES: list[tuple[str, bytes, str]] = [
    ("not-json", b"name=helper", "JSON"),
    ("array", b"[]", "body"),
    ("wrong-type", b'{"name": ["a"]}', "name"),
    ("refused-field", b'{"tool_ids": ["tool-123"]}', "tool_ids"),
    ("bad-tool-variable", b'{"secrets": {"1KEY": "v"}}', "tool variable names"),
    ("non-utf8", b'{"name": "caf\xe9"}', UNPARSED),
    ("deeply-nested", ('{"metadata": ' + DEEP_LIST + "}").encode(), UNPARSED),
]
BAD_MESSAGE_BODIES: list[tuple[str, bytes, str]] = [
    ("not-json", b"hello", "JSON"),
    ("truncated", b'{"input": "hel', "JSON"),
    ("string", b'"hello"', "body"),
    ("input-wrong-type", b'{"input": 5}', "input"),
    ("messages-wrong-type", b'{"messages": "hello"}', "messages"),
    ("max-steps-wrong-type", b'{"input": "x", "max_steps": "many"}', "max_steps"),
    ("over-the-limit", json.dumps({"input": "x" * (MESSAGE_CHAR_LIMIT + 1)}).encode(), str(MESSAGE_CHAR_LIMIT)),
    (
        "message-over-the-limit",
        json.dumps({"messages": [{"role": "user", "content": "x" * (MESSAGE_CHAR_LIMIT + 1)}]}).encode(),
        str(MESSAGE_CHAR_LIMIT),
    ),
    ("non-utf8", b'{"input": "caf\xe9"}', UNPARSED),
    ("deeply-nested", ('{"input": "x", "metadata": ' + DEEP_LIST + "}").encode(), UNPARSED),
]


def status_for(fragment: str) -> int:
    return 400 if fragment == UNPARSED else 422


def http_cases(cases: list[tuple[str, bytes, str]]) -> list[Any]:
    return [pytest.param(body, fragment, id=case) for case, body, fragment in cases]


@pytest.mark.parametrize(("content", "fragment"), http_cases(BAD_AGENT_BODIES))
async def test_a_bad_agent_body_is_a_4xx_and_creates_nothing(
    api_url: str, db: Database, content: bytes, fragment: str
) -> None:
    before = stored(db)
    assert_one_http_error(await post(api_url, "/v1/agents/", content), status_for(fragment), fragment)
    assert stored(db) == before


@pytest.mark.parametrize(("content", "fragment"), http_cases(BAD_MESSAGE_BODIES))
async def test_a_bad_message_body_is_a_4xx_and_starts_no_run(
    api_url: str, make_agent: AgentFactory, client: PerdureClient, db: Database, content: bytes, fragment: str
) -> None:
    agent = make_agent()
    before = stored(db)
    answer = await post(api_url, f"/v1/agents/{agent.id}/messages", content)
    assert_one_http_error(answer, status_for(fragment), fragment)
    assert stored(db) == before and live_runs(db, agent.id) == 0
    assert not await client.has_live_run(agent.id)


async def test_a_message_exactly_at_the_limit_and_unknown_fields_are_accepted(
    api_url: str, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The limit is inclusive; fields Letta has and Perdure does not use are ignored, as Letta does."""
    agent = make_agent()
    llm.script(model_name, [text("That is long.")])
    at_limit = {"input": "x" * MESSAGE_CHAR_LIMIT, "frobnicate": {"deep": [1, 2]}, "assistant_message_tool_name": "x"}
    answer = await post(api_url, f"/v1/agents/{agent.id}/messages", json.dumps(at_limit).encode())
    assert answer.status_code == 200, answer.text[:2000]
    assert answer.json()["stop_reason"]["stop_reason"] == "end_turn"
    assert llm.requests(model_name)[0]["messages"][-1]["content"] == at_limit["input"]
    assert live_runs(db, agent.id) == 0
