"""Agent creation: what the store alone cannot check or derive."""

from __future__ import annotations

import uuid

import pytest

from perdure.agents import create_agent
from perdure.schemas.agent import AgentCreate
from perdure.schemas.tools import ToolDef
from perdure.store import tools as tool_store
from perdure.store.db import Database
from perdure.store.errors import InvalidRequestError

pytestmark = pytest.mark.both_stores


def test_a_tools_default_approval_flag_becomes_a_rule(db: Database) -> None:
    """Letta turns `default_requires_approval` into a requires_approval rule when the tool is
    attached, so the flag and an explicit rule behave the same, and neither is doubled."""
    flagged = ToolDef(
        name=f"wire_money_{uuid.uuid4().hex[:6]}", description="Moves money.", default_requires_approval=True
    )
    with db.transaction() as session:
        tool_store.upsert_tools(session, [flagged])

    agent = create_agent(db, AgentCreate(tools=[flagged.name]))
    assert [(r.type, r.tool_name) for r in agent.tool_rules] == [("requires_approval", flagged.name)]

    explicit = create_agent(
        db,
        AgentCreate.model_validate(
            {"tools": [flagged.name], "tool_rules": [{"type": "requires_approval", "tool_name": flagged.name}]}
        ),
    )
    assert [(r.type, r.tool_name) for r in explicit.tool_rules] == [("requires_approval", flagged.name)]


def test_unknown_tools_and_rules_are_refused(db: Database) -> None:
    with pytest.raises(InvalidRequestError, match="unknown tool"):
        create_agent(db, AgentCreate(tools=["no_such_tool"]))
    with pytest.raises(InvalidRequestError, match="tool rules name tool"):
        create_agent(
            db,
            AgentCreate.model_validate(
                {"tool_rules": [{"type": "requires_approval", "tool_name": "core_memory_append"}]}
            ),
        )
