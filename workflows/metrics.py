"""What a run reports about itself, through the workflow's metric meter.

The SDK's workflow meter records nothing while the workflow replays history, so a run counts
each step, tool call and wait once, whichever worker (or how many) executes it. Recording adds
no command to history, so it needs no patch and changes no replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from temporalio import workflow

from perdure import metrics


def step_taken(model: str) -> None:
    workflow.metric_meter().create_counter(metrics.STEPS, metrics.STEPS_HELP, "steps").add(1, {"model": model})


def tool_called(tool: str, status: str) -> None:
    counter = workflow.metric_meter().create_counter(metrics.TOOL_CALLS, metrics.TOOL_CALLS_HELP, "calls")
    counter.add(1, {"tool": tool, "status": status})


def run_finished(stop_reason: str) -> None:
    counter = workflow.metric_meter().create_counter(metrics.RUNS_FINISHED, metrics.RUNS_FINISHED_HELP, "runs")
    counter.add(1, {"stop_reason": stop_reason})


async def person_answered(waiting: Awaitable[bool]) -> bool:
    """Await a wait for a person (true: answered in time) and count it when it begins and when
    it ends, by outcome: answered, timed_out, or cancelled (the run was cancelled meanwhile)."""
    meter = workflow.metric_meter()
    meter.create_counter(metrics.WAITS_STARTED, metrics.WAITS_STARTED_HELP, "runs").add(1)
    ended = meter.create_counter(metrics.WAITS_ENDED, metrics.WAITS_ENDED_HELP, "runs")
    try:
        answered = await waiting
    except asyncio.CancelledError:
        ended.add(1, {"outcome": "cancelled"})
        raise
    ended.add(1, {"outcome": "answered" if answered else "timed_out"})
    return answered
