"""`/v1/mcp-servers/`: MCP servers in Letta's shapes (create, list, retrieve, update, delete), and
their tools (list, retrieve, run), over the same functions as `perdure mcp`.

A server's id is its name (see starter/api/mcp_shapes.py). Its env values and headers are
masked in every answer. Listing or running a tool connects to the server from this process;
a server that cannot be reached is a 502 naming the server, never its settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Body, Depends

from perdure.mcp.servers import (
    call_tool_once,
    change_server,
    fetch_tools,
    register_server,
    registered_server,
    server_views,
    unregister_server,
)
from perdure.mcp.sessions import McpUnavailable
from perdure.schemas.mcp import McpServerConfig, McpToolSpec
from perdure.store.errors import NotFoundError
from perdure.store.mcp_servers import McpServerExistsError
from starter.api.context import ApiContext, context
from starter.api.errors import ApiError
from starter.api.mcp_shapes import (
    LettaMcpServer,
    LettaMcpTool,
    LettaToolExecutionResult,
    McpServerCreate,
    McpServerUpdate,
    ToolRunRequest,
    letta_mcp_tool,
    letta_server,
)

router = APIRouter(prefix="/v1/mcp-servers")
Context = Annotated[ApiContext, Depends(context)]


@router.post("/")
def create(ctx: Context, body: Annotated[McpServerCreate, Body()]) -> LettaMcpServer:
    try:
        return letta_server(register_server(ctx.client.db, body.to_config()))
    except McpServerExistsError as err:
        raise ApiError(409, str(err)) from err


@router.get("/")
def list_servers(ctx: Context) -> list[LettaMcpServer]:
    return [letta_server(view) for view in server_views(ctx.client.db)]


@router.get("/{mcp_server_id}")
def get(ctx: Context, mcp_server_id: str) -> LettaMcpServer:
    return letta_server(registered_server(ctx.client.db, mcp_server_id).masked())


@router.patch("/{mcp_server_id}")
def update(ctx: Context, mcp_server_id: str, body: Annotated[McpServerUpdate, Body()]) -> LettaMcpServer:
    return letta_server(change_server(ctx.client.db, mcp_server_id, body.apply))


@router.delete("/{mcp_server_id}", status_code=204)
def delete(ctx: Context, mcp_server_id: str) -> None:
    unregister_server(ctx.client.db, mcp_server_id)


@router.get("/{mcp_server_id}/tools")
async def list_tools(ctx: Context, mcp_server_id: str) -> list[LettaMcpTool]:
    config = registered_server(ctx.client.db, mcp_server_id)
    return [letta_mcp_tool(config.name, spec) for spec in await _tools_of(config)]


@router.get("/{mcp_server_id}/tools/{tool_id}")
async def get_tool(ctx: Context, mcp_server_id: str, tool_id: str) -> LettaMcpTool:
    config = registered_server(ctx.client.db, mcp_server_id)
    found = next((spec for spec in await _tools_of(config) if spec.name == tool_id), None)
    if found is None:
        raise NotFoundError(f"MCP server {config.name} offers no tool '{tool_id}'")
    return letta_mcp_tool(config.name, found)


@router.post("/{mcp_server_id}/tools/{tool_id}/run")
async def run_tool(
    ctx: Context, mcp_server_id: str, tool_id: str, body: Annotated[ToolRunRequest, Body()]
) -> LettaToolExecutionResult:
    """One call, as an agent's run would make it; a tool that reports an error (an unknown
    tool among them) is `status: error` with the server's text."""
    config = registered_server(ctx.client.db, mcp_server_id)
    with _unreachable_is_502(config):
        success, text = await call_tool_once(config, tool_id, body.args)
    return LettaToolExecutionResult(status="success" if success else "error", func_return=text)


async def _tools_of(config: McpServerConfig) -> list[McpToolSpec]:
    with _unreachable_is_502(config):
        return await fetch_tools(config)


@contextmanager
def _unreachable_is_502(config: McpServerConfig) -> Iterator[None]:
    try:
        yield
    except McpUnavailable as err:
        raise ApiError(502, f"cannot reach MCP server {config.name}: {err}") from err
