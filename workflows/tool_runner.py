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
from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from perdure.schemas.messages import ToolCall
    from perdure.schemas.run import AgentSnapshot, ToolStepInput
    from perdure.tool_rules import ToolRulesSolver

from workflows import activity_calls
from workflows.decisions import precheck_tool_call
from workflows.drafts import StepDraft, error_return


@dataclass
class CallsOutcome:
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

    async def run(self, draft: StepDraft, calls: list[ToolCall]) -> CallsOutcome:
        concurrent = [c for c in calls if c.name in self._agent.parallel_safe_tools] if len(calls) > 1 else []
        serial = [c for c in calls if c not in concurrent]
        results = dict(zip([c.id for c in concurrent], await asyncio.gather(*(self._execute(draft, c) for c in concurrent)), strict=True))
        for call in serial:
            results[call.id] = await self._execute(draft, call)
        return CallsOutcome(
            tool_ns=max((results[c.id].duration_ns for c in concurrent), default=0) + sum(results[c.id].duration_ns for c in serial),
            executed=[c.name for c in calls if results[c.id].ran],
            blocked=any(r.blocked for r in results.values()),
            tokens=sum(r.tokens for r in results.values()),
        )

    async def _execute(self, draft: StepDraft, call: ToolCall) -> _Ran:
        """Run one call and store its return in the draft."""
        now = workflow.now()
        if call.name not in draft.allowed:
            draft.returns[call.id] = error_return(call.id, self._solver.violation_message(call.name), now)
            return _Ran()
        problem = precheck_tool_call(call, self._agent.tools)
        if problem is not None:
            draft.returns[call.id] = error_return(call.id, problem, now)
            return _Ran()
        prefilled = self._solver.prefilled_args(call.name)
        self._show(f"tool {call.name}, step {draft.step.step_number}")
        step = draft.step
        output = await activity_calls.execute_tool(
            ToolStepInput(
                agent_id=self._agent.agent_id,
                run_id=step.run_id,
                step_id=step.id,
                tool_call=call,
                prefilled=prefilled[0] if prefilled else None,
                prefilled_source=prefilled[1] if prefilled else "",
            )
        )
        draft.returns[call.id] = output.tool_return
        if output.arguments is not None:
            _record_arguments(draft, call.id, output.arguments)
        if output.invalid_prefill:
            return _Ran(duration_ns=output.duration_ns, blocked=True, tokens=output.tokens)
        self._solver.register_call(call.name, output.tool_return.func_response)
        return _Ran(duration_ns=output.duration_ns, ran=True, tokens=output.tokens)


@dataclass(frozen=True)
class _Ran:
    """What one call did: how long it took, whether it ran, whether its prefill blocked it."""

    duration_ns: int = 0
    ran: bool = False
    blocked: bool = False
    tokens: int = 0


def _record_arguments(draft: StepDraft, call_id: str, arguments: str) -> None:
    """Store the arguments the call ran with (a rule's prefill), as Letta does, so the history
    shows what happened rather than what the model proposed."""
    draft.calls = [c.model_copy(update={"arguments": arguments}) if c.id == call_id else c for c in draft.calls]
    if draft.assistant is not None:
        calls = [c.model_copy(update={"arguments": arguments}) if c.id == call_id else c for c in draft.assistant.tool_calls]
        draft.assistant = draft.assistant.model_copy(update={"tool_calls": calls})
