"""`perdure mcp add|list|tools|remove`: MCP servers in the store; `tools` connects to one.

Env values and headers are secrets: stored, shown masked, never printed.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from perdure.mcp.attachments import function_name
from perdure.mcp.servers import (
    SETTING_KEY,
    SettingNames,
    fetch_tools,
    register_server,
    registered_server,
    server_config,
    server_views,
    unregister_server,
)
from perdure.mcp.sessions import McpUnavailable
from perdure.schemas.mcp import DEFAULT_MCP_TIMEOUT_S, McpServerConfig, McpServerView
from starter.cli_common import UsageError, json_flag, open_db, print_json

_FLAGS = SettingNames(command="--command", url="--url", timeout="--timeout", env="--env", headers="--header")


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """`perdure mcp ...` on the main parser (`sub` is its subcommands)."""
    mcp = sub.add_parser("mcp", help="MCP servers whose tools agents attach as SERVER/TOOL").add_subparsers(
        dest="action", required=True
    )
    add = mcp.add_parser("add", help="register a stdio (--command) or streamable-HTTP (--url) MCP server")
    add.add_argument("name", help="letters, digits, _ and -")
    add.add_argument("--command", help='the stdio server\'s command line, e.g. "python server.py"')
    add.add_argument("--url", help="the streamable-HTTP endpoint, e.g. http://localhost:8000/mcp")
    add.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="for a stdio server (secret)")
    add.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="for an HTTP server (secret)")
    add.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_MCP_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long a call may take before the model gets an error return (default {DEFAULT_MCP_TIMEOUT_S:g})",
    )
    json_flag(add).set_defaults(handler=add_server)
    json_flag(mcp.add_parser("list", help="registered servers (secrets masked)")).set_defaults(handler=list_servers)
    tools = mcp.add_parser("tools", help="connect to a server and list its tools")
    tools.add_argument("name")
    json_flag(tools).set_defaults(handler=server_tools)
    remove = mcp.add_parser("remove", help="unregister a server")
    remove.add_argument("name")
    json_flag(remove).set_defaults(handler=remove_server)


def add_server(args: argparse.Namespace) -> int:
    view = register_server(open_db(), _config(args))
    if args.json:
        return print_json(view.model_dump(mode="json"))
    print(f"added {server_text(view)}")
    return 0


def list_servers(args: argparse.Namespace) -> int:
    views = server_views(open_db())
    if args.json:
        return print_json([view.model_dump(mode="json") for view in views])
    print("\n".join(server_text(view) for view in views) or "no MCP servers yet: `perdure mcp add`")
    return 0


def server_tools(args: argparse.Namespace) -> int:
    config = registered_server(open_db(), args.name)
    try:
        specs = asyncio.run(fetch_tools(config))
    except McpUnavailable as err:
        raise UsageError(f"cannot list the tools of MCP server {config.name}: {err}") from err
    if args.json:
        return print_json([{"function": function_name(s.name), **s.model_dump(mode="json")} for s in specs])
    lines = [
        f"{config.name}/{s.name}  (called {function_name(s.name)})  {s.description.splitlines()[0] if s.description else ''}"
        for s in specs
    ]
    print("\n".join(line.rstrip() for line in lines) or f"MCP server {config.name} offers no tools")
    return 0


def remove_server(args: argparse.Namespace) -> int:
    unregister_server(open_db(), args.name)
    if args.json:
        return print_json({"name": args.name, "removed": True})
    print(f"removed MCP server {args.name}")
    return 0


def _config(args: argparse.Namespace) -> McpServerConfig:
    """The server the flags describe; every mistake is one line and nothing is stored. The flags'
    combinations are checked here, the settings themselves by `server_config` (shared with the API)."""
    if (args.command is None) == (args.url is None):
        raise UsageError("give exactly one of --command (a stdio server) or --url (a streamable-HTTP server)")
    if args.url is not None and args.env:
        raise UsageError("--env is for stdio servers (--command); an HTTP server takes --header")
    if args.command is not None and args.header:
        raise UsageError("--header is for HTTP servers (--url); a stdio server takes --env")
    return server_config(
        args.name,
        command=args.command,
        url=args.url,
        env=_pairs(args.env, "--env"),
        headers=_pairs(args.header, "--header"),
        timeout_seconds=args.timeout,
        names=_FLAGS,
    )


def _pairs(specs: list[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not SETTING_KEY.match(key):
            shown = key if sep else "(no =)"
            raise UsageError(f"{flag} takes KEY=VALUE with a name for KEY, got one whose key is {shown!r}")
        if key in pairs:
            raise UsageError(f"{flag} {key} is given twice")
        pairs[key] = value
    return pairs


def server_text(view: McpServerView) -> str:
    where = view.command if view.transport == "stdio" else view.url
    secrets = {**view.env, **view.headers}
    shown = "  " + " ".join(f"{key}={value}" for key, value in secrets.items()) if secrets else ""
    return f"{view.name}  {view.transport}  {where}{shown}"
