"""The chaos check's workload: the agents, their one message each, and how far they have got.

A send rides through outages with PerdureClient and, when it still fails, is sent again with the
same request (the same `otid`), as any client does after an error; what it ended with is kept for
the check. The count of stored tool returns is the progress the kills are timed by.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel
from sqlalchemy import func, select

from bench.chaos_model import MODEL_PREFIX
from perdure.agents import create_agent
from perdure.schemas.agent import AgentCreate
from perdure.schemas.letta import StopReasonType
from perdure.store.db import Database
from perdure.store.tables import MessageRow
from starter.client import PerdureClient
from starter.updates import message_request

MESSAGE = "Please remember these facts."
RESENDS = 3
"""How often the bench sends a request again (same otid) after its send raised."""


class SendOutcome(BaseModel):
    stop_reason: StopReasonType | None
    errors: list[str]


def make_agents(db: Database, count: int, calls: int, base_url: str) -> list[str]:
    llm_config = {"model": f"scripted/{MODEL_PREFIX}{calls}", "endpoint": base_url}
    made = []
    for number in range(count):
        blocks = [{"label": "human", "value": ""}]
        fields = {"name": f"chaos-{number}", "memory_blocks": blocks, "llm_config": llm_config}
        made.append(create_agent(db, AgentCreate.model_validate(fields)).id)
    return made


async def send(client: PerdureClient, agent_id: str, stream_tokens: bool) -> SendOutcome:
    """One message, sent again (the same request, so the same otid) after any error."""
    request = message_request(MESSAGE, stream_tokens=stream_tokens)
    errors: list[str] = []
    for _ in range(1 + RESENDS):
        try:
            result = await client.start_run(agent_id, request)
        except Exception as err:  # any client error is answered by sending again, as clients do
            errors.append(f"{agent_id}: {type(err).__name__}: {str(err)[:200]}")
            await asyncio.sleep(1.0)
            continue
        return SendOutcome(stop_reason=result.stop_reason, errors=errors)
    return SendOutcome(stop_reason=None, errors=errors)


def tool_returns_stored(db: Database, agent_ids: list[str]) -> int:
    """Progress: how many tool messages the agents have stored so far."""
    query = (
        select(func.count())
        .select_from(MessageRow)
        .where(MessageRow.role == "tool", MessageRow.agent_id.in_(agent_ids))
    )
    with db.transaction(read_only=True) as session:
        return int(session.execute(query).scalar_one())
