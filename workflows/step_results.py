"""How a step ends: a result the step loop hands back, and the failures of its LLM request.

Kept apart from the loop so the loop reads as the loop, and so what a failed request becomes
(its stop reason, the failed step's record, the error to report) reads in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from perdure.providers.base import ContextWindowExceededError
    from perdure.schemas.letta import StopReasonType
    from perdure.schemas.run import StepRecord

from workflows.decisions import stop_reason_for_llm_error
from workflows.failures import failure_text

CONTEXT_WINDOW_EXCEEDED = ContextWindowExceededError.error_type


class ContextOverflow(Exception):
    """Compaction cannot make room: the run stops with `stop`; `detail` says what to shrink."""

    def __init__(self, stop: StopReasonType, detail: str | None) -> None:
        super().__init__(stop.value)
        self.stop = stop
        self.detail = detail


@dataclass(frozen=True)
class StepResult:
    """How a step (or the run's steps, from `StepLoop.run`) ended: go on when `stop` is None.

    A step that failed brings its record (stored by the run's finish, not its checkpoint) and
    the error to report; `error_type` is the provider's error type after a failed LLM call.
    """

    stop: StopReasonType | None
    failed_step: StepRecord | None = None
    error: str | None = None
    error_type: str | None = None


def failed_request(step: StepRecord, err: ActivityError | ContextOverflow) -> StepResult:
    """The LLM request failed for good, or compaction could not make room for it."""
    if isinstance(err, ContextOverflow):
        failed = step.model_copy(
            update={
                "status": "failed",
                "stop_reason": err.stop,
                "error_type": CONTEXT_WINDOW_EXCEEDED,
                "error": err.detail,
            }
        )
        return StepResult(stop=err.stop, failed_step=failed, error=err.detail)
    cause = err.cause
    error_type = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
    error = failure_text(err)
    stop = stop_reason_for_llm_error(error_type)
    failed = step.model_copy(update={"status": "failed", "stop_reason": stop, "error_type": error_type, "error": error})
    return StepResult(stop=stop, failed_step=failed, error=error, error_type=error_type)
