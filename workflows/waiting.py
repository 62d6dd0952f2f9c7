"""Waiting in a workflow with a deadline, as a yes or no rather than an exception."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow


async def wait_for(condition: Callable[[], bool], timeout: timedelta | None) -> bool:
    """Wait for `condition`; False when `timeout` (None: never) passes first."""
    try:
        await workflow.wait_condition(condition, timeout=timeout)
    except TimeoutError:
        return False
    return True
