"""How the workflow reads an activity's failure: a cancellation of the run, or a cause to report."""

from __future__ import annotations

import asyncio

from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception


def reraise_cancellation(error: BaseException) -> None:
    """A cancel that reaches the workflow while it awaits an activity arrives as an ActivityError
    around a CancelledError; it is a cancellation of the run, not a failure of the step."""
    if is_cancelled_exception(error):
        raise asyncio.CancelledError("run cancelled") from error


def failure_text(error: ActivityError | ApplicationError) -> str:
    """The root cause's message: what a person needs, without Temporal's wrapping.

    A regular activity's failure arrives as an ActivityError around the cause; a local
    activity's as the ApplicationError itself.
    """
    cause = error.cause if isinstance(error, ActivityError) else error
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or error)
