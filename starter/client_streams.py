"""A run's stream as a client reads it: the run a request started or an answer continued, or
any run followed from an offset, until it stops or waits for a person.

Reading is a plain loop over the store and Temporal (starter/stream.py); what lives here is
which run to read and when to stop: a request whose turn an earlier run took reads that run,
a refused request ends its stream empty, and a run that pauses for approval ends the stream
once it has nothing more to show.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial

from temporalio.client import (
    Client,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError

from perdure import names
from perdure.schemas.approvals import Answer, AnswerRequest, ApprovalCreate
from perdure.schemas.letta import StopReasonType
from perdure.schemas.run import RunResult, SendMessageRequest
from perdure.store import runs
from perdure.store.db import Database
from starter import agent_runs, run_starts
from starter.outages import Backoff
from starter.stream import NoRunError, OutcomeWatch, StreamItem, current_offset, read_stream, until_outcome
from starter.updates import AlreadySentError, stream_gave_up, update_outcome

VISIBILITY_TRIES = 20
"""How often a run is looked up by its `PerdureRunId` before it counts as missing."""


async def open_stream(
    temporal: Client,
    db: Database,
    agent_id: str,
    request: SendMessageRequest,
    *,
    task_queue: str,
    timeout_s: float,
) -> AsyncIterator[StreamItem]:
    """Start the run before returning its stream, so a refusal raises to the caller before any
    event is read; a turn an earlier run took returns that run's stream instead."""
    turn = request.turn_key
    with db.transaction(read_only=True) as session:
        earlier = runs.find_run_for_turn(session, agent_id, turn) if turn else None
    if earlier is not None:
        return follow(temporal, db, agent_id, 0, run_id=earlier.id, timeout_s=timeout_s)
    try:
        handle = await run_starts.start_update(
            temporal, db, agent_id, request, WorkflowUpdateStage.ACCEPTED, task_queue=task_queue
        )
    except AlreadySentError as sent:
        return follow(temporal, db, agent_id, 0, run_id=sent.run_id, timeout_s=timeout_s)
    return _outcome_stream(temporal, db, agent_id, handle, 0, timeout_s=timeout_s)


async def open_answer_stream(
    temporal: Client,
    db: Database,
    agent_id: str,
    answers: list[Answer],
    *,
    stream_tokens: bool,
    task_queue: str,
    timeout_s: float,
) -> AsyncIterator[StreamItem]:
    """Deliver the answers before returning the stream, so a bad answer raises to the caller;
    the stream starts at the run's current offset, after what the run showed before it paused.
    With no live run to take them, the answers resume the pending request in a new run."""
    agent_runs.require_agent(db, agent_id)
    update, offset = None, 0
    with contextlib.suppress(NoRunError):  # never ran: the resume path says why
        offset = await current_offset(temporal, db, agent_id)
        request = AnswerRequest(approvals=answers, stream_tokens=stream_tokens)
        update = await run_starts.deliver_answers(temporal, db, agent_id, request, WorkflowUpdateStage.ACCEPTED)
    if update is None:
        resume = SendMessageRequest(messages=[ApprovalCreate(approvals=answers)], stream_tokens=stream_tokens)
        return await open_stream(temporal, db, agent_id, resume, task_queue=task_queue, timeout_s=timeout_s)
    return _outcome_stream(temporal, db, agent_id, update, offset, timeout_s=timeout_s)


async def _outcome_stream(
    temporal: Client,
    db: Database,
    agent_id: str,
    handle: WorkflowUpdateHandle[RunResult],
    offset: int,
    *,
    timeout_s: float,
) -> AsyncIterator[StreamItem]:
    """The stream of the run that took the update, until its outcome; an update that turns out
    to repeat a turn an earlier run took goes on with that run's stream."""
    async for item in until_outcome(read_stream(temporal, db, agent_id, offset, run_id=handle.workflow_run_id)):
        yield item
    try:
        await update_outcome(handle)  # a request the begin activity refused ends the stream empty
    except AlreadySentError as sent:
        async for item in follow(temporal, db, agent_id, 0, run_id=sent.run_id, timeout_s=timeout_s):
            yield item


async def follow(
    temporal: Client,
    db: Database,
    agent_id: str,
    from_offset: int = 0,
    run_id: str | None = None,
    *,
    timeout_s: float,
) -> AsyncIterator[StreamItem]:
    """A run's stream from `from_offset`; a Temporal outage is ridden through until `timeout_s`
    by reading again after the last event seen, so no event is yielded twice."""
    agent_runs.require_agent(db, agent_id)
    offset, backoff = from_offset, Backoff(timeout_s)
    while True:
        try:
            async for item in _follow_from(temporal, db, agent_id, offset, run_id):
                offset = item.offset + 1
                yield item
            return
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
            await backoff.wait(err, partial(stream_gave_up, timeout_s, agent_id, offset))


async def _follow_from(
    temporal: Client, db: Database, agent_id: str, from_offset: int, run_id: str | None
) -> AsyncIterator[StreamItem]:
    """Read until the run stops, or until it pauses for approval with nothing more to show (a
    reader must not wait on a person)."""
    execution = await _execution_of(temporal, agent_id, run_id) if run_id else None
    if execution is None and await _waiting_at(temporal, db, agent_id, from_offset):
        return
    watch = OutcomeWatch()
    async for item in read_stream(temporal, db, agent_id, from_offset, run_id=execution):
        yield item
        watch.see(item.event)
        if not watch.ended:
            continue
        if watch.stop_reason is not StopReasonType.requires_approval:
            return
        if await _waiting_at(temporal, db, agent_id, item.offset + 1):
            return


async def _execution_of(temporal: Client, agent_id: str, run_id: str) -> str:
    """The Temporal run id of one of the agent's runs, found by its `PerdureRunId` search
    attribute (visibility can lag a moment behind a run that has just started)."""
    query = f'WorkflowId = "{names.workflow_id(agent_id)}" AND {names.PERDURE_RUN_ID_ATTRIBUTE} = "{run_id}"'
    for _ in range(VISIBILITY_TRIES):
        async for execution in temporal.list_workflows(query, limit=1):
            return execution.run_id
        await asyncio.sleep(0.1)
    raise NoRunError(f"agent {agent_id} has no run {run_id}")


async def _waiting_at(temporal: Client, db: Database, agent_id: str, offset: int) -> bool:
    """True when the run waits for a person and `offset` is past its last event."""
    if await current_offset(temporal, db, agent_id) > offset:
        return False
    state = await agent_runs.run_state(temporal, agent_id)
    return state is not None and state.pending_approval is not None
