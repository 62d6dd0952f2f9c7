"""A step in progress and the messages it becomes: pure code, so the workflow stays readable.

A step's messages are committed together once the step is done. When the run is cancelled
midway, `messages_on_cancel` says what to commit so nothing the user sent is lost and every
tool call in the context has its return (Letta issues 3250, 3273, 3308).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from perdure.approvals import denial_text, deny_on_cancel, truncate_client_return
    from perdure.schemas.approvals import TOOL_CALL_DENIAL_ON_CANCEL, ApprovalAnswer, ClientToolReturn, PendingCall
    from perdure.schemas.messages import Content, Message, ReasoningContent, TextContent, ToolCall, ToolReturn
    from perdure.schemas.run import LLMStepOutput, StepRecord
    from perdure.tools.returns import package_function_response

NewId = Callable[[], str]
CANCELLED_CALL = "The run was cancelled before this tool call finished, so it did not run."


@dataclass(frozen=True)
class StepDraft:
    """What a step has made so far; the step loop replaces it as the step goes on, and a cancel
    commits what the latest one owes the context."""

    step: StepRecord
    inputs: list[Message] = field(default_factory=list)
    """Input messages not committed yet."""
    assistant: Message | None = None
    """The model's response, once it answered and until it is committed."""
    calls: list[ToolCall] = field(default_factory=list)
    """Every call of the response, in the model's order."""
    returns: dict[str, ToolReturn] = field(default_factory=dict)
    waiting: list[PendingCall] | None = None
    """While paused: the calls waiting for a person or the client (already committed)."""
    allowed: list[str] = field(default_factory=list)
    """The tools the rules allowed when the model was asked; approved calls are held to it too."""

    def with_returns(self, returns: dict[str, ToolReturn], ran_with: dict[str, str]) -> StepDraft:
        """The draft with `returns` added, and the calls (in the response too) showing the
        arguments they ran with where a rule's prefill replaced the model's."""
        calls = _with_arguments(self.calls, ran_with)
        assistant = self.assistant
        if assistant is not None and ran_with:
            assistant = assistant.model_copy(update={"tool_calls": _with_arguments(assistant.tool_calls, ran_with)})
        return replace(self, returns={**self.returns, **returns}, calls=calls, assistant=assistant)


@dataclass(frozen=True)
class StepMessageIds:
    """The ids of a step's answer and of its approval request, chosen before the model is asked so
    that streamed chunks carry them; empty for runs started before they were (replay)."""

    answer: str = ""
    approval_request: str = ""


def _with_arguments(calls: Sequence[ToolCall], ran_with: dict[str, str]) -> list[ToolCall]:
    return [c.model_copy(update={"arguments": ran_with[c.id]}) if c.id in ran_with else c for c in calls]


def assistant_message(output: LLMStepOutput, calls: Sequence[ToolCall], step: StepRecord, message_id: str) -> Message:
    """`message_id` is chosen before the model is asked, so streamed chunks carry it too."""
    content: list[Content] = list(output.reasoning_parts)
    if output.reasoning and not content:
        content.append(ReasoningContent(reasoning=output.reasoning))
    if output.content:
        content.append(TextContent(text=output.content))
    return Message(
        id=message_id,
        agent_id=step.agent_id,
        role="assistant",
        content=content,
        tool_calls=list(calls),
        run_id=step.run_id,
        step_id=step.id,
        model=output.model,
    )


def keep_going_message(reason: str, step: StepRecord, new_id: NewId, now: datetime) -> Message:
    """Letta's automated "heartbeat" user message that keeps the loop going (e.g. a required
    tool not yet called): a message to the model, nothing to do with activity heartbeats."""
    text = json.dumps({"type": "heartbeat", "reason": reason, "time": now.strftime("%Y-%m-%d %I:%M:%S %p %Z%z")})
    return Message(
        id=new_id(),
        agent_id=step.agent_id,
        role="user",
        content=[TextContent(text=text)],
        run_id=step.run_id,
        step_id=step.id,
    )


def approval_request(
    requested: Sequence[ToolCall], client_ids: Sequence[str], step: StepRecord, message_id: str
) -> Message:
    return Message(
        id=message_id,
        agent_id=step.agent_id,
        role="approval",
        tool_calls=list(requested),
        client_tool_call_ids=list(client_ids),
        run_id=step.run_id,
        step_id=step.id,
    )


def approval_response(answered: Sequence[PendingCall], step: StepRecord, new_id: NewId) -> Message:
    return Message(
        id=new_id(),
        agent_id=step.agent_id,
        role="approval",
        approvals=[c.answer for c in answered if c.answer is not None],
        run_id=step.run_id,
        step_id=step.id,
    )


def tool_message(calls: Sequence[ToolCall], returns: dict[str, ToolReturn], step: StepRecord, new_id: NewId) -> Message:
    return Message(
        id=new_id(),
        agent_id=step.agent_id,
        role="tool",
        tool_returns=[returns[c.id] for c in calls],
        run_id=step.run_id,
        step_id=step.id,
    )


def error_return(call_id: str, text: str, now: datetime) -> ToolReturn:
    return ToolReturn(tool_call_id=call_id, status="error", func_response=package_function_response(False, text, now))


def answered_return(call: PendingCall, context_window: int, now: datetime) -> ToolReturn | None:
    """The return of a call a person denied or the client answered; None when it must run."""
    answer = call.answer
    if isinstance(answer, ApprovalAnswer):
        return None if answer.approve else error_return(call.tool_call_id, denial_text(answer.reason), now)
    if isinstance(answer, ClientToolReturn):
        success = answer.status == "success"
        text = truncate_client_return(answer.tool_return, context_window)
        return ToolReturn(
            tool_call_id=call.tool_call_id,
            status=answer.status,
            func_response=package_function_response(success, text, now),
            stdout=answer.stdout,
            stderr=answer.stderr,
        )
    raise ValueError(f"tool call {call.tool_call_id} has no answer")


def messages_on_cancel(
    draft: StepDraft, answered: Sequence[PendingCall] | None, new_id: NewId, now: datetime, context_window: int
) -> list[Message]:
    """What a cancelled step still commits: its inputs, and for every call a return.

    For a paused step, the answers given before the cancel stand (the audit trail says who
    approved what) and every unanswered call is denied with Letta's cancel text. A client's
    result is kept (the client did the work) and a person's denial keeps its reason; every other
    call, approved or not, did not run and says so. `answered` are the paused step's calls with
    the answers given so far.
    """
    if draft.waiting is not None:
        calls_with_answers = answered if answered is not None else draft.waiting
        by_id = {c.tool_call_id: c for c in calls_with_answers if c.answer is not None}
        returns = {}
        for call in draft.calls:
            given = by_id.get(call.id)
            kept = answered_return(given, context_window, now) if given is not None else None
            returns[call.id] = kept or error_return(call.id, TOOL_CALL_DENIAL_ON_CANCEL, now)
        denied = deny_on_cancel(calls_with_answers)
        return [approval_response(denied, draft.step, new_id), tool_message(draft.calls, returns, draft.step, new_id)]
    messages = list(draft.inputs)
    if draft.assistant is not None:
        messages.append(draft.assistant)
        if draft.calls:
            returns = {c.id: draft.returns.get(c.id) or error_return(c.id, CANCELLED_CALL, now) for c in draft.calls}
            messages.append(tool_message(draft.calls, returns, draft.step, new_id))
    return messages
