"""Registering MCP servers and asking one for its tools: what `perdure mcp` and the HTTP API's
`/v1/mcp-servers/` share, so a server is checked, stored, shown and reached alike from either.

Env values and headers are secrets: what these functions return for showing is masked
(`McpServerView`), and their errors name a setting, never its value. The `mcp` SDK is imported
when a server is reached, not with this module (see `perdure.mcp.sessions`).
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from perdure.mcp.sessions import McpUnavailable, failure_reason, import_sdk
from perdure.schemas.mcp import SERVER_NAME_PATTERN, McpServerConfig, McpServerView, McpToolSpec
from perdure.store import mcp_servers
from perdure.store.db import Database
from perdure.store.errors import InvalidRequestError

T = TypeVar("T")
MAX_TIMEOUT_S = 3600.0
_URL = re.compile(r"^https?://[^\s/]+")
SETTING_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
"""What an env variable's or a header's name may be."""


@dataclass(frozen=True)
class SettingNames:
    """What the caller's user calls each setting (the CLI's flags, the API's fields), so a
    refusal names the one they gave."""

    command: str
    url: str
    timeout: str
    env: str
    headers: str


def server_config(
    name: str,
    *,
    command: str | None,
    url: str | None,
    env: dict[str, str],
    headers: dict[str, str],
    timeout_seconds: float,
    names: SettingNames,
) -> McpServerConfig:
    """The server these settings describe (stdio when `command` is given, streamable HTTP when
    `url` is); each mistake is one InvalidRequestError, before anything is stored."""
    if not re.match(SERVER_NAME_PATTERN, name):
        raise InvalidRequestError(f"an MCP server name is 1-64 letters, digits, _ or -, got {name!r}")
    if command is not None:
        _check_command(command, names.command)
    if url is not None and not _URL.match(url):
        raise InvalidRequestError(f"{names.url} must be an http:// or https:// URL, got {url!r}")
    _check_keys(env, names.env)
    _check_keys(headers, names.headers)
    _check_header_values(headers, names.headers)
    if not 0 < timeout_seconds <= MAX_TIMEOUT_S:
        raise InvalidRequestError(
            f"{names.timeout} must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds, got {timeout_seconds:g}"
        )
    return McpServerConfig(
        name=name,
        transport="stdio" if command is not None else "http",
        command=command,
        url=url,
        env=env,
        headers=headers,
        timeout_seconds=timeout_seconds,
    )


def _check_command(command: str, setting: str) -> None:
    """The command line must split (as the worker will split it) into a program and its arguments."""
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise InvalidRequestError(f"{setting} cannot be split as a shell would: {err}") from err
    if not argv or not argv[0].strip():
        raise InvalidRequestError(f"{setting} is empty")


def _check_keys(settings: dict[str, str], setting: str) -> None:
    bad = next((key for key in settings if not SETTING_KEY.match(key)), None)
    if bad is not None:
        raise InvalidRequestError(
            f"{setting} names are letters, digits, _, . and - (not starting with a digit), got {bad!r}"
        )


def _check_header_values(headers: dict[str, str], setting: str) -> None:
    """A value HTTP cannot carry would fail every call, with an error that may quote it: refused
    here, naming the header, never the value."""
    for key, value in headers.items():
        if any(c in value for c in "\r\n\0") or not value.isascii():
            raise InvalidRequestError(f"{setting} {key} has a value HTTP cannot send (a line break or non-ASCII)")


def register_server(db: Database, config: McpServerConfig) -> McpServerView:
    with db.transaction() as session:
        mcp_servers.add_server(session, config)
    return config.masked()


def server_views(db: Database) -> list[McpServerView]:
    with db.transaction(read_only=True) as session:
        return [config.masked() for config in mcp_servers.list_servers(session)]


def registered_server(db: Database, name: str) -> McpServerConfig:
    """The server with its secrets, to connect to it (NotFoundError when none has this name)."""
    with db.transaction(read_only=True) as session:
        return mcp_servers.get_server(session, name)


def change_server(db: Database, name: str, change: Callable[[McpServerConfig], McpServerConfig]) -> McpServerView:
    """Apply `change` to the stored settings in one transaction: the worker's next call uses the
    new ones (a stdio server whose settings changed is started again), as after a remove and add."""
    with db.transaction() as session:
        return mcp_servers.update_server(session, name, change).masked()


def unregister_server(db: Database, name: str) -> None:
    with db.transaction() as session:
        mcp_servers.remove_server(session, name)


async def fetch_tools(config: McpServerConfig) -> list[McpToolSpec]:
    """Connect once and list every tool; McpUnavailable (one sentence) when the server cannot
    be reached or does not answer within its timeout."""

    await import_sdk()
    from perdure.mcp.client import connected, list_tools

    async def fetch() -> list[McpToolSpec]:
        async with connected(config) as client:
            return await list_tools(client)

    return await _within_timeout(config, fetch())


async def call_tool_once(config: McpServerConfig, tool: str, arguments: dict[str, Any]) -> tuple[bool, str]:
    """(success, text) of one call on a session of its own: outside a run there is no worker
    session to share, and the server is stopped again afterwards."""

    await import_sdk()
    from perdure.mcp.client import connected, result_text

    async def call() -> tuple[bool, str]:
        async with connected(config) as client:
            return result_text(await client.call_tool(tool, arguments))

    return await _within_timeout(config, call())


async def _within_timeout(config: McpServerConfig, work: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(work, config.timeout_seconds)
    except TimeoutError as err:
        raise McpUnavailable(f"no answer within {config.timeout_seconds:g} s", timed_out=True) from err
    except Exception as err:
        raise McpUnavailable(failure_reason(err)) from err
