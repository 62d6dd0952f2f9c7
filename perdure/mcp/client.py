"""Connecting to one MCP server with the official `mcp` SDK, listing its tools and reading a
call's result as the text a tool return carries."""

from __future__ import annotations

import json
import shlex
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from perdure.schemas.mcp import McpServerConfig, McpToolSpec

MAX_LISTING_PAGES = 100
"""A server whose tool listing never ends cannot hold a run: the pages after this are ignored."""


def stdio_parameters(config: McpServerConfig) -> StdioServerParameters:
    """The server's command, split as a shell would. It gets the SDK's minimal environment (PATH,
    HOME, ...) plus its own `env`: never the worker's provider keys or database URL."""
    argv = shlex.split(config.command or "")
    if not argv:
        raise ValueError(f"MCP server {config.name} has an empty command")
    return StdioServerParameters(command=argv[0], args=argv[1:], env=config.env or None)


@asynccontextmanager
async def connected(config: McpServerConfig) -> AsyncIterator[Client]:
    """A client session with the server, closed (and a stdio server stopped) on exit."""
    async with AsyncExitStack() as stack:
        if config.transport == "http":
            assert config.url is not None
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=config.headers, timeout=httpx2.Timeout(config.timeout_seconds))
            )
            client = Client(streamable_http_client(config.url, http_client=http), cache=None)
        else:
            client = Client(stdio_parameters(config), cache=None)
        yield await stack.enter_async_context(client)


async def list_tools(client: Client) -> list[McpToolSpec]:
    """Every tool the server offers, page by page."""
    specs: list[McpToolSpec] = []
    cursor: str | None = None
    for _ in range(MAX_LISTING_PAGES):
        page = await client.list_tools(cursor=cursor)
        specs += [
            McpToolSpec(name=tool.name, description=tool.description or "", input_schema=tool.input_schema)
            for tool in page.tools
        ]
        cursor = page.next_cursor
        if cursor is None:
            break
    return specs


def result_text(result: CallToolResult) -> tuple[bool, str]:
    """(success, text): text blocks joined by lines, structured content as JSON when there is no
    text, other blocks (images, resources) named by their type."""
    parts = [block.text if isinstance(block, TextContent) else f"[{block.type} content]" for block in result.content]
    if not parts and result.structured_content is not None:
        parts = [json.dumps(result.structured_content)]
    return not result.is_error, "\n".join(parts)
