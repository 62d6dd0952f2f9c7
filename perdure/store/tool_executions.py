"""Recorded results of tool calls, keyed by step and call id.

The statements are built once: a tool call records and reads its result on every step, and
building a statement costs more CPU than running it.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session

from perdure.schemas.messages import ToolReturn
from perdure.schemas.run import ToolStepOutput
from perdure.store.db import dialect_insert
from perdure.store.tables import ToolExecutionRow, utcnow

TOOL_EXECUTIONS = cast(Table, ToolExecutionRow.__table__)
_RESULT = select(TOOL_EXECUTIONS.c.result).where(TOOL_EXECUTIONS.c.tool_call_key == bindparam("key"))
_RETURNS = select(TOOL_EXECUTIONS.c.tool_call_key, TOOL_EXECUTIONS.c.tool_return).where(
    TOOL_EXECUTIONS.c.tool_call_key.in_(bindparam("keys", expanding=True))
)
_RECORD = insert(TOOL_EXECUTIONS)


def recorded_result(session: Session, key: str) -> ToolStepOutput | None:
    """The result recorded for a call, read from the database (never a copy the session holds)."""
    result = session.execute(_RESULT, {"key": key}).scalar_one_or_none()
    return None if result is None else ToolStepOutput.model_validate(result)


def recorded_returns(session: Session, keys: Iterable[str]) -> dict[str, ToolReturn]:
    """The full returns recorded under `keys`, by key, in one statement (keys without a record are left out)."""
    wanted = list(keys)
    if not wanted:
        return {}
    rows = session.execute(_RETURNS, {"keys": wanted})
    return {key: ToolReturn.model_validate(tool_return) for key, tool_return in rows}


def record(session: Session, key: str, output: ToolStepOutput, full: ToolReturn) -> None:
    """Record a call's result in the transaction that made its effect; a second record of the
    same call fails (the agent's lock keeps two attempts from getting here together)."""
    session.execute(_RECORD, _row(key, output, full))


def record_once(session: Session, key: str, output: ToolStepOutput, full: ToolReturn) -> ToolStepOutput:
    """Record a call's result unless one is recorded already, and return the one that stands:
    two attempts of a read-only call that finish together both answer with the first record."""
    session.flush()
    session.execute(_record_unless_recorded(session.get_bind().dialect.name), _row(key, output, full))
    recorded = recorded_result(session, key)
    if recorded is None:
        raise RuntimeError(f"tool execution {key} vanished right after it was recorded")
    return recorded


@cache
def _record_unless_recorded(dialect_name: str) -> Any:
    return dialect_insert(dialect_name, TOOL_EXECUTIONS).on_conflict_do_nothing(index_elements=["tool_call_key"])


def _row(key: str, output: ToolStepOutput, full: ToolReturn) -> dict[str, Any]:
    return {
        "tool_call_key": key,
        "result": output.model_dump(mode="json"),
        "tool_return": full.model_dump(mode="json"),
        "created_at": utcnow(),
    }
