"""What a run's stream carries: Letta's message shapes, plus one event of our own.

Clients of Letta's `/messages/stream` read every line unchanged: messages (token chunks share
their message's id), then `stop_reason` and `usage_statistics`, or `stop_reason` and an
`error_message` when the run failed. `attempt_started` is the one addition: a retried LLM
request announces itself so a client drops the partial output of the attempt before.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from perdure.schemas.letta import AnyLettaMessage, LettaStopReason, LettaUsageStatistics

STREAM_TOPIC = "letta"
"""One topic for the whole run, so offsets order tokens, steps and the end together."""


class AttemptStarted(BaseModel):
    """A retried LLM request begins: everything streamed for `step_id` since the previous
    `attempt_started` (or the step's start) is superseded."""

    message_type: Literal["attempt_started"] = "attempt_started"
    run_id: str
    step_id: str
    attempt: int
    """The activity's attempt at this request."""
    request: int = 1
    """Which request of the step: more than 1 when it is asked again after a compaction."""


class LettaErrorMessage(BaseModel):
    """Letta's `event: error` payload: the run failed after the stream began."""

    message_type: Literal["error_message"] = "error_message"
    run_id: str
    error_type: str
    message: str
    detail: str | None = None


StreamEvent = Annotated[
    AnyLettaMessage | LettaStopReason | LettaUsageStatistics | LettaErrorMessage | AttemptStarted,
    Field(discriminator="message_type"),
]
STREAM_EVENT: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)

ERROR_MESSAGE = "An error occurred during agent execution."
_LLM_ERROR_TYPES = {
    "LLMTimeoutError": "llm_timeout",
    "TimeoutError": "llm_timeout",  # the LLM activity itself ran out of time (failure types come from the LLM step only)
    "LLMRateLimitError": "llm_rate_limit",
    "LLMAuthenticationError": "llm_authentication",
}


def error_event(run_id: str, failure_type: str | None, detail: str | None, context_overflow: bool) -> LettaErrorMessage:
    """Letta's error types: `llm_*` for provider failures, the overflow stop by name, else
    `internal_error`; the message is Letta's, the detail says what actually went wrong."""
    if context_overflow:
        error_type = "context_window_overflow_in_system_prompt"
    elif failure_type in _LLM_ERROR_TYPES:
        error_type = _LLM_ERROR_TYPES[failure_type]
    elif failure_type is not None and failure_type.startswith("LLM"):
        error_type = "llm_error"
    else:
        error_type = "internal_error"
    return LettaErrorMessage(run_id=run_id, error_type=error_type, message=ERROR_MESSAGE, detail=detail)
