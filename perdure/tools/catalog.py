"""Creating, listing and deleting custom tools: the checks the store alone cannot make."""

from __future__ import annotations

from sqlalchemy import select

from perdure.schemas.tools import ToolDef
from perdure.store import tools as tool_store
from perdure.store.db import Database
from perdure.store.errors import InvalidRequestError, NotFoundError
from perdure.store.tables import AgentRow
from perdure.tools.custom import CustomToolCreate, build_custom_tool
from perdure.tools.registry import ensure_builtin_tools
from perdure.tools.source_schema import ToolSourceError


class ToolExistsError(InvalidRequestError):
    """A create (not an upsert) named a tool that exists."""


def create_custom_tool(db: Database, request: CustomToolCreate, *, replace: bool = True) -> ToolDef:
    """Store the tool `request` defines; a tool of the same name is replaced (Letta's upsert),
    keeping its id, while runs that started with the old version go on with it. With
    `replace=False` (Letta's create) an existing name is refused instead."""
    try:
        built = build_custom_tool(request)
    except ToolSourceError as err:
        raise InvalidRequestError(str(err)) from err
    with db.transaction() as session:
        ensure_builtin_tools(session)
        existing = tool_store.get_tool(session, built.name)
        if existing is not None and not existing.is_custom:
            raise InvalidRequestError(f"{built.name} is a built-in tool's name: rename the function")
        if existing is not None and not replace:
            raise ToolExistsError(f"a tool named {built.name} exists already (PUT /v1/tools/ replaces it)")
        if existing is not None:
            built = built.model_copy(update={"id": existing.id})
        return tool_store.save_custom_tool(session, built)


def list_custom_tools(db: Database) -> list[ToolDef]:
    with db.transaction(read_only=True) as session:
        return [tool for tool in tool_store.list_tools(session) if tool.is_custom]


def requirement_sets(db: Database) -> list[list[str]]:
    """The distinct `pip_requirements` of the stored custom tools, for a worker to install ahead."""
    sets = {tuple(sorted(r.specifier() for r in t.pip_requirements)) for t in list_custom_tools(db)}
    return [list(s) for s in sorted(sets) if s]


def get_custom_tool(db: Database, name: str) -> ToolDef:
    with db.transaction(read_only=True) as session:
        tool = tool_store.get_tool(session, name)
    if tool is None or not tool.is_custom:
        raise NotFoundError(f"custom tool '{name}' not found")
    return tool


def delete_custom_tool(db: Database, name: str) -> ToolDef:
    """Delete a tool no agent uses (an agent naming a missing tool could not run)."""
    with db.transaction() as session:
        tool = tool_store.get_tool(session, name)
        if tool is None or not tool.is_custom:
            raise NotFoundError(f"custom tool '{name}' not found")
        users = [row.id for row in session.scalars(select(AgentRow)).all() if name in row.tools]
        if users:
            raise InvalidRequestError(f"tool {name} is used by agent(s) {', '.join(users)}: delete them first")
        tool_store.delete_tool(session, name)
    return tool
