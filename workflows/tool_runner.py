"""Running a step's tool calls under the tool rules.

A call the rules do not allow this step is not executed: the model gets Letta's
`[ToolConstraintError]` return with the hints of the rules involved, and the loop goes on.
Approved calls pass the same check (Letta issue 3443: its approval path skipped it). A rule's
prefilled arguments override the model's; if they do not fit the tool, the call is blocked
and the run stops `invalid_tool_call`. Tools marked `enable_parallel_execution` run
concurrently when several calls are allowed; the others follow one by one; returns keep the
model's order either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

from temporalio import workflow
from temporalio.exceptions import is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from perdure.schemas.messages import ToolCall, ToolReturn
    from perdure.schemas.run import AgentSnapshot, CustomToolStepInput, StepRecord, ToolStepInput
    from perdure.schemas.mcp import McpToolStepInput
    from perdure.tool_rules import ToolRulesSolver

from perdure import names
from workflows import activity_calls
from workflows.decisions import precheck_tool_call
from workflows.drafts import error_return
from workflows.metrics import tool_called


@dataclass(frozen=True)
class CallsOutcome:
    """What running a step's calls made: a return per call, and how it went."""

    returns: dict[str, ToolReturn]
    """Every call's return, by call id."""
    ran_with: dict[str, str]
    """Arguments a call ran with when a rule's prefill replaced the model's, by call id."""
    tool_ns: int
    """The step's tool time: the longest call when they ran concurrently, else their sum."""
    executed: list[str]
    """Names of the tools that ran, in the model's order."""
    blocked: bool
    """A rule's prefilled arguments did not fit a tool: the run must stop."""
    tokens: int = 0
    """What the returns add to the next request."""


class ToolRunner:
    def __init__(self, agent: AgentSnapshot, solver: ToolRulesSolver, show: Callable[[str], None]) -> None:
        self._agent = agent
        self._solver = solver
        self._show = show

    async def run(self, step: StepRecord, calls: list[ToolCall], allowed: list[str]) -> CallsOutcome:
        """Run `calls` of `step`; `allowed` are the tools the rules allowed when the model was asked.

        A cancel midway raises `CallsCancelled` with the returns of the calls that finished: their
        effects are stored, so the context must say they ran.
        """
        concurrent = [c for c in calls if c.name in self._agent.parallel_safe_tools] if len(calls) > 1 else []
        finished: dict[str, _Ran] = {}
        try:
            tasks = [asyncio.ensure_future(self._execute(step, c, allowed)) for c in concurrent]
            try:
                await asyncio.gather(*tasks)
            finally:
                finished |= {c.id: t.result() for c, t in zip(concurrent, tasks, strict=True) if _succeeded(t)}
            for call in calls:
                if call not in concurrent:
                    finished[call.id] = await self._execute(step, call, allowed)
        except BaseException as err:
            if is_cancelled_exception(err):
                raise CallsCancelled(_outcome(calls, concurrent, finished)) from err
            raise
        return _outcome(calls, concurrent, finished)

    async def _execute(self, step: StepRecord, call: ToolCall, allowed: list[str]) -> _Ran:
        now = workflow.now()
        if call.name not in allowed:
            return _Ran(error_return(call.id, self._solver.violation_message(call.name), now))
        problem = precheck_tool_call(call, self._agent.tools)
        if problem is not None:
            return _Ran(error_return(call.id, problem, now))
        prefilled = self._solver.prefilled_args(call.name)
        self._show(f"tool {call.name}, step {step.step_number}")
        step_input = ToolStepInput(
            agent_id=self._agent.agent_id,
            run_id=step.run_id,
            step_id=step.id,
            tool_call=call,
            prefilled=prefilled[0] if prefilled else None,
            prefilled_source=prefilled[1] if prefilled else "",
        )
        mcp_tool = next((t for t in self._agent.mcp_tools if t.function == call.name), None)
        custom = self._agent.custom_tools.get(call.name)
        if mcp_tool is not None:  # only runs that listed MCP tools (behind the "mcp-tools" patch) have any
            output = await activity_calls.call_mcp_tool(
                McpToolStepInput(**step_input.model_dump(), server=mcp_tool.server, tool=mcp_tool.tool)
            )
        elif custom is not None and workflow.patched(names.CUSTOM_TOOLS_PATCH):
            versioned = CustomToolStepInput(**step_input.model_dump(), tool_version=custom.version)
            output = await activity_calls.execute_custom_tool(versioned, custom)
        else:
            output = await activity_calls.execute_tool(step_input)
        tool_called(call.name, output.tool_return.status)
        ran = _Ran(output.tool_return, output.duration_ns, tokens=output.tokens, arguments=output.arguments)
        if output.invalid_prefill:
            return replace(ran, blocked=True)
        self._solver.register_call(call.name, output.tool_return.func_response)
        return replace(ran, ran=True)


class CallsCancelled(asyncio.CancelledError):
    """The run was cancelled while its calls ran; `outcome` holds the calls that finished."""

    def __init__(self, outcome: CallsOutcome) -> None:
        super().__init__("run cancelled while its tool calls ran")
        self.outcome = outcome


def _succeeded(task: asyncio.Future[_Ran]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _outcome(calls: list[ToolCall], concurrent: list[ToolCall], results: dict[str, _Ran]) -> CallsOutcome:
    """The outcome of the calls in `results` (all of `calls`, or those that finished before a cancel)."""
    done = [c for c in calls if c.id in results]
    return CallsOutcome(
        returns={c.id: results[c.id].tool_return for c in done},
        ran_with={c.id: arguments for c in done if (arguments := results[c.id].arguments) is not None},
        tool_ns=max((results[c.id].duration_ns for c in done if c in concurrent), default=0)
        + sum(results[c.id].duration_ns for c in done if c not in concurrent),
        executed=[c.name for c in done if results[c.id].ran],
        blocked=any(results[c.id].blocked for c in done),
        tokens=sum(results[c.id].tokens for c in done),
    )


@dataclass(frozen=True)
class _Ran:
    """What one call did: its return, how long it took, whether it ran or its prefill blocked it."""

    tool_return: ToolReturn
    duration_ns: int = 0
    ran: bool = False
    blocked: bool = False
    tokens: int = 0
    arguments: str | None = None
    """The arguments it ran with (a rule's prefill), as Letta stores them: the history shows
    what happened rather than what the model proposed."""
