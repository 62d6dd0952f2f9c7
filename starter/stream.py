"""Reading a run's stream from outside: every event with its offset, until the outcome.

The offset is the event's position in the run's stream, so a client that drops resumes with
`from_offset = last offset + 1` and gets every later event exactly once (`--json` prints it as
Letta's `seq_id`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.service import RPCError, RPCStatusCode

from perdure.schemas.letta import LettaStopReason, LettaUsageStatistics, StopReasonType
from perdure.schemas.stream import STREAM_EVENT, STREAM_TOPIC, LettaErrorMessage, StreamEvent
from workflows import names

POLL_COOLDOWN = timedelta(milliseconds=100)
"""Each poll is an update in the run's history: waiting between polls bounds their number."""


class StreamItem(BaseModel):
    offset: int
    event: StreamEvent


class NoRunError(Exception):
    """The agent has no run to read from."""


def no_run(agent_id: str) -> str:
    return f"agent {agent_id} has no run yet; start one with `perdure send`"


class OutcomeWatch:
    """Says when an outcome is complete: a `stop_reason`, then `usage_statistics` or the
    `error_message` of a failed run (Letta's finish)."""

    def __init__(self) -> None:
        self.stop_reason: StopReasonType | None = None
        self.ended = False

    def see(self, event: StreamEvent) -> None:
        if isinstance(event, LettaStopReason):
            self.stop_reason, self.ended = event.stop_reason, False
        elif isinstance(event, (LettaUsageStatistics, LettaErrorMessage)) and self.stop_reason is not None:
            self.ended = True


async def read_stream(temporal: Client, agent_id: str, from_offset: int = 0, *, run_id: str | None = None) -> AsyncIterator[StreamItem]:
    """Every event of the agent's latest run (or of `run_id`) from `from_offset`, live or after
    the run has closed; the iterator ends once a closed run's stream is drained."""
    handle = temporal.get_workflow_handle(names.workflow_id(agent_id), run_id=run_id)
    stream = WorkflowStreamClient(handle, client=temporal)
    try:
        async for item in stream.subscribe(STREAM_TOPIC, from_offset, poll_cooldown=POLL_COOLDOWN):
            yield StreamItem(offset=item.offset, event=STREAM_EVENT.validate_python(item.data))
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NoRunError(no_run(agent_id)) from err
        raise


async def current_offset(temporal: Client, agent_id: str) -> int:
    """Where the next event of the agent's latest run will be: answers start reading here."""
    stream = WorkflowStreamClient(temporal.get_workflow_handle(names.workflow_id(agent_id)), client=temporal)
    try:
        return await stream.get_offset()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NoRunError(no_run(agent_id)) from err
        raise


async def until_outcome(items: AsyncIterator[StreamItem]) -> AsyncIterator[StreamItem]:
    """The events up to and including the end of the next outcome (a stop or a pause)."""
    watch = OutcomeWatch()
    async for item in items:
        yield item
        watch.see(item.event)
        if watch.ended:
            return
