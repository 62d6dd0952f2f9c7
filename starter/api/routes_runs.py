"""`/v1/runs/{run_id}`: a run's record, and its stream again from any point (`starting_after`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from fastapi.responses import StreamingResponse

from perdure.store import runs
from starter.api.context import ApiContext, context
from starter.api.requests import RunStreamRequest
from starter.api.shapes import LettaRun, letta_run
from starter.api.sse import StreamOptions, letta_events

router = APIRouter(prefix="/v1/runs")
Context = Annotated[ApiContext, Depends(context)]


@router.get("/{run_id}")
def get(ctx: Context, run_id: str) -> LettaRun:
    """A paused run is `running` with stop reason `requires_approval`: it waits, durably."""
    with ctx.client.db.transaction(read_only=True) as session:
        return letta_run(runs.get_run(session, run_id))


@router.post("/{run_id}/stream")
async def stream(
    ctx: Context, run_id: str, body: Annotated[RunStreamRequest | None, Body()] = None
) -> StreamingResponse:
    """The run's events after `starting_after` (a `seq_id`; 0: from the start), live until
    it stops or waits for a person with nothing more to show. An unknown run is a 404."""
    options = body or RunStreamRequest()
    with ctx.client.db.transaction(read_only=True) as session:
        agent_id = runs.get_run(session, run_id).agent_id
    items = ctx.client.follow(agent_id, options.starting_after, run_id)
    sse = StreamOptions(ping_interval=ctx.ping_interval if options.include_pings else None)
    return StreamingResponse(letta_events(items, sse), media_type="text/event-stream")
