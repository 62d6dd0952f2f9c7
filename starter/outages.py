"""Riding through a Temporal outage: retry what may pass, with backoff, until a deadline.

A send that meets a restarting server, or a worker that crashed mid-task, fails with a
transport error although the run may well have been accepted and go on. Asking again is safe
because every send carries its turn's key (its messages' `otid`s, used as the update id and
checked by the begin activity), so a retry joins or reads the run it started, never a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 300.0
"""How long a client keeps trying before it says the run's fate is unknown."""
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0
TRANSIENT_STATUSES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNKNOWN,
    }
)
FAILED_TASK = "Workflow Task in failed state"
"""What the server answers an update while a worker that crashed mid-task is being replaced."""


class RunUnfinishedError(ConnectionError):
    """Temporal did not answer in time: the run may still go on. One line says how to look."""


def is_transient(error: BaseException) -> bool:
    """An error that a moment's wait may cure: the server unreachable or restarting, a workflow
    task being retried after a worker crash, an update that timed out waiting."""
    if isinstance(error, WorkflowUpdateRPCTimeoutOrCancelledError):
        return True
    return isinstance(error, RPCError) and (error.status in TRANSIENT_STATUSES or FAILED_TASK in error.message)


class Backoff:
    """The waits between tries of one request, and the deadline after which it gives up."""

    def __init__(self, timeout_s: float) -> None:
        self._deadline = time.monotonic() + timeout_s
        self._delay = FIRST_DELAY_S

    async def wait(
        self, error: RPCError | WorkflowUpdateRPCTimeoutOrCancelledError, gave_up: Callable[[BaseException], str]
    ) -> None:
        """Wait before trying again after `error`; a lasting error, or the deadline, ends it."""
        if not is_transient(error):
            raise error
        if time.monotonic() + self._delay > self._deadline:
            raise RunUnfinishedError(gave_up(error)) from error
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, MAX_DELAY_S)


async def ride_through(
    attempt: Callable[[], Awaitable[T]], *, timeout_s: float, gave_up: Callable[[BaseException], str]
) -> T:
    """`attempt()` until it succeeds or fails for good; transient errors are retried with
    backoff until `timeout_s` has passed, then `gave_up(last error)` is the error's one line."""
    backoff = Backoff(timeout_s)
    while True:
        try:
            return await attempt()
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
            await backoff.wait(err, gave_up)
