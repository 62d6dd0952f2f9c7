"""`/v1/tools/`: custom Python tools in Letta's shapes (create, upsert, list, retrieve, delete).

A tool's schema comes from its source (type hints and docstring) unless `json_schema` is given;
the source is read, never run, here. Perdure's own options (timeout, network) sit in
`metadata_`, where Letta keeps a tool's extras.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from perdure.schemas.tools import DEFAULT_TOOL_TIMEOUT_S, FUNCTION_RETURN_CHAR_LIMIT, PipRequirement, ToolDef
from perdure.store.errors import NotFoundError
from perdure.tools.catalog import (
    ToolExistsError,
    create_custom_tool,
    delete_custom_tool,
    get_custom_tool,
    list_custom_tools,
)
from perdure.tools.custom import CustomToolCreate
from starter.api.context import ApiContext, context
from starter.api.errors import ApiError

router = APIRouter(prefix="/v1/tools")
Context = Annotated[ApiContext, Depends(context)]


class LettaToolCreate(BaseModel):
    """Letta's `ToolCreate` (the fields Perdure uses; others are accepted and ignored)."""

    model_config = ConfigDict(extra="ignore")

    source_code: str
    description: str | None = None
    json_schema: dict[str, Any] | None = None
    tags: list[str] | None = None
    return_char_limit: int = FUNCTION_RETURN_CHAR_LIMIT
    pip_requirements: list[PipRequirement] | None = None
    default_requires_approval: bool | None = None
    enable_parallel_execution: bool | None = None
    metadata_: dict[str, Any] | None = Field(default=None)
    """Perdure's options: `timeout_seconds`, `network`, and `function` to pick one of several."""

    def request(self) -> CustomToolCreate:
        options = self.metadata_ or {}
        return CustomToolCreate(
            source_code=self.source_code,
            name=options.get("function"),
            json_schema=self.json_schema,
            description=self.description,
            default_requires_approval=bool(self.default_requires_approval),
            timeout_seconds=options.get("timeout_seconds", DEFAULT_TOOL_TIMEOUT_S),
            pip_requirements=[r.specifier() for r in self.pip_requirements or []],
            network=bool(options.get("network", False)),
            return_char_limit=self.return_char_limit,
            enable_parallel_execution=bool(self.enable_parallel_execution),
            tags=self.tags or [],
        )


class LettaTool(BaseModel):
    """Letta's `Tool`: `json_schema` in its `{name, description, parameters}` form."""

    id: str
    name: str
    description: str
    tool_type: str
    source_type: str = "python"
    source_code: str | None
    json_schema: dict[str, Any]
    return_char_limit: int
    default_requires_approval: bool
    enable_parallel_execution: bool
    pip_requirements: list[PipRequirement]
    tags: list[str]
    metadata_: dict[str, Any]


@router.post("/")
def create(ctx: Context, body: Annotated[LettaToolCreate, Body()]) -> LettaTool:
    try:
        return letta_tool(create_custom_tool(ctx.client.db, body.request(), replace=False))
    except ToolExistsError as err:
        raise ApiError(409, str(err)) from err


@router.put("/")
def upsert(ctx: Context, body: Annotated[LettaToolCreate, Body()]) -> LettaTool:
    return letta_tool(create_custom_tool(ctx.client.db, body.request()))


@router.get("/")
def list_tools(
    ctx: Context, name: str | None = None, limit: Annotated[int, Query(ge=1)] = 50, after: str | None = None
) -> list[LettaTool]:
    """By name; a page after the tool `after` (the letta-client pages with the last id it saw)."""
    tools = [t for t in list_custom_tools(ctx.client.db) if name is None or t.name == name]
    ids = [t.id for t in tools]
    start = ids.index(after) + 1 if after in ids else 0 if after is None else len(tools)
    return [letta_tool(t) for t in tools[start : start + limit]]


@router.get("/{tool_id}")
def get(ctx: Context, tool_id: str) -> LettaTool:
    return letta_tool(_by_id(ctx, tool_id))


@router.delete("/{tool_id}")
def delete(ctx: Context, tool_id: str) -> dict[str, Any]:
    tool = delete_custom_tool(ctx.client.db, _by_id(ctx, tool_id).name)
    return {"id": tool.id, "deleted": True}


def _by_id(ctx: ApiContext, tool_id: str) -> ToolDef:
    found = next((t for t in list_custom_tools(ctx.client.db) if t.id == tool_id), None)
    if found is None:
        raise NotFoundError(f"tool '{tool_id}' not found")
    return get_custom_tool(ctx.client.db, found.name)


def letta_tool(tool: ToolDef) -> LettaTool:
    return LettaTool(
        id=tool.id or tool.name,
        name=tool.name,
        description=tool.description,
        tool_type=tool.tool_type,
        source_code=tool.source_code,
        json_schema={"name": tool.name, "description": tool.description, "parameters": tool.json_schema},
        return_char_limit=tool.return_char_limit,
        default_requires_approval=tool.default_requires_approval,
        enable_parallel_execution=tool.enable_parallel_execution,
        pip_requirements=tool.pip_requirements,
        tags=tool.tags,
        metadata_={"version": tool.version, "timeout_seconds": tool.timeout_seconds, "network": tool.network},
    )
