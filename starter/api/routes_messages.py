"""`/v1/agents/{agent_id}/messages`: send (whole or streamed), answer pending calls, page
through history, cancel.

A request that opens with answers (Letta's approval message, or a `tool_return` message) goes
to the live run as the validated `answer` update, or, when no run waits live any more, opens a
new run that resumes the pending request (Letta's path). Anything else starts a run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import StreamingResponse

from perdure.approvals import NO_PENDING
from perdure.convert import to_letta_messages
from perdure.schemas.approvals import Answer, ApprovalCreate
from perdure.schemas.letta import LettaResponse
from perdure.schemas.run import SendMessageRequest
from perdure.store import agents, messages, runs
from perdure.store.errors import InvalidRequestError
from starter.api.context import ApiContext, context
from starter.api.errors import ApiError, pending_request_id, refusals
from starter.api.requests import CancelRequest, LettaApprovalCreate, LettaRequest, MessageType
from starter.api.shapes import finish_messages
from starter.api.sse import StreamOptions, letta_events
from starter.client import PerdureClient
from starter.updates import RunRejectedError
from starter.stream import StreamItem

router = APIRouter(prefix="/v1/agents/{agent_id}/messages")
Context = Annotated[ApiContext, Depends(context)]
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@router.post("", response_model=None)
async def send(
    ctx: Context, agent_id: str, body: Annotated[LettaRequest, Body()]
) -> dict[str, Any] | StreamingResponse:
    """Letta's `send_message`: the whole response, or with `streaming: true` the stream. A run
    that failed is still a response (its stop reason says so), with Letta's error message as
    `error`."""
    if body.streaming:
        return await _stream(ctx, agent_id, body)
    client = ctx.client
    with refusals(client.db, agent_id):
        answers = await _answers(client, agent_id, body)
        if answers is not None and not body.user_messages():
            response = await client.answer(agent_id, answers)
        else:
            response = client.response(await client.start_run(agent_id, _run_request(body, answers)))
    shaped = _shown(response, body)
    with client.db.transaction(read_only=True) as session:
        error = runs.run_error(session, response.run_id)
    return shaped if error is None else {**shaped, "error": error.model_dump(mode="json", exclude_none=True)}


@router.post("/stream", response_model=None)
async def stream(ctx: Context, agent_id: str, body: Annotated[LettaRequest, Body()]) -> StreamingResponse:
    return await _stream(ctx, agent_id, body)


async def _stream(ctx: ApiContext, agent_id: str, body: LettaRequest) -> StreamingResponse:
    """Start the run (or deliver the answers) before answering, so a refusal is an error
    status, not an event; then stream the run's events as they come."""
    client = ctx.client
    with refusals(client.db, agent_id):
        answers = await _answers(client, agent_id, body)
        items: AsyncIterator[StreamItem]
        if answers is not None and not body.user_messages():
            items = await client.open_answer_stream(agent_id, answers, stream_tokens=body.stream_tokens)
        else:
            items = await client.open_stream(agent_id, _run_request(body, answers))
    options = StreamOptions(ping_interval=ctx.ping_interval if body.include_pings else None, shows=body.shows)
    return StreamingResponse(letta_events(items, options), media_type="text/event-stream", headers=SSE_HEADERS)


async def _answers(client: PerdureClient, agent_id: str, body: LettaRequest) -> list[Answer] | None:
    """The answers a request opens with, or None for a plain message."""
    opening = body.answer_message
    if opening is None:
        return None
    deprecated_form = isinstance(opening, LettaApprovalCreate) and not opening.approvals
    pending = await client.pending_calls(agent_id) if deprecated_form else []
    answers = opening.answers(pending)
    if not answers:
        raise RunRejectedError(NO_PENDING)
    named = opening.approval_request_id if isinstance(opening, LettaApprovalCreate) else None
    if named is not None and named != (expected := pending_request_id(client.db, agent_id)):
        raise RunRejectedError(f"Invalid approval request ID. Expected '{expected}', but received '{named}'.")
    if body.user_messages() and await client.has_live_run(agent_id):
        raise InvalidRequestError(
            "messages after the answers are taken only when no run waits live for them; "
            "send them once the run has stopped"
        )
    return answers


def _run_request(body: LettaRequest, answers: list[Answer] | None) -> SendMessageRequest:
    opening = [ApprovalCreate(approvals=answers)] if answers else []
    return SendMessageRequest(
        messages=[*opening, *body.user_messages()],
        max_steps=body.max_steps,
        client_tools=body.client_tools or [],
        approval_timeout_seconds=body.approval_timeout_seconds,
        stream_tokens=body.stream_tokens,
    )


def _shown(response: LettaResponse, body: LettaRequest) -> dict[str, Any]:
    """Letta's response: only the message types asked for, with Letta's fields filled in."""
    shaped = response.model_dump(mode="json", exclude_none=True)
    shaped["messages"] = finish_messages([m for m in shaped["messages"] if body.shows(m["message_type"])])
    return shaped


@router.get("")
def history(
    ctx: Context,
    agent_id: str,
    after: str | None = None,
    before: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Literal["asc", "desc"] = "desc",
    include_return_message_types: Annotated[list[MessageType] | None, Query()] = None,
) -> list[dict[str, Any]]:
    """Stored history, newest first by default; `after`/`before` are message ids."""
    with ctx.client.db.transaction(read_only=True) as session:
        agents.get_agent(session, agent_id)
        page = messages.page_messages(
            session, agent_id, after=after, before=before, limit=limit, ascending=order == "asc"
        )
    ordered = page if order == "asc" else list(reversed(page))
    shaped = finish_messages([m.model_dump(mode="json", exclude_none=True) for m in to_letta_messages(ordered)])
    if include_return_message_types is not None:
        shaped = [m for m in shaped if m["message_type"] in include_return_message_types]
    return shaped if order == "asc" else list(reversed(shaped))


@router.post("/cancel")
async def cancel(ctx: Context, agent_id: str, body: Annotated[CancelRequest | None, Body()] = None) -> dict[str, str]:
    """Cancel the live run: `{run_id: "cancelled"}`; 409 when nothing runs."""
    client = ctx.client
    with refusals(client.db, agent_id):
        if body is not None and body.run_ids:
            state = await client.state(agent_id)
            if state is None or state.run_id not in body.run_ids or not await client.has_live_run(agent_id):
                raise ApiError(409, f"none of the runs {body.run_ids} is live on agent {agent_id}")
        state = await client.cancel(agent_id)
    return {state.run_id or "": "cancelled"}
