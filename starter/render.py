"""Printing Letta messages for people; `--json` output bypasses this entirely."""

from __future__ import annotations

from collections.abc import Iterable

from perdure.schemas.agent import AgentState
from perdure.schemas.run import RunState
from perdure.schemas.letta import (
    ApprovalRequestMessage,
    ApprovalResponseMessage,
    ApprovalReturn,
    LettaToolReturn,
    AssistantMessage,
    EventMessage,
    HiddenReasoningMessage,
    LettaMessage,
    LettaResponse,
    ReasoningMessage,
    SummaryMessage,
    SystemMessage,
    ToolCallMessage,
    ToolReturnMessage,
    UserMessage,
)

CLIP = 400


def message_lines(messages: Iterable[LettaMessage]) -> list[str]:
    lines: list[str] = []
    for message in messages:
        if isinstance(message, UserMessage):
            lines.append(f"user       > {message.content}")
        elif isinstance(message, ReasoningMessage):
            lines.append(f"reasoning  > {_clip(message.reasoning)}")
        elif isinstance(message, HiddenReasoningMessage):
            lines.append(f"reasoning  > ({message.state} by the provider)")
        elif isinstance(message, AssistantMessage):
            lines.append(f"assistant  > {message.content}")
        elif isinstance(message, ToolCallMessage):
            lines += [f"tool call  > {c.name}({_clip(c.arguments)})  [{c.tool_call_id}]" for c in message.tool_calls]
        elif isinstance(message, ToolReturnMessage):
            lines += [f"tool return> {r.status}: {_clip(r.tool_return or '')}" for r in message.tool_returns]
        elif isinstance(message, ApprovalRequestMessage):
            lines += [
                f"approval   > {c.name}({_clip(c.arguments)}) needs an answer  [{c.tool_call_id}]"
                for c in message.tool_calls
            ]
        elif isinstance(message, ApprovalResponseMessage):
            lines += [f"answer     > {_answer_text(a)}" for a in message.approvals]
        elif isinstance(message, SummaryMessage):
            lines.append(f"summary    > {_clip(message.summary)}")
        elif isinstance(message, EventMessage):
            data = message.event_data
            lines.append(
                f"event      > {message.event_type}: {data.get('mode', '?')}, {data.get('tokens_before', '?')} -> {data.get('tokens_after', '?')} tokens, {data.get('evicted', '?')} messages out of context"
            )
        elif isinstance(message, SystemMessage):
            lines.append(f"system     > {_clip(message.content)}")
    return lines


def state_text(state: RunState) -> str:
    """`perdure status`: the run, and what it waits for (since when, with which arguments)."""
    lines = [f"{state.agent_id}: run {state.run_id} {state.status.value}, step {state.step}, {state.current}"]
    pending = state.pending_approval
    if pending is not None:
        until = f", until {pending.timeout_at:%Y-%m-%d %H:%M:%S} UTC" if pending.timeout_at else ""
        lines.append(f"  waiting since {pending.since:%Y-%m-%d %H:%M:%S} UTC{until} for:")
        for call in pending.calls:
            answered = "answered" if call.answer is not None else "pending"
            lines.append(
                f"    [{answered}] {call.kind:<11} {call.name}({_clip(call.arguments)})  [{call.tool_call_id}]"
            )
    for rejected in state.rejected[-5:]:
        lines.append(f"  rejected {rejected.via} at {rejected.received_at:%H:%M:%S}: {rejected.reason}")
    return "\n".join(lines)


def response_text(response: LettaResponse, error: str | None = None) -> str:
    """The run's messages and a footer; a failed run also says why (`error`, from the run row)."""
    usage = response.usage
    footer = (
        f"-- run {response.run_id}: stop_reason={response.stop_reason.stop_reason.value}, "
        f"steps={usage.step_count}, tokens={usage.total_tokens} "
        f"(prompt {usage.prompt_tokens}, completion {usage.completion_tokens})"
    )
    lines = [*message_lines(response.messages), footer]
    if error:
        lines.append(f"-- error: {error}")
    return "\n".join(lines)


def agent_text(agent: AgentState, *, blocks: bool = True) -> str:
    lines = [
        f"{agent.id}  {agent.name}",
        f"  model: {agent.llm_config.model}"
        + (f" at {agent.llm_config.endpoint}" if agent.llm_config.endpoint else "")
        + f", context window {agent.llm_config.context_window}",
        f"  tools: {', '.join(agent.tools) or '(none)'}",
    ]
    if agent.last_stop_reason:
        lines.append(f"  last stop reason: {agent.last_stop_reason}")
    if blocks:
        for block in agent.blocks:
            flag = " (read-only)" if block.read_only else ""
            lines.append(f"  [{block.label}]{flag} {block.value or '(empty)'}")
    return "\n".join(lines)


def _answer_text(answer: ApprovalReturn | LettaToolReturn) -> str:
    if isinstance(answer, ApprovalReturn):
        verdict = "approved" if answer.approve else f"denied ({answer.reason or 'no reason'})"
        return f"{verdict}  [{answer.tool_call_id}]"
    return f"client {answer.status}: {_clip(answer.tool_return or '')}  [{answer.tool_call_id}]"


def _clip(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= CLIP else text[:CLIP] + "…"
