"""Tool definitions, keyed by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.orm import Session

from perdure.schemas.tools import ToolDef
from perdure.store.db import upsert_statement
from perdure.store.tables import ToolRow, ToolVersionRow


def upsert_tools(session: Session, definitions: Iterable[ToolDef]) -> None:
    """Insert or update in one statement, so a CLI and a worker starting together do not collide."""
    rows = [{"name": d.name, "definition": d.model_dump(mode="json")} for d in definitions]
    if not rows:
        return
    statement = upsert_statement(session, ToolRow).values(rows)
    update = {"definition": statement.excluded.definition}
    session.execute(statement.on_conflict_do_update(index_elements=["name"], set_=update))


def tool_names(session: Session) -> set[str]:
    return set(session.scalars(select(ToolRow.name)).all())


TOOLS = cast(Table, ToolRow.__table__)
_DEFINITIONS = select(TOOLS.c.name, TOOLS.c.definition).where(TOOLS.c.name.in_(bindparam("names", expanding=True)))
"""Built once: every tool call and LLM request reads definitions (the stored ones, which a newer
release or a custom tool's edit may have changed, so they are read each time, not kept)."""


def get_tools(session: Session, names: Iterable[str]) -> dict[str, ToolDef]:
    session.flush()
    rows = session.execute(_DEFINITIONS, {"names": list(dict.fromkeys(names))})
    return {name: ToolDef.model_validate(definition) for name, definition in rows}


def save_custom_tool(session: Session, tool: ToolDef) -> ToolDef:
    """Make `tool` the current definition of its name and keep its version for runs that started with it."""
    upsert_tools(session, [tool])
    if session.get(ToolVersionRow, (tool.name, tool.version)) is None:
        session.add(ToolVersionRow(name=tool.name, version=tool.version, definition=tool.model_dump(mode="json")))
        session.flush()
    return tool


def get_tool(session: Session, name: str) -> ToolDef | None:
    row = session.get(ToolRow, name)
    return None if row is None else ToolDef.model_validate(row.definition)


def get_tool_version(session: Session, name: str, version: str) -> ToolDef | None:
    row = session.get(ToolVersionRow, (name, version))
    return None if row is None else ToolDef.model_validate(row.definition)


def list_tools(session: Session) -> list[ToolDef]:
    rows = session.scalars(select(ToolRow).order_by(ToolRow.name)).all()
    return [ToolDef.model_validate(row.definition) for row in rows]


def delete_tool(session: Session, name: str) -> None:
    """Forget the tool's current definition; its versions stay for runs that started with them."""
    session.execute(delete(ToolRow).where(ToolRow.name == name))
