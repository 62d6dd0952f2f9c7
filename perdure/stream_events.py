"""What a run's stream carries for committed steps and outcomes, in Letta's shapes: pure, so
the workflow (runs that keep their stream in history) and the activities that commit a step
(runs whose stream is in the database) make the same events.

A step is published once it is committed, so a client never sees what the store may lose.
With token streaming on, the model's answer already went out chunk by chunk from the LLM
activity under the same message id, so only what happened after it (tool returns, the
approval request, answers) follows. Input messages are not echoed, as in Letta's stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from perdure.convert import to_letta_messages
from perdure.schemas.letta import LettaStopReason, LettaUsageStatistics, StopReasonType
from perdure.schemas.messages import Message
from perdure.schemas.stream import error_event


def step_events(messages: Sequence[Message], *, tokens_streamed: bool) -> list[dict[str, Any]]:
    shown = [m for m in messages if m.role != "user" and not (tokens_streamed and _streamed(m))]
    return [_wire(event) for event in to_letta_messages(shown)]


def _streamed(message: Message) -> bool:
    """The model's answer, and the approval request holding its calls, went out as chunks."""
    return message.role == "assistant" or (message.role == "approval" and bool(message.tool_calls))


def outcome_events(
    run_id: str, stop: StopReasonType, usage: LettaUsageStatistics, *, failure: str | None, failure_type: str | None
) -> list[dict[str, Any]]:
    """Letta's finish: `stop_reason` then `usage_statistics`; a run that failed with an error
    ends with `stop_reason` then the `error_message` instead."""
    end = LettaStopReason(stop_reason=stop)
    if failure is None:
        return [_wire(end), _wire(usage.model_copy(update={"run_ids": [run_id]}))]
    overflow = stop is StopReasonType.context_window_overflow_in_system_prompt
    return [_wire(end), _wire(error_event(run_id, failure_type, failure, overflow))]


def _wire(event: Any) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude_none=True)
