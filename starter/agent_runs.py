"""What a client reads of an agent's runs before it acts: whether a run is live, its state, and
a request an ended run left unanswered.

Starting a run, answering one and following its stream all ask these first, so they live
apart from each of them.
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from perdure import names
from perdure.schemas.run import RunState, UnansweredRequest
from perdure.store import agents
from perdure.store.db import Database
from perdure.store.unanswered import find_unanswered_request


def require_agent(db: Database, agent_id: str) -> None:
    """Raise the store's not-found error for an unknown agent, before Temporal is asked."""
    with db.transaction(read_only=True) as session:
        agents.get_agent(session, agent_id)


def unanswered_request(db: Database, agent_id: str) -> UnansweredRequest | None:
    """A request for approval that an ended run left in the agent's context (its approval
    timeout); answers to it resume it in a new run."""
    with db.transaction(read_only=True) as session:
        return find_unanswered_request(session, agent_id)


async def has_live_run(temporal: Client, agent_id: str) -> bool:
    """True while the agent's workflow runs; one Temporal does not know of is no live run."""
    handle = temporal.get_workflow_handle(names.workflow_id(agent_id))
    try:
        description = await handle.describe()
    except RPCError:
        return False
    return description.status is WorkflowExecutionStatus.RUNNING


async def run_state(temporal: Client, agent_id: str) -> RunState | None:
    """The latest run's state from its workflow, or None when the agent never ran."""
    handle = temporal.get_workflow_handle(names.workflow_id(agent_id))
    try:
        return await handle.query(names.STATE_QUERY, result_type=RunState)
    except RPCError:
        return None
