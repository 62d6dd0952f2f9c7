"""An agent's tool variables (Letta's `tool_exec_environment_variables`), apart from its state.

Only the activity that starts a sandbox reads them; they never travel in a workflow's inputs,
results or history, and the CLI shows their keys, not their values.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from perdure.store.tables import AgentToolVariableRow


def add_tool_variables(session: Session, agent_id: str, variables: Mapping[str, str]) -> None:
    """Store a new agent's tool variables."""
    session.add_all(AgentToolVariableRow(agent_id=agent_id, key=k, value=v) for k, v in variables.items())
    session.flush()


def get_tool_variables(session: Session, agent_id: str) -> dict[str, str]:
    rows = session.scalars(select(AgentToolVariableRow).where(AgentToolVariableRow.agent_id == agent_id)).all()
    return {row.key: row.value for row in rows}
