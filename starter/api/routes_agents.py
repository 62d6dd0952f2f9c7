"""`/v1/agents/`: create (Letta's CreateAgent), list, get and delete, on the store alone."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response

from perdure.agents import create_agent
from perdure.convert import to_letta_messages
from perdure.schemas.agent import AgentState
from perdure.schemas.letta_create import parse_create_agent
from perdure.settings import default_model
from perdure.store import agents
from perdure.store.db import Database
from perdure.tools.registry import get_tool_defs
from starter.api.context import ApiContext, context
from starter.api.errors import ApiError, pending_request
from starter.api.shapes import LettaAgentState, finish_messages, letta_agent

router = APIRouter(prefix="/v1/agents")
log = logging.getLogger("perdure.api")
Context = Annotated[ApiContext, Depends(context)]


@router.post("/")
def create(ctx: Context, response: Response, payload: Annotated[dict[str, Any], Body()]) -> LettaAgentState:
    fields = dict(payload)
    if not fields.get("model") and not (fields.get("llm_config") or {}).get("model"):
        fields["model"] = default_model()
    parsed = parse_create_agent(fields)
    warning = parsed.warning()
    if warning:
        log.warning("create agent: %s", warning)
        shown = warning.encode("ascii", "backslashreplace").decode()  # a header holds ASCII; field names may not
        response.headers["warning"] = f'199 perdure "{shown}"'
    return _shape(ctx.client.db, create_agent(ctx.client.db, parsed.request))


@router.get("/")
def list_agents(
    ctx: Context, name: str | None = None, limit: Annotated[int, Query(ge=1)] = 50, after: str | None = None
) -> list[LettaAgentState]:
    with ctx.client.db.transaction(read_only=True) as session:
        found = agents.list_agents(session)
    if name is not None:
        found = [a for a in found if a.name == name]
    if after is not None:
        ids = [a.id for a in found]
        found = found[ids.index(after) + 1 :] if after in ids else []
    return [_shape(ctx.client.db, agent) for agent in found[:limit]]


@router.get("/{agent_id}")
def get(ctx: Context, agent_id: str, include: Annotated[list[str] | None, Query()] = None) -> LettaAgentState:
    """The agent; with `include=agent.pending_approval`, the approval request it waits on."""
    with ctx.client.db.transaction(read_only=True) as session:
        agent = agents.get_agent(session, agent_id)
    shaped = _shape(ctx.client.db, agent)
    request = pending_request(ctx.client.db, agent_id) if "agent.pending_approval" in (include or []) else None
    if request is None:
        return shaped
    pending = finish_messages([m.model_dump(mode="json", exclude_none=True) for m in to_letta_messages([request])])
    return shaped.model_copy(update={"pending_approval": pending[0]})


@router.delete("/{agent_id}")
async def delete(ctx: Context, agent_id: str) -> dict[str, Any]:
    """Delete an agent and its history; refused (409) while it has a live run, which would
    otherwise go on working, or waiting for an approval, for an agent that is gone."""
    with ctx.client.db.transaction(read_only=True) as session:
        agents.get_agent(session, agent_id)
    if await ctx.client.has_live_run(agent_id):
        raise ApiError(
            409, f"agent {agent_id} has a live run; cancel it first (POST /v1/agents/{agent_id}/messages/cancel)"
        )
    with ctx.client.db.transaction() as session:
        agents.delete_agent(session, agent_id)
    return {"id": agent_id, "deleted": True}


def _shape(db: Database, agent: AgentState) -> LettaAgentState:
    with db.transaction(read_only=True) as session:
        tools = get_tool_defs(session, agent.tools)
    return letta_agent(agent, tools)
