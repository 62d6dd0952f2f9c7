"""`/v1/agents/{agent_id}/core-memory/blocks/{block_label}`: read and change a memory block.

A change while a run is live (working, or waiting for an approval) is refused with 409: the
run's own memory edits and its context would otherwise race the write. Between runs the new
value is in the system message of the very next request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends

from perdure.schemas.agent import Block
from perdure.store import agents
from perdure.store.errors import InvalidRequestError, NotFoundError
from starter.api.context import ApiContext, context
from starter.api.errors import ApiError
from starter.api.requests import BlockUpdate
from starter.api.shapes import LettaBlock, letta_block

router = APIRouter(prefix="/v1/agents/{agent_id}/core-memory/blocks")
Context = Annotated[ApiContext, Depends(context)]


@router.get("/{block_label}")
def get(ctx: Context, agent_id: str, block_label: str) -> LettaBlock:
    return letta_block(_block(ctx, agent_id, block_label))


@router.patch("/{block_label}")
async def update(ctx: Context, agent_id: str, block_label: str, body: Annotated[BlockUpdate, Body()]) -> LettaBlock:
    block = _block(ctx, agent_id, block_label)
    changed = [
        name
        for name in ("label", "limit", "description", "read_only")
        if getattr(body, name) not in (None, getattr(block, name))
    ]
    if changed:
        raise InvalidRequestError(f"only a block's value can be changed here, not {', '.join(changed)}")
    if body.value is None:
        return letta_block(block)
    if len(body.value) > block.limit:
        raise InvalidRequestError(
            f"value has {len(body.value)} characters, over block '{block_label}''s limit of {block.limit}"
        )
    if await ctx.client.has_live_run(agent_id):
        raise ApiError(
            409, f"agent {agent_id} has a live run; change block '{block_label}' once it has stopped (or cancel it)"
        )
    with ctx.client.db.transaction() as session:
        agents.set_block_value(session, agent_id, block_label, body.value)
    return letta_block(block.model_copy(update={"value": body.value}))


def _block(ctx: ApiContext, agent_id: str, label: str) -> Block:
    with ctx.client.db.transaction(read_only=True) as session:
        block = agents.get_agent(session, agent_id).block(label)
    if block is None:
        raise NotFoundError(f"agent '{agent_id}' has no block '{label}'")
    return block
