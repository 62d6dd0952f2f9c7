"""Recorded results of tool calls, keyed by step and call id."""

from __future__ import annotations

from sqlalchemy.orm import Session

from perdure.schemas.messages import ToolReturn
from perdure.schemas.run import ToolStepOutput
from perdure.store.db import upsert_statement
from perdure.store.tables import ToolExecutionRow, utcnow


def record_once(session: Session, key: str, output: ToolStepOutput, full: ToolReturn) -> ToolStepOutput:
    """Record a call's result unless one is recorded already, and return the one that stands:
    two attempts of a read-only call that finish together both answer with the first record."""
    statement = upsert_statement(session, ToolExecutionRow).values(
        tool_call_key=key,
        result=output.model_dump(mode="json"),
        tool_return=full.model_dump(mode="json"),
        created_at=utcnow(),
    )
    session.execute(statement.on_conflict_do_nothing(index_elements=["tool_call_key"]))
    recorded = session.get(ToolExecutionRow, key, populate_existing=True)
    if recorded is None:
        raise RuntimeError(f"tool execution {key} vanished right after it was recorded")
    return ToolStepOutput.model_validate(recorded.result)
