"""MCP activities: list the tools of the servers an agent attaches (once per run), and call one.

Both are regular activities: a server may be slow, so they heartbeat while they wait. A server
that is down, times out or errors is never a failed activity: the listing leaves its tools out
and says so, a call becomes an error tool return and the loop goes on. Servers' env values and
headers are read from the database here; they never appear in inputs, results or logs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from datetime import datetime, timezone
from typing import Any, TypeVar

from temporalio import activity

from activities.tools import preview
from perdure import names
from perdure.mcp.attachments import Attachment, function_name, parse_attachment
from perdure.mcp.sessions import McpSessions, McpUnavailable
from perdure.schemas.mcp import McpListInput, McpListOutput, McpServerConfig, McpToolRef, McpToolSpec, McpToolStepInput
from perdure.schemas.messages import ToolReturn
from perdure.schemas.run import ToolStepOutput
from perdure.schemas.tools import FUNCTION_RETURN_CHAR_LIMIT
from perdure.store import mcp_servers
from perdure.store.db import Database
from perdure.store.errors import NotFoundError
from perdure.store.tables import ToolExecutionRow
from perdure.store.tool_executions import record_once
from perdure.tokens import count_message
from perdure.tool_rules import merge_prefilled_args
from perdure.tools.arguments import decode_arguments
from perdure.tools.registry import known_tool_names
from perdure.tools.returns import package_function_response, truncate_function_return

T = TypeVar("T")
HEARTBEAT_EVERY_S = 5.0


class McpActivities:
    def __init__(self, db: Database, sessions: McpSessions) -> None:
        self._db = db
        self._sessions = sessions

    @activity.defn(name=names.LIST_MCP_TOOLS)
    async def list_mcp_tools(self, input: McpListInput) -> McpListOutput:
        """The run's MCP tools by function name; their schemas are stored under the run for the
        LLM requests. A retried attempt answers with what an earlier one recorded."""
        recorded = await asyncio.to_thread(self._recorded_listing, input.run_id)
        if recorded is not None:
            return McpListOutput(tools=recorded)
        attachments = [parse_attachment(name) for name in input.attachments]
        servers, problems = await asyncio.to_thread(self._servers, [a.server for a in attachments])
        taken = set(input.taken) | await asyncio.to_thread(self._known_tool_names)
        listings = await asyncio.gather(*(self._listing(config) for config in servers.values()))
        offered: dict[str, list[McpToolSpec]] = {}
        for config, (specs, problem) in zip(servers.values(), listings, strict=True):
            if problem is not None:
                problems.append(problem)
            else:
                offered[config.name] = specs
        chosen, more = _choose(attachments, offered, taken)
        problems += more
        for problem in problems:
            activity.logger.warning("run %s: %s", input.run_id, problem)
        refs = await asyncio.to_thread(self._record_listing, input.run_id, chosen)
        return McpListOutput(tools=refs, problems=problems)

    @activity.defn(name=names.CALL_MCP_TOOL)
    async def call_mcp_tool(self, input: McpToolStepInput) -> ToolStepOutput:
        """Run one call once: its result is recorded under `{step_id}:{tool_call_id}`, and a
        retried activity answers with the record."""
        key = f"{input.step_id}:{input.tool_call.id}"
        recorded = await asyncio.to_thread(self._recorded_call, key)
        if recorded is not None:
            return recorded
        started = time.monotonic_ns()
        call = input.tool_call
        arguments, problem = decode_arguments(call.name, call.arguments)
        ran_with: str | None = None
        if arguments is not None and input.prefilled is not None:
            schemas = await asyncio.to_thread(self._schema, input.run_id, call.name)
            arguments, problem = merge_prefilled_args(
                call.name, arguments, input.prefilled, input.prefilled_source, schemas
            )
            if problem is not None:
                return await self._finish(key, input, False, problem, started, invalid_prefill=True)
            ran_with = json.dumps(arguments)
        if arguments is None:
            return await self._finish(key, input, False, problem or "", started)
        try:
            config = await asyncio.to_thread(self._server, input.server)
            success, text = await _heartbeating(self._sessions.call_tool(config, input.tool, arguments))
        except (NotFoundError, McpUnavailable) as err:
            success, text = False, str(err)
        if not success:
            text = f"Error executing function {call.name}: {text}"
        return await self._finish(key, input, success, text, started, arguments=ran_with)

    async def _listing(self, config: McpServerConfig) -> tuple[list[McpToolSpec], str | None]:
        try:
            return await _heartbeating(self._sessions.list_tools(config)), None
        except McpUnavailable as err:
            return [], f"{err}; its tools are not offered in this run"

    async def _finish(
        self,
        key: str,
        input: McpToolStepInput,
        success: bool,
        text: str,
        started: int,
        *,
        invalid_prefill: bool = False,
        arguments: str | None = None,
    ) -> ToolStepOutput:
        call = input.tool_call
        full = ToolReturn(
            tool_call_id=call.id,
            status="success" if success else "error",
            func_response=package_function_response(
                success, truncate_function_return(text, FUNCTION_RETURN_CHAR_LIMIT), datetime.now(timezone.utc)
            ),
        )
        output = ToolStepOutput(
            tool_return=preview(full),
            duration_ns=time.monotonic_ns() - started,
            invalid_prefill=invalid_prefill,
            arguments=arguments,
            tokens=count_message({"role": "tool", "tool_call_id": call.id, "content": full.func_response or ""}),
            tool_call=call if arguments is None else call.model_copy(update={"arguments": arguments}),
        )
        return await asyncio.to_thread(self._record_call, key, output, full)

    # --- database work, in threads ------------------------------------------------------------

    def _recorded_listing(self, run_id: str) -> list[McpToolRef] | None:
        with self._db.transaction(read_only=True) as session:
            return mcp_servers.run_tool_refs(session, run_id)

    def _record_listing(self, run_id: str, chosen: list[tuple[McpToolRef, McpToolSpec]]) -> list[McpToolRef]:
        with self._db.transaction() as session:
            return mcp_servers.record_run_tools(session, run_id, chosen)

    def _servers(self, wanted: list[str]) -> tuple[dict[str, McpServerConfig], list[str]]:
        found: dict[str, McpServerConfig] = {}
        problems: list[str] = []
        with self._db.transaction(read_only=True) as session:
            for name in dict.fromkeys(wanted):
                try:
                    found[name] = mcp_servers.get_server(session, name)
                except NotFoundError:
                    problems.append(f"MCP server {name} is not registered; its tools are not offered in this run")
        return found, problems

    def _server(self, name: str) -> McpServerConfig:
        with self._db.transaction(read_only=True) as session:
            return mcp_servers.get_server(session, name)

    def _known_tool_names(self) -> set[str]:
        with self._db.transaction(read_only=True) as session:
            return known_tool_names(session)

    def _schema(self, run_id: str, function: str) -> dict[str, Any]:
        with self._db.transaction(read_only=True) as session:
            tool = mcp_servers.run_tool_defs(session, run_id, [function]).get(function)
        return tool.json_schema if tool is not None else {}

    def _recorded_call(self, key: str) -> ToolStepOutput | None:
        with self._db.transaction(read_only=True) as session:
            row = session.get(ToolExecutionRow, key)
            return ToolStepOutput.model_validate(row.result) if row is not None else None

    def _record_call(self, key: str, output: ToolStepOutput, full: ToolReturn) -> ToolStepOutput:
        with self._db.transaction() as session:
            return record_once(session, key, output, full)


def _choose(
    attachments: list[Attachment], offered: dict[str, list[McpToolSpec]], taken: set[str]
) -> tuple[list[tuple[McpToolRef, McpToolSpec]], list[str]]:
    """The tools the attachments name, in the agent's order, each under a function name of its own."""
    chosen: list[tuple[McpToolRef, McpToolSpec]] = []
    problems: list[str] = []
    used = set(taken)
    for attachment in attachments:
        specs = offered.get(attachment.server)
        if specs is None:
            continue
        matching = [s for s in specs if attachment.covers(attachment.server, s.name)]
        if not matching and not attachment.everything:
            problems.append(f"MCP server {attachment.server} has no tool {attachment.tool!r}")
        for spec in matching:
            function = function_name(spec.name)
            ref = McpToolRef(function=function, server=attachment.server, tool=spec.name)
            if any(c[0] == ref for c in chosen):
                continue
            if function in used:
                problems.append(
                    f"MCP tool {attachment.server}/{spec.name} is left out: another tool is called {function!r}"
                )
                continue
            used.add(function)
            chosen.append((ref, spec))
    return chosen, problems


async def _heartbeating(work: Awaitable[T]) -> T:
    """Await `work`, heartbeating meanwhile so that a lost worker is noticed and a cancel arrives."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        task.cancel()
