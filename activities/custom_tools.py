"""Custom Python tool calls: a regular activity that runs the tool in a sandbox process.

The activity loads the exact tool version the run started with, the agent's tool variables
(which never travel in the activity's input) and, for a tool with an `agent_state` parameter,
a read-only view of the agent. It heartbeats while the tool runs, so a cancelled run reaches
it and kills the tool's process. Whatever the tool does (returns, raises, loops, eats memory,
dies), the model gets a tool return and the run goes on. The result is recorded under the
step and call id, so a retried activity returns it instead of running the tool again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import Session
from temporalio import activity

from activities.tools import preview
from perdure import names
from perdure.sandbox.call import SandboxCall, SandboxOutcome
from perdure.sandbox.pool import WarmProcess
from perdure.sandbox.service import ToolSandbox
from perdure.sandbox.venvs import VenvInstallError
from perdure.schemas.messages import ToolCall, ToolReturn
from perdure.schemas.run import CustomToolStepInput, ToolStepOutput
from perdure.schemas.tools import ToolDef
from perdure.store import agents
from perdure.store.db import Database
from perdure.store.tables import ToolExecutionRow
from perdure.store.tool_executions import record_once
from perdure.store.tool_variables import get_tool_variables
from perdure.store.tools import get_tool_version
from perdure.tokens import count_message
from perdure.tool_rules import merge_prefilled_args
from perdure.tools.arguments import check_arguments, decode_arguments
from perdure.tools.returns import package_function_response, truncate_function_return
from perdure.tools.source_schema import parse_tool_source

HEARTBEAT_INTERVAL_S = 1.0
ERROR_TEXT_LIMIT = 1_000
"""Letta clips a tool's error text to this many characters."""


@dataclass(frozen=True)
class _Prepared:
    """What the store says about a call before it runs: a recorded result, or what to run."""

    recorded: ToolStepOutput | None = None
    tool: ToolDef | None = None
    call: ToolCall | None = None
    sandbox_call: SandboxCall | None = None
    problem: str | None = None
    """Why the call cannot run (unknown version, bad arguments): the model's error text."""
    invalid_prefill: bool = False


class CustomToolActivities:
    def __init__(self, db: Database, sandbox: ToolSandbox) -> None:
        self._db = db
        self._sandbox = sandbox

    @activity.defn(name=names.EXECUTE_CUSTOM_TOOL)
    async def execute_custom_tool(self, input: CustomToolStepInput) -> ToolStepOutput:
        key = f"{input.step_id}:{input.tool_call.id}"
        started = time.monotonic_ns()
        async with _heartbeating():
            prepared = await asyncio.to_thread(self._prepare, key, input)
            if prepared.recorded is not None:
                return prepared.recorded
            outcome = await self._run(prepared)
        output, full = _packaged(input, prepared, outcome, started)
        return await asyncio.to_thread(self._record, key, output, full)

    def _prepare(self, key: str, input: CustomToolStepInput) -> _Prepared:
        call = input.tool_call
        with self._db.transaction(read_only=True) as session:
            recorded = session.get(ToolExecutionRow, key)
            if recorded is not None:
                return _Prepared(recorded=ToolStepOutput.model_validate(recorded.result))
            tool = get_tool_version(session, call.name, input.tool_version)
            if tool is None or tool.source_code is None:
                return _Prepared(call=call, problem=f"Tool not found: {call.name} (version {input.tool_version})")
            arguments, problem = decode_arguments(call.name, call.arguments)
            if arguments is None:
                return _Prepared(tool=tool, call=call, problem=problem or "")
            if input.prefilled is not None:
                merged, problem = merge_prefilled_args(
                    call.name, arguments, input.prefilled, input.prefilled_source, tool.json_schema
                )
                if problem is not None:
                    return _Prepared(tool=tool, call=call, problem=problem, invalid_prefill=True)
                arguments, call = merged, call.model_copy(update={"arguments": json.dumps(merged)})
            problem = check_arguments(tool.name, tool.json_schema, arguments)
            if problem is not None:
                return _Prepared(tool=tool, call=call, problem=f"TypeError: {problem}")
            uses_state = parse_tool_source(tool.source_code, tool.name).uses_agent_state
            agent_state = _agent_view(session, input.agent_id) if uses_state else None
            variables = get_tool_variables(session, input.agent_id)
        return _Prepared(
            tool=tool,
            call=call,
            sandbox_call=SandboxCall(
                source=tool.source_code,
                function=tool.name,
                arguments=arguments,
                env=variables,
                agent_state=agent_state,
                timeout_s=tool.timeout_seconds,
            ),
        )

    async def _run(self, prepared: _Prepared) -> SandboxOutcome | None:
        """Run the prepared call; None when it could not start (`prepared.problem` says why)."""
        tool, sandbox_call = prepared.tool, prepared.sandbox_call
        if tool is None or sandbox_call is None:
            return None
        requirements = [r.specifier() for r in tool.pip_requirements]
        starting = asyncio.ensure_future(asyncio.to_thread(self._sandbox.process_for, requirements, tool.network))
        try:
            process = await asyncio.shield(starting)
        except VenvInstallError as err:
            return SandboxOutcome(status="error", error_type="VenvInstallError", message=str(err))
        except asyncio.CancelledError:
            starting.add_done_callback(_discard_unused)  # cancelled while the process was being taken
            raise
        try:
            return await asyncio.to_thread(self._sandbox.run, process, sandbox_call)
        except asyncio.CancelledError:
            process.kill()  # the run was cancelled: the tool stops now, not at its timeout
            raise

    def _record(self, key: str, output: ToolStepOutput, full: ToolReturn) -> ToolStepOutput:
        with self._db.transaction() as session:
            return record_once(session, key, output, full)


