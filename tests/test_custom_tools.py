"""Custom Python tools in a real run: the dev server, the worker's sandbox, the scripted model.

Each test makes tools of its own (unique names: the tools table is shared), an agent that names
them like built-ins, and scripts the model to call them. What the model gets back is read from
the run's response and the stored context: Letta's tool return, with stdout and stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.custom_tools import CustomToolActivities
from perdure.names import workflow_id
from perdure.sandbox.isolation import Isolation
from perdure.sandbox.service import ToolSandbox
from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.letta import LettaResponse, LettaToolReturn, RunStatus, StopReasonType
from perdure.schemas.messages import ToolCall
from perdure.schemas.run import CustomToolStepInput
from perdure.schemas.tools import ToolDef
from perdure.scripted.server import ScriptedLLMServer, ScriptedToolCall
from perdure.settings import home_dir
from perdure.store.db import Database
from perdure.tools.catalog import create_custom_tool
from perdure.tools.custom import CustomToolCreate
from starter.client import PerdureClient
from tests.conftest import AgentFactory, eventually
from tests.helpers import block_value, call, calls, in_context, text, tool_returns, types_of
from tests.test_replay import replay_and_record
from workflows.drafts import CANCELLED_CALL

DEADLINE_S = 60.0


def unique(stem: str) -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def make_tool(db: Database, name: str, params: str, body: str, docs: str = "", **options: Any) -> ToolDef:
    """A tool `name(params)` whose body is `body`; `docs` lines go under Args:."""
    source = (
        f"import os, sys, time, json\n\n\ndef {name}({params}):\n"
        f'    """A test tool.\n\n    Args:\n{textwrap.indent(docs, " " * 8)}\n    """\n'
        f"{textwrap.indent(textwrap.dedent(body), ' ' * 4)}\n"
    )
    return create_custom_tool(db, CustomToolCreate(source_code=source, **options))


async def send(client: PerdureClient, agent_id: str, message: str) -> LettaResponse:
    return await asyncio.wait_for(client.send_message(agent_id, message), DEADLINE_S)


def only_return(response: LettaResponse) -> tuple[LettaToolReturn, str]:
    """The one tool return of the response, and the tool's own text (Letta's envelope unpacked)."""
    [tool_return] = tool_returns(response)
    return tool_return, tool_return.tool_return or ""


async def error_return_of(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    tool: ToolDef,
    *,
    check_end_turn: bool = True,
) -> str:
    """Run a turn in which the model calls `tool` once, then answers: the call must be an error
    return (and, by default, the run reach its answer); its text is returned."""
    agent = make_agent(tools=[tool.name])
    llm.script(model_name, [call(tool.name), text("after the error")])

    response = await send(client, agent.id, f"call {tool.name}")

    if check_end_turn:
        assert response.stop_reason.stop_reason is StopReasonType.end_turn
    tool_return, returned = only_return(response)
    assert tool_return.status == "error"
    return returned


def sandbox_isolation() -> Isolation:
    return ToolSandbox.for_worker(home_dir(), "sqlite://").config.isolation


async def test_a_tool_sees_its_agent_variables_and_none_of_the_workers(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-worker-secret")
    monkeypatch.setenv("PERDURE_DATABASE_URL", "postgresql://worker:secret@db/perdure")
    name = unique("read_env")
    make_tool(db, name, "", "return dict(os.environ)")
    agent = make_agent(tools=[name], tool_exec_environment_variables={"WEATHER_TOKEN": "tok-123"})
    llm.script(model_name, [call(name), text("done")])

    response = await send(client, agent.id, "what do you see?")

    assert types_of(response)[-1] == "assistant_message"
    tool_return, returned = only_return(response)
    assert tool_return.status == "success"
    seen = json.loads(returned)
    assert seen["WEATHER_TOKEN"] == "tok-123"
    assert "OPENAI_API_KEY" not in seen and "PERDURE_DATABASE_URL" not in seen
    assert set(seen) <= {"PATH", "HOME", "TMPDIR", "LANG", "WEATHER_TOKEN"}


async def test_tool_variables_and_sources_never_enter_the_workflows_history(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    name = unique("uses_secret")
    make_tool(db, name, "", '# source-marker-7f3a\nreturn len(os.environ["API_TOKEN"])')
    agent = make_agent(tools=[name], tool_exec_environment_variables={"API_TOKEN": secret})
    llm.script(model_name, [call(name), text("done")])

    response = await send(client, agent.id, "use it")

    assert only_return(response)[1] == str(len(secret))
    history = (await client.temporal.get_workflow_handle(workflow_id(agent.id)).fetch_history()).to_json()
    assert secret not in history and "API_TOKEN" not in history, "a tool variable entered the workflow's history"
    assert "source-marker-7f3a" not in history, "the activity loads the tool's source; its input carries the version"


async def test_return_values_stdout_stderr_and_exceptions_as_letta_has_them(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    talk, boom = unique("talk"), unique("boom")
    make_tool(
        db,
        talk,
        "n: int",
        'print("to stdout", n)\nprint("to stderr", file=sys.stderr)\nreturn {"n": n, "items": [1, 2]}',
        "n: A number.",
    )
    make_tool(db, boom, "", 'print("before the fall")\nraise ValueError("no such city")')
    agent = make_agent(tools=[talk, boom])
    llm.script(model_name, [call(talk, n=7), call(boom), text("the loop went on")])

    response = await send(client, agent.id, "go")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    first, second = tool_returns(response)
    assert first.status == "success"
    assert json.loads(first.tool_return or "") == {"n": 7, "items": [1, 2]}
    assert first.stdout == ["to stdout 7\n"] and first.stderr == ["to stderr\n"]
    assert second.status == "error"
    assert second.tool_return == f"Error executing function {boom}: ValueError: no such city"
    assert second.stdout == ["before the fall\n"]
    assert second.stderr is not None and "ValueError: no such city" in second.stderr[0]


async def test_an_endless_loop_is_stopped_at_its_timeout_and_the_run_goes_on(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    name = unique("spin")
    tool = make_tool(db, name, "", "while True:\n    pass", timeout_seconds=1)
    returned = await error_return_of(client, llm, model_name, make_agent, tool)
    assert returned.startswith(f"Error executing function {name}: TimeoutError: the tool ")
    assert "and was stopped" in returned


async def test_a_memory_hog_is_stopped(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    name = unique("hog")
    tool = make_tool(
        db, name, "", "chunks = []\nwhile True:\n    chunks.append(bytearray(50_000_000))", timeout_seconds=30
    )
    returned = await error_return_of(client, llm, model_name, make_agent, tool)
    assert returned == f"Error executing function {name}: MemoryError: "


async def test_a_crashing_sandbox_is_an_error_return(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    name = unique("crash")
    tool = make_tool(db, name, "", "os.kill(os.getpid(), 9)")
    returned = await error_return_of(client, llm, model_name, make_agent, tool)
    assert returned == f"Error executing function {name}: SandboxError: the tool's process was killed (SIGKILL)"


async def test_writing_outside_the_scratch_directory_fails_under_namespaces(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    if sandbox_isolation() is not Isolation.NAMESPACES:
        pytest.skip("bubblewrap's namespaces do not work on this machine")
    target = Path("/var/tmp") / f"escaped-{uuid.uuid4().hex[:8]}.txt"
    name = unique("escape")
    body = f'open("scratch.txt", "w").write("mine")\nopen({str(target)!r}, "w").write("escaped")'

    tool = make_tool(db, name, "", body)
    returned = await error_return_of(client, llm, model_name, make_agent, tool, check_end_turn=False)
    assert returned.startswith(f"Error executing function {name}: OSError: [Errno 30] Read-only file system"), returned
    assert not target.exists()


async def test_the_workers_own_directory_is_out_of_sight_under_namespaces(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    if sandbox_isolation() is not Isolation.NAMESPACES:
        pytest.skip("bubblewrap's namespaces do not work on this machine")
    readme = Path(__file__).resolve().parent.parent / "README.md"
    name = unique("peek")
    make_tool(db, name, "", f"return os.path.exists({str(readme)!r})")
    agent = make_agent(tools=[name])
    llm.script(model_name, [call(name), text("hidden")])

    response = await send(client, agent.id, "peek")

    assert only_return(response)[1] == "False"
    assert readme.exists()


async def test_agent_state_is_a_read_only_view_of_the_agent(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    name = unique("whoami")
    body = """
    human = agent_state.memory.get_block("human").value
    try:
        agent_state.name = "renamed"
    except AttributeError as err:
        refused = str(err)
    return {"id": agent_state.id, "name": agent_state.name, "human": human, "refused": refused}
    """
    make_tool(db, name, 'agent_state: "AgentState"', body)
    agent = make_agent(tools=[name], memory_blocks=[{"label": "human", "value": "Ada"}])
    llm.script(model_name, [call(name), text("ok")])

    response = await send(client, agent.id, "who am I?")

    _, returned = only_return(response)
    assert json.loads(returned) == {
        "id": agent.id,
        "name": agent.name,
        "human": "Ada",
        "refused": "agent_state is read-only in a tool",
    }


async def test_returns_are_capped_by_return_char_limit(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    name = unique("long")
    make_tool(db, name, "", 'return "x" * 500', return_char_limit=100)
    agent = make_agent(tools=[name])
    llm.script(model_name, [call(name), text("ok")])

    response = await send(client, agent.id, "long")

    _, returned = only_return(response)
    assert returned == "x" * 100 + (
        "... [NOTE: function output was truncated since it exceeded the character limit: 500 > 100]"
    )


@pytest.mark.both_stores
async def test_a_tool_edited_while_a_run_waits_for_approval_keeps_the_old_version_for_that_run(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    name = unique("versioned")
    first = make_tool(db, name, "", 'return "version one"', default_requires_approval=True)
    agent = make_agent(tools=[name])
    llm.script(model_name, [call(name), text("first run done"), call(name), text("second run done")])

    paused = await send(client, agent.id, "call it")
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    second = make_tool(db, name, "", 'return "version two"')
    assert second.version != first.version and second.id == first.id
    [pending] = [m for m in paused.messages if m.message_type == "approval_request_message"]
    call_id = pending.tool_calls[0].tool_call_id  # type: ignore[union-attr]

    resumed = await asyncio.wait_for(
        client.answer(agent.id, [ApprovalAnswer(tool_call_id=call_id, approve=True)]), DEADLINE_S
    )

    _, returned = only_return(resumed)
    assert returned == "version one"
    later = await send(client, agent.id, "again")
    assert later.stop_reason.stop_reason is StopReasonType.requires_approval, "the rule made at creation stays"


async def test_cancelling_a_run_during_a_slow_tool_kills_its_process(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    marker = f"slow-{uuid.uuid4().hex[:8]}"
    name = unique("slow")
    make_tool(db, name, "", f'open("{marker}", "w").close()\ntime.sleep(600)', timeout_seconds=600)
    agent = make_agent(tools=[name])
    llm.script(model_name, [call(name), text("never")])

    sending = asyncio.ensure_future(client.send_message(agent.id, "slowly"))
    scratch = await eventually(lambda: _scratch_with(marker), timeout=DEADLINE_S)
    assert _processes_in(scratch), "the tool's process should be running"

    state = await asyncio.wait_for(client.cancel(agent.id), DEADLINE_S)

    assert (state.status, state.stop_reason) == (RunStatus.cancelled, StopReasonType.cancelled)
    await eventually(lambda: not _processes_in(scratch), timeout=10)
    assert not scratch.exists()
    sending.cancel()


async def test_cancelling_midway_through_several_calls_keeps_the_finished_ones(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """One response with a memory edit, then a slow custom tool, then a third call: cancelled
    while the slow one runs, the step commits the response with every call paired to a return:
    the edit that finished keeps its real return (and its effect), the two that did not finish
    say the run was cancelled. The agent takes its next message as usual."""
    marker = f"slow-{uuid.uuid4().hex[:8]}"
    slow = unique("slow")
    make_tool(db, slow, "", f'open("{marker}", "w").close()\ntime.sleep(600)', timeout_seconds=600)
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["memory_insert", slow],
        llm_config={"parallel_tool_calls": True},
    )
    edit = ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": "Ada"}, id="call_edit")
    slow_call = ScriptedToolCall(name=slow, arguments={}, id="call_slow")
    later = ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": "Bo"}, id="call_later")
    llm.script(model_name, [calls(edit, slow_call, later), text("after the cancel")])

    sending = asyncio.ensure_future(client.send_message(agent.id, "three things"))
    scratch = await eventually(lambda: _scratch_with(marker), timeout=DEADLINE_S)
    state = await asyncio.wait_for(client.cancel(agent.id), DEADLINE_S)

    assert (state.status, state.stop_reason) == (RunStatus.cancelled, StopReasonType.cancelled)
    await eventually(lambda: not _processes_in(scratch), timeout=10)
    *_, assistant, tool_message = in_context(db, agent.id)
    assert [c.id for c in assistant.tool_calls] == ["call_edit", "call_slow", "call_later"]
    returned = {
        r.tool_call_id: (r.status, json.loads(r.func_response or "{}")["message"]) for r in tool_message.tool_returns
    }
    assert returned["call_edit"][0] == "success"
    assert returned["call_slow"] == ("error", CANCELLED_CALL)
    assert returned["call_later"] == ("error", CANCELLED_CALL)
    assert block_value(db, agent.id, "human").splitlines() == ["Ada"], (
        "the finished edit stands, the later one never ran"
    )
    sending.cancel()

    next_turn = await send(client, agent.id, "still there?")
    assert next_turn.stop_reason.stop_reason is StopReasonType.end_turn


def _scratch_with(marker: str) -> Path | None:
    found = list(Path(tempfile.gettempdir()).glob(f"perdure-sandbox-*/{marker}"))
    return found[0].parent if found else None


def _processes_in(directory: Path) -> list[int]:
    """Processes whose working directory is `directory` (the tool's, and anything it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.removesuffix(" (deleted)") == str(directory):
            found.append(int(entry.name))
    return found


async def test_a_retried_call_returns_the_recorded_result_without_running_again(
    db: Database, make_agent: AgentFactory
) -> None:
    name = unique("once")
    tool = make_tool(db, name, "", "import uuid\nreturn str(uuid.uuid4())")
    agent = make_agent(tools=[name])
    sandbox = ToolSandbox.for_worker(home_dir(), "sqlite://")
    try:
        activities = CustomToolActivities(db, sandbox)
        step_input = CustomToolStepInput(
            agent_id=agent.id,
            run_id="run-test",
            step_id=f"step-{uuid.uuid4()}",
            tool_call=ToolCall(id="call_once", name=name, arguments="{}"),
            tool_version=tool.version,
        )
        first = await ActivityEnvironment().run(activities.execute_custom_tool, step_input)
        again = await ActivityEnvironment().run(activities.execute_custom_tool, step_input)
    finally:
        sandbox.close()
    assert first.tool_return.status == "success"
    assert again == first


async def test_a_run_with_custom_tools_replays(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The custom tool's activity sits behind a patch marker: the run's history replays on the
    current code (and, recorded, keeps replaying on later code)."""
    name = unique("replayed")
    make_tool(db, name, "x: int", "return x * 2", "x: A number.", enable_parallel_execution=True)
    agent = make_agent(tools=[name], llm_config={"parallel_tool_calls": True})
    llm.script(
        model_name,
        [
            calls(ScriptedToolCall(name=name, arguments={"x": 2}), ScriptedToolCall(name=name, arguments={"x": 3})),
            text("4 and 6"),
        ],
    )

    response = await send(client, agent.id, "double")

    assert [r.tool_return for r in tool_returns(response)] == ["4", "6"]
    await replay_and_record(client, agent.id, "custom-tools")


async def test_tool_rules_hold_for_custom_tools(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A custom tool as an exit_loop tool ends the run with `tool_rule` after it ran."""
    name = unique("finish")
    make_tool(db, name, "", 'return "finished"')
    agent = make_agent(tools=[name], tool_rules=[{"type": "exit_loop", "tool_name": name}])
    llm.script(model_name, [call(name), text("never asked")])

    response = await send(client, agent.id, "finish")

    assert response.stop_reason.stop_reason is StopReasonType.tool_rule
    assert only_return(response)[1] == "finished"


async def test_a_failed_requirements_install_is_the_calls_error_return(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    name = unique("needs_pkg")
    tool = make_tool(db, name, "", "import iniconfig\nreturn 'ran'", pip_requirements=["iniconfig==0.0.0.999"])
    returned = await error_return_of(client, llm, model_name, make_agent, tool)
    assert returned.startswith(
        f"Error executing function {name}: VenvInstallError: could not install iniconfig==0.0.0.999: ERROR: "
    ), returned
