"""Tool definitions, keyed by name."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from perdure.schemas.tools import ToolDef
from perdure.store.db import upsert_statement
from perdure.store.tables import ToolRow


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


def get_tools(session: Session, names: Iterable[str]) -> dict[str, ToolDef]:
    wanted = list(dict.fromkeys(names))
    rows = session.scalars(select(ToolRow).where(ToolRow.name.in_(wanted))).all()
    return {row.name: ToolDef.model_validate(row.definition) for row in rows}