def _discard_unused(taken: asyncio.Future[WarmProcess]) -> None:
    if not taken.cancelled() and taken.exception() is None:
        taken.result().discard()


def _agent_view(session: Session, agent_id: str) -> dict[str, Any]:
    """What a tool's `agent_state` shows: the id, the name and the memory blocks' labels and values."""
    agent = agents.get_agent(session, agent_id)
    return {"id": agent.id, "name": agent.name, "blocks": [{"label": b.label, "value": b.value} for b in agent.blocks]}


def _packaged(
    input: CustomToolStepInput, prepared: _Prepared, outcome: SandboxOutcome | None, started: int
) -> tuple[ToolStepOutput, ToolReturn]:
    """Letta's tool return: the value as text clipped to the tool's limit, or its error text;
    stdout and stderr as captured."""
    name = input.tool_call.name
    call = prepared.call or input.tool_call
    if outcome is None:
        success, text = False, _error_text(name, prepared.problem or "")
    elif outcome.status == "success":
        limit = prepared.tool.return_char_limit if prepared.tool is not None else len(outcome.value or "")
        success, text = True, truncate_function_return(outcome.value or "", limit)
    else:
        success, text = False, _error_text(name, f"{outcome.error_type}: {outcome.message}")
    full = ToolReturn(
        tool_call_id=call.id,
        status="success" if success else "error",
        func_response=package_function_response(success, text, datetime.now(timezone.utc)),
        stdout=[outcome.stdout] if outcome is not None and outcome.stdout else [],
        stderr=[outcome.stderr] if outcome is not None and outcome.stderr else [],
    )
    prefilled = input.prefilled is not None and not prepared.invalid_prefill and prepared.call is not None
    output = ToolStepOutput(
        tool_call=call,
        tool_return=preview(full).model_copy(update={"stdout": None, "stderr": None}),
        duration_ns=time.monotonic_ns() - started,
        invalid_prefill=prepared.invalid_prefill,
        arguments=call.arguments if prefilled else None,
        tokens=count_message({"role": "tool", "tool_call_id": call.id, "content": full.func_response or ""}),
    )
    return output, full


def _error_text(name: str, problem: str) -> str:
    text = problem if problem.startswith(("Tool not found", "Error")) else f"Error executing function {name}: {problem}"
    return text[:ERROR_TEXT_LIMIT]


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while the body runs: it is how a cancel reaches the activity."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
