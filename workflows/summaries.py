"""What the Temporal UI says about a run: activity summaries and current details, as a transcript.

A summary is fixed when its activity is scheduled, so the LLM request can only say which step
it is (`llm gpt-4o-mini step 2`); what the step decided is said by the step's checkpoint
(`checkpoint step 2: → memory_insert ok · 4 messages`), by each tool call as it is scheduled
(`tool memory_insert(label=human)`), and by the current details. Summaries stay short: the UI
cuts them. Pure functions of the step's data, so they are the same on every replay.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from perdure.schemas.approvals import Answer, ApprovalAnswer, PendingApproval, PendingCall
    from perdure.schemas.messages import Message, ToolCall
    from perdure.schemas.readable import json_object

from perdure import names

SUMMARY_CHARS = 80
"""About what the UI's event list shows of a summary before it cuts it."""
VALUE_CHARS = 20
ARGUMENTS_CHARS = 400


def call_label(call: ToolCall) -> str:
    """`memory_insert(label=human)`: the tool and its short scalar arguments, clipped."""
    arguments = json_object(call.arguments)
    if arguments is None:
        return f"{call.name}(…)" if call.arguments.strip() not in ("", "{}") else f"{call.name}()"
    shown: list[str] = []
    for key, value in arguments.items():
        if isinstance(value, (dict, list)) or value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        shown.append(f"{key}={_clip(' '.join(text.split()), VALUE_CHARS)}")
    return _clip(f"{call.name}({', '.join(shown)})", SUMMARY_CHARS - len("tool "))


def tool_summary(call: ToolCall) -> str:
    return f"tool {call_label(call)}"


def decision(content: str | None, calls: Sequence[ToolCall]) -> str:
    """What a model response decided: `→ memory_insert, conversation_search` or `→ answer`."""
    if calls:
        return "→ " + ", ".join(c.name for c in calls)
    return "→ answer" if content else "→ nothing"


def checkpoint_summary(step_number: int, messages: Sequence[Message], calls: Sequence[ToolCall]) -> str:
    """`checkpoint step 2: → memory_insert ok · 4 messages`: what the committed step did.

    `calls` are the step's calls, which name the returns and answers of a step resumed after a pause."""
    names_by_id = {c.id: c.name for c in calls} | {c.id: c.name for m in messages for c in m.tool_calls}
    parts: list[str] = []
    answered = any(m.role == "approval" and m.approvals for m in messages)
    for message in messages:
        if message.role == "approval" and message.tool_calls:
            waiting = ", ".join(c.name for c in message.tool_calls)
            parts.append(f"→ {waiting} awaits {'the client' if message.client_tool_call_ids else 'approval'}")
        elif message.role == "approval":
            parts.append(", ".join(_answer_text(a, names_by_id) for a in message.approvals))
        elif message.role == "tool":
            # After answers the calls are already named: only their outcomes follow, in order.
            returns = ", ".join(
                ("" if answered else f"{names_by_id.get(r.tool_call_id, 'call')} ")
                + ("ok" if r.status == "success" else "error")
                for r in message.tool_returns
            )
            parts.append(f"→ {returns}")
        elif message.role == "assistant" and message.text and not message.tool_calls:
            parts.append("→ answer")
    story = " ".join(parts)
    counted = f" · {len(messages)} message{'s' if len(messages) != 1 else ''}"
    head = f"checkpoint step {step_number}"
    return head + (f": {_clip(story, SUMMARY_CHARS - len(head) - len(counted) - 2)}" if story else "") + counted


def pending_details(request: PendingApproval, run_id: str | None) -> str:
    """Current details of a paused run, in markdown: each waiting call with its id and the signal
    to send, in code spans (copied as they are, not turned into curly quotes), and since when."""
    since = request.since.strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"**awaiting {_waiting_for(request.calls)}** since {since}" + (f" — run {_code(run_id)}" if run_id else "")
    ]
    if request.timeout_at is not None:
        lines.append(f"ends `requires_approval` at {request.timeout_at.strftime('%Y-%m-%d %H:%M:%S UTC')}")
    for call in request.calls:
        lines += ["", *_call_lines(call)]
    return "\n".join(lines)


def _call_lines(call: PendingCall) -> list[str]:
    arguments = _clip(call.arguments, ARGUMENTS_CHARS)
    lines = [
        f"- {_code(call.name)} tool_call_id {_code(call.tool_call_id)}",
        f"  arguments: {_code(arguments)}",
    ]
    if call.answer is not None:
        return [*lines, "  answered"]
    if call.kind == "client_tool":
        payload = {"tool_call_id": call.tool_call_id, "status": "success", "tool_return": "..."}
        return [*lines, f"  signal {_code(names.CLIENT_TOOL_RETURN_SIGNAL)}: {_code(json.dumps(payload))}"]
    approve = json.dumps({"tool_call_id": call.tool_call_id})
    deny = json.dumps({"tool_call_id": call.tool_call_id, "reason": "..."})
    return [
        *lines,
        f"  signal {_code(names.APPROVE_SIGNAL)}: {_code(approve)}",
        f"  signal {_code(names.DENY_SIGNAL)}: {_code(deny)}",
    ]


def _waiting_for(calls: Sequence[PendingCall]) -> str:
    kinds = {c.kind for c in calls if c.answer is None}
    if kinds == {"client_tool"}:
        return "client tool results"
    return "approval" if kinds == {"approval"} else "approval and client tool results"


def _answer_text(answer: Answer, names_by_id: dict[str, str]) -> str:
    name = names_by_id.get(answer.tool_call_id, "call")
    if isinstance(answer, ApprovalAnswer):
        return f"{'approved' if answer.approve else 'denied'} {name}"
    return f"client returned {name}"


def _code(text: str) -> str:
    """A markdown code span that holds `text` even when it contains backticks."""
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"
