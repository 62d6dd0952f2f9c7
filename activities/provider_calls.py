"""Calling a provider from an activity: heartbeats while it runs, and a budget of its failures.

Temporal retries a failed LLM call, and a worker lost mid-call shows up as a heartbeat timeout
that Temporal retries too. Only the first is the provider's fault, so the provider has a budget
of its own: the count of its failures travels in the heartbeat details, which Temporal keeps
from one attempt to the next. An attempt cut short by a lost worker leaves the count as it was;
the call as a whole is bounded by its schedule-to-close deadline instead (`workflows.policies`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import llm_failure
from perdure.providers.base import LLMError

HEARTBEAT_EVERY_S = 1.0
"""With the worker's 1 s heartbeat throttle, a cancelled run interrupts the HTTP call within ~2 s."""
MAX_PROVIDER_FAILURES = 5
"""Retryable provider failures (5xx, 429, timeouts, answers cut off) one LLM call may meet."""


def failures_so_far() -> int:
    """The provider failures earlier attempts of this activity counted (0 on the first)."""
    details = activity.info().heartbeat_details
    return details[0] if details and isinstance(details[0], int) else 0


@asynccontextmanager
async def provider_call() -> AsyncIterator[None]:
    """Heartbeat while the call runs, so a cancelled run interrupts a slow model call; a provider
    error leaves as the activity failure that decides whether Temporal asks again."""
    failures = failures_so_far()
    beating = asyncio.create_task(_beat(failures))
    try:
        yield
    except LLMError as err:
        beating.cancel()
        raise _counted(err, failures) from err
    finally:
        beating.cancel()


async def _beat(failures: int) -> None:
    """The first heartbeat after a second, not at once: a call that answers sooner needs none
    (the failures counted so far are already in the details Temporal keeps), and one at once
    cost every step a heartbeat, encoded and sent to the server, for nothing."""
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY_S)
        activity.heartbeat(failures)


def _counted(error: LLMError, failures: int) -> ApplicationError:
    """A retryable failure uses one of the provider's attempts; the last one is final."""
    failure = llm_failure(error)
    if not error.retryable:
        return failure
    counted = failures + 1
    activity.heartbeat(counted)
    if counted < MAX_PROVIDER_FAILURES:
        return failure
    return ApplicationError(
        f"{error.message} (the provider failed {counted} times for this request)",
        type=error.error_type,
        non_retryable=True,
    )
