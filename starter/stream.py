"""Reading a run's stream from outside: every event with its offset, until the outcome.

The offset is the event's position in the run's stream, so a client that drops resumes with
`from_offset = last offset + 1` and gets every later event exactly once (`--json` prints it as
Letta's `seq_id`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.workflow_streams import PollInput, PollResult, WorkflowStreamClient
from temporalio.service import RPCError, RPCStatusCode

from perdure.schemas.letta import LettaStopReason, LettaUsageStatistics, StopReasonType
from perdure.schemas.stream import STREAM_EVENT, STREAM_TOPIC, LettaErrorMessage, StreamEvent
from perdure.store import stream_chunks, stream_notices
from perdure.store.db import Database
from perdure import names

DESCRIBE_EVERY_S = 0.25
"""How often an idle reader asks Temporal whether the run has closed without a last event."""
POLL_INTERVAL = timedelta(milliseconds=200)
"""How often a reader asks a run streaming through history for new events (its LLM activity
publishes every 0.5 s)."""
_POLL_QUERY = "__temporal_workflow_stream_poll"
"""The stream's read-only query (the SDK's own reader uses it for closed runs). The SDK has no
public reader by query, so its name is written here; the offset has one (`get_offset`)."""


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


async def read_stream(
    temporal: Client, db: Database, agent_id: str, from_offset: int = 0, *, run_id: str | None = None
) -> AsyncIterator[StreamItem]:
    """Every event of one run of the agent (`run_id`, a Temporal run id; else the latest) from
    `from_offset`, live or after the run has closed, until the run's last event.

    Runs keep their stream in the database (`stream_chunks`), written by the activities, so a
    reader in any process reads a table (when a write's notice wakes it on PostgreSQL, every
    10 ms on SQLite: `perdure.store.stream_notices`) and Temporal sees none of it. Runs
    started before the stream moved there are read from their Workflow Stream."""
    handle = temporal.get_workflow_handle(names.workflow_id(agent_id), run_id=run_id)
    if run_id is None:
        handle = temporal.get_workflow_handle(handle.id, run_id=(await _describe(handle, agent_id)).run_id)
    key = handle.run_id or ""
    if await asyncio.to_thread(_next_stored, db, key) == 0 and await _history_offset(handle) > 0:
        async for item in _read_history(temporal, handle, agent_id, from_offset):
            yield item
        return
    async with stream_notices.Wakeups(db, key) as wakeups:
        offset, closed, described = from_offset, False, 0.0
        while True:
            stored = await asyncio.to_thread(_read_stored, db, key, offset)
            wakeups.after_read(bool(stored))
            for event in stored:
                yield StreamItem(offset=event.offset, event=STREAM_EVENT.validate_python(event.event))
                offset = event.offset + 1
                if event.final:
                    return
            if len(stored) == stream_chunks.READ_LIMIT:
                continue
            if closed:
                if offset == 0 and await asyncio.to_thread(_next_stored, db, key) == 0:
                    # A run started before the move that had published nothing when the read began.
                    async for item in _read_history(temporal, handle, agent_id, from_offset):
                        yield item
                return  # this read came after the close, so it had everything
            if not stored and time.monotonic() - described >= DESCRIBE_EVERY_S:
                # A run ends with a `final` event, unless it was terminated or refused its request.
                described = time.monotonic()
                closed = (await _describe(handle, agent_id)).status is not WorkflowExecutionStatus.RUNNING
                if closed:
                    continue
            await wakeups.wait()


def _read_stored(db: Database, key: str, offset: int) -> list[stream_chunks.StoredEvent]:
    with db.transaction(read_only=True) as session:
        return stream_chunks.read(session, key, offset)


def _next_stored(db: Database, key: str) -> int:
    with db.transaction(read_only=True) as session:
        return stream_chunks.next_offset(session, key)


async def _history_offset(handle: WorkflowHandle[Any, Any]) -> int:
    """Where a run's Workflow Stream stands: more than 0 only for runs that stream through history."""
    result = await handle.query(_POLL_QUERY, PollInput(topics=[STREAM_TOPIC], from_offset=0), result_type=PollResult)
    return result.next_offset


async def _read_history(
    temporal: Client, handle: WorkflowHandle[Any, Any], agent_id: str, from_offset: int
) -> AsyncIterator[StreamItem]:
    """A run's Workflow Stream, through the stream's query rather than its long-poll update: a
    query adds nothing to the run's history and counts against none of Temporal's per-run
    update limits (2,000 in a run's history, 10 at once), so any number of readers may follow
    a run for any length. The price is a short delay (POLL_INTERVAL) before a new event is seen."""
    converter = temporal.data_converter.payload_converter
    offset, closed = from_offset, False
    while True:
        result = await handle.query(
            _POLL_QUERY, PollInput(topics=[STREAM_TOPIC], from_offset=offset), result_type=PollResult
        )
        for item in result.items:
            yield StreamItem(
                offset=item.offset, event=STREAM_EVENT.validate_python(converter.from_payload(_payload(item.data)))
            )
        offset = result.next_offset
        if result.more_ready:
            continue
        if closed:
            return  # this read came after the close, so it had everything
        if not result.items:  # only an idle run may have closed: ask then, and read once more
            closed = (await _describe(handle, agent_id)).status is not WorkflowExecutionStatus.RUNNING
        if not closed:
            await asyncio.sleep(POLL_INTERVAL.total_seconds())


@contextlib.contextmanager
def _run_of(agent_id: str) -> Iterator[None]:
    """Temporal's "not found" is, to a reader, an agent that has no run (yet)."""
    try:
        yield
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NoRunError(no_run(agent_id)) from err
        raise


async def _describe(handle: WorkflowHandle[Any, Any], agent_id: str) -> WorkflowExecutionDescription:
    with _run_of(agent_id):
        return await handle.describe()


def _payload(wire: str) -> Payload:
    """An item as the stream keeps it: base64 of the serialized payload (the SDK's wire form)."""
    payload = Payload()
    payload.ParseFromString(base64.b64decode(wire))
    return payload


async def current_offset(temporal: Client, db: Database, agent_id: str) -> int:
    """Where the next event of the agent's latest run will be: answers start reading here."""
    handle = temporal.get_workflow_handle(names.workflow_id(agent_id))
    key = (await _describe(handle, agent_id)).run_id
    stored = await asyncio.to_thread(_next_stored, db, key)
    if stored > 0:
        return stored
    with _run_of(agent_id):
        return await WorkflowStreamClient.create(temporal, names.workflow_id(agent_id)).get_offset()


async def until_outcome(items: AsyncIterator[StreamItem]) -> AsyncIterator[StreamItem]:
    """The events up to and including the end of the next outcome (a stop or a pause)."""
    watch = OutcomeWatch()
    async for item in items:
        yield item
        watch.see(item.event)
        if watch.ended:
            return
