"""Registered MCP servers, and the MCP tools each run offers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from perdure.schemas.mcp import McpServerConfig, McpToolRef, McpToolSpec
from perdure.schemas.tools import ToolDef
from perdure.store.db import upsert_statement
from perdure.store.errors import InvalidRequestError, NotFoundError
from perdure.store.tables import McpRunToolRow, McpServerRow


class McpServerExistsError(InvalidRequestError):
    """A server of this name is registered already (the HTTP API answers 409)."""


def add_server(session: Session, config: McpServerConfig) -> None:
    """Insert with `ON CONFLICT DO NOTHING`: of two adds of one name at once, one lands and the
    other is refused here, on either database."""
    statement = upsert_statement(session, McpServerRow).values(**config.model_dump())
    added = statement.on_conflict_do_nothing(index_elements=["name"]).returning(McpServerRow.name)
    if session.execute(added).scalar_one_or_none() is None:
        raise McpServerExistsError(f"an MCP server named '{config.name}' exists already; remove it first")


def get_server(session: Session, name: str) -> McpServerConfig:
    return _config(_row(session, name))


def update_server(session: Session, name: str, change: Callable[[McpServerConfig], McpServerConfig]) -> McpServerConfig:
    """Store `change` of the server's settings. The row is locked first (`FOR UPDATE` on
    PostgreSQL), so two updates at once apply one after the other, neither undoing the other."""
    row = _row(session, name, lock=True)
    changed = change(_config(row))
    if changed.name != name:
        raise InvalidRequestError(f"an MCP server cannot be renamed ('{name}' to '{changed.name}')")
    for field, value in changed.model_dump().items():
        setattr(row, field, value)
    return changed


def list_servers(session: Session) -> list[McpServerConfig]:
    return [_config(row) for row in session.scalars(select(McpServerRow).order_by(McpServerRow.name)).all()]


def server_names(session: Session) -> set[str]:
    return set(session.scalars(select(McpServerRow.name)).all())


def remove_server(session: Session, name: str) -> None:
    _row(session, name)
    session.execute(delete(McpServerRow).where(McpServerRow.name == name))


def _row(session: Session, name: str, *, lock: bool = False) -> McpServerRow:
    row = session.get(McpServerRow, name, with_for_update=lock)
    if row is None:
        raise NotFoundError(f"no MCP server named '{name}' (see `perdure mcp list`)")
    return row


def _config(row: McpServerRow) -> McpServerConfig:
    return McpServerConfig(
        name=row.name,
        transport="http" if row.transport == "http" else "stdio",
        command=row.command,
        url=row.url,
        env=dict(row.env),
        headers=dict(row.headers),
        timeout_seconds=row.timeout_seconds,
    )


def record_run_tools(session: Session, run_id: str, tools: list[tuple[McpToolRef, McpToolSpec]]) -> list[McpToolRef]:
    """Record what a run offers unless an earlier attempt did; returns what stands, so a retried
    listing answers with the first one (the tools the run's history already names)."""
    existing = run_tool_refs(session, run_id)
    if existing is not None:
        return existing
    session.add_all(
        McpRunToolRow(
            run_id=run_id,
            function_name=ref.function,
            server_name=ref.server,
            tool_name=ref.tool,
            description=spec.description,
            input_schema=spec.input_schema,
        )
        for ref, spec in tools
    )
    return sorted((ref for ref, _ in tools), key=lambda ref: ref.function)


def run_tool_refs(session: Session, run_id: str) -> list[McpToolRef] | None:
    rows = _run_rows(session, run_id, None)
    if not rows:
        return None
    return [McpToolRef(function=r.function_name, server=r.server_name, tool=r.tool_name) for r in rows]


def run_tool_defs(session: Session, run_id: str, names: Iterable[str]) -> dict[str, ToolDef]:
    """The run's MCP tools among `names`, as the model is offered them."""
    return {
        row.function_name: ToolDef(
            name=row.function_name, description=row.description, json_schema=row.input_schema, tool_type="custom"
        )
        for row in _run_rows(session, run_id, list(names))
    }


def _run_rows(session: Session, run_id: str, names: list[str] | None) -> list[McpRunToolRow]:
    query = select(McpRunToolRow).where(McpRunToolRow.run_id == run_id)
    if names is not None:
        query = query.where(McpRunToolRow.function_name.in_(names))
    return list(session.scalars(query.order_by(McpRunToolRow.function_name)).all())
