"""Tool execution. Built-in memory tools are short database work and run as local activities.

A tool call's result is recorded under its step and call id in the same transaction as its
effect, so a retried activity returns the recorded result instead of editing memory twice.
"""

from __future__ import annotations

import json
import time
from typing import Any
from datetime import datetime, timezone

from sqlalchemy.orm import Session
from temporalio import activity

from activities.metrics import describe_tool_call
from perdure.schemas.messages import ToolCall, ToolReturn
from perdure.schemas.run import TOOL_RETURN_PREVIEW_CHARS, ToolStepInput, ToolStepOutput
from perdure.store.agents import LockedAgent, try_lock_for_memory_edit
from perdure.store.db import Database
from perdure.store.tool_executions import record, record_once, recorded_result
from perdure.tokens import count_message
from perdure.tool_rules import merge_prefilled_args
from perdure.tools.builtin import BUILTIN_FUNCTIONS, ToolError, run_builtin
from perdure.tools.arguments import decode_arguments
from perdure.tools.registry import get_tool_defs, validate_arguments
from perdure.tools.schemas import READ_ONLY_TOOLS
from perdure.tools.returns import package_function_response, truncate_function_return
from perdure import names


class ToolActivities:
    def __init__(self, db: Database) -> None:
        self._db = db

    @activity.defn(name=names.EXECUTE_TOOL)
    def execute_tool(self, input: ToolStepInput) -> ToolStepOutput:
        """Run one call once. A tool that edits runs in the same transaction as the record of
        its result; a read-only one (the searches) runs in a reader transaction, so several can
        run at once, and its result is recorded after (it has no effect to keep atomic)."""
        describe_tool_call(input.tool_call)
        key = f"{input.step_id}:{input.tool_call.id}"
        started = time.monotonic_ns()
        read_only = input.tool_call.name in READ_ONLY_TOOLS
        with self._db.transaction(read_only=read_only) as session:
            # An attempt still running elsewhere finishes first; the tool's edits use this lock.
            agent = None if read_only else try_lock_for_memory_edit(session, input.agent_id)
            recorded = recorded_result(session, key)
            if recorded is not None:
                return recorded
            output, full = _execute(session, input, started, agent)
            if not read_only:
                record(session, key, output, full)
                return output
        with self._db.transaction() as session:
            return record_once(session, key, output, full)


def _execute(
    session: Session, input: ToolStepInput, started: int, agent: LockedAgent | None
) -> tuple[ToolStepOutput, ToolReturn]:
    call, problem = input.tool_call, None
    if input.prefilled is not None:
        call, problem = _with_prefilled(session, call, input.prefilled, input.prefilled_source)
    success, text = (False, problem) if problem is not None else run_tool_call(session, input.agent_id, call, agent)
    full = ToolReturn(
        tool_call_id=call.id,
        status="success" if success else "error",
        func_response=package_function_response(success, text, datetime.now(timezone.utc)),
    )
    output = ToolStepOutput(
        tool_call=call,
        tool_return=preview(full),
        duration_ns=time.monotonic_ns() - started,
        invalid_prefill=problem is not None,
        arguments=call.arguments if input.prefilled is not None and problem is None else None,
        tokens=count_message({"role": "tool", "tool_call_id": call.id, "content": full.func_response or ""}),
    )
    return output, full


def _with_prefilled(
    session: Session, call: ToolCall, prefilled: dict[str, Any], source: str
) -> tuple[ToolCall, str | None]:
    """Override the model's arguments with a rule's; a prefill that does not fit the schema
    blocks the call (Letta: the run stops with invalid_tool_call)."""
    tool = get_tool_defs(session, [call.name]).get(call.name)
    model_args, _ = decode_arguments(call.name, call.arguments)
    schema = tool.json_schema if tool is not None else {}
    merged, problem = merge_prefilled_args(call.name, model_args or {}, prefilled, source, schema)
    return call.model_copy(update={"arguments": json.dumps(merged)}), problem


def preview(tool_return: ToolReturn) -> ToolReturn:
    """The first `TOOL_RETURN_PREVIEW_CHARS` of a return: all the workflow needs to decide and report."""
    text = tool_return.func_response or ""
    if len(text) <= TOOL_RETURN_PREVIEW_CHARS:
        return tool_return
    clipped = f"{text[:TOOL_RETURN_PREVIEW_CHARS]}... [preview of {len(text)} characters; the full return is stored]"
    return tool_return.model_copy(update={"func_response": clipped})


def run_tool_call(
    session: Session, agent_id: str, call: ToolCall, agent: LockedAgent | None = None
) -> tuple[bool, str]:
    """Check, run and clip one call. A refused or failed call changes nothing (savepoint).
    `agent` is the agent as the caller locked it, if it did: the tool's edits need no second lock."""
    tool = get_tool_defs(session, [call.name]).get(call.name)
    if tool is None:
        return False, f"Tool not found: {call.name}"
    arguments, problem = decode_arguments(call.name, call.arguments)
    if arguments is None:
        return False, problem or ""
    problem = validate_arguments(tool, arguments)
    if problem is not None:
        return False, f"Error executing function {call.name}: TypeError: {problem}"
    if call.name not in BUILTIN_FUNCTIONS:
        return False, f"Error executing function {call.name}: tool {call.name} has no executor on this worker"
    try:
        with session.begin_nested():
            text = run_builtin(session, agent_id, call.name, arguments, agent)
    except ToolError as err:
        return False, f"Error executing function {call.name}: {err}"
    if call.name not in READ_ONLY_TOOLS:
        text = truncate_function_return(text, tool.return_char_limit)
    return True, text
