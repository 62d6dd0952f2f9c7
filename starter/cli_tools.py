"""`perdure tool create|list|show|delete`: custom Python tools, in the store alone (no Temporal).

The source is read, never imported: its schema comes from the signature and the docstring.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from perdure.schemas.tools import DEFAULT_TOOL_TIMEOUT_S, ToolDef
from perdure.tools.catalog import create_custom_tool, delete_custom_tool, get_custom_tool, list_custom_tools
from perdure.tools.custom import CustomToolCreate
from starter.cli_common import UsageError, json_flag, open_db, out, print_json, read_json

SOURCE_LIMIT = 1_000_000


def add_parser(sub: Any) -> None:
    """Register `perdure tool ...` on the CLI's subcommands."""
    tool = sub.add_parser("tool", help="create, list, show and delete custom Python tools").add_subparsers(
        dest="action", required=True
    )
    create = tool.add_parser("create", help="a tool from a Python file (schema from type hints and docstring)")
    create.add_argument("--file", type=Path, required=True, help="the Python source of the tool")
    create.add_argument("--name", help="the function to use when the file defines several")
    create.add_argument("--requires-approval", action="store_true", help="calls wait for a person's approval")
    create.add_argument(
        "--timeout", type=float, default=DEFAULT_TOOL_TIMEOUT_S, metavar="SECONDS", help="wall-clock limit per call"
    )
    create.add_argument("--pip", action="append", default=[], metavar="REQ", help="NAME or NAME==VERSION")
    create.add_argument("--network", action="store_true", help="let the tool reach the network")
    create.add_argument("--schema", type=Path, help="JSON schema of the arguments instead of the docstring's")
    create.add_argument("--return-char-limit", type=int, metavar="N")
    create.add_argument("--parallel", action="store_true", help="calls may run concurrently within a step")
    create.add_argument("--tag", action="append", default=[], metavar="TAG")
    json_flag(create).set_defaults(handler=create_tool)
    json_flag(tool.add_parser("list", help="list custom tools")).set_defaults(handler=list_tools)
    show = tool.add_parser("show", help="a tool with its schema and source")
    show.add_argument("name")
    json_flag(show).set_defaults(handler=show_tool)
    delete = tool.add_parser("delete", help="delete a tool no agent uses")
    delete.add_argument("name")
    json_flag(delete).set_defaults(handler=delete_tool)


def create_tool(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {
        "source_code": _read_source(args.file),
        "name": args.name,
        "default_requires_approval": args.requires_approval,
        "timeout_seconds": args.timeout,
        "pip_requirements": args.pip,
        "network": args.network,
        "enable_parallel_execution": args.parallel,
        "tags": args.tag,
    }
    if args.schema is not None:
        fields["json_schema"] = read_json(args.schema, "schema", dict, "a JSON object")
    if args.return_char_limit is not None:
        fields["return_char_limit"] = args.return_char_limit
    tool = create_custom_tool(open_db(), CustomToolCreate.model_validate(fields))
    return out(args, tool, tool_text(tool))


def list_tools(args: argparse.Namespace) -> int:
    found = list_custom_tools(open_db())
    if args.json:
        return print_json([t.model_dump(mode="json") for t in found])
    print("\n".join(tool_text(t, brief=True) for t in found) or "no custom tools yet: `perdure tool create`")
    return 0


def show_tool(args: argparse.Namespace) -> int:
    tool = get_custom_tool(open_db(), args.name)
    return out(args, tool, tool_text(tool))


def delete_tool(args: argparse.Namespace) -> int:
    tool = delete_custom_tool(open_db(), args.name)
    if args.json:
        return print_json({"id": tool.id, "name": tool.name, "deleted": True})
    print(f"deleted {tool.name}")
    return 0


def tool_text(tool: ToolDef, *, brief: bool = False) -> str:
    arguments = ", ".join(tool.json_schema.get("properties", {}))
    lines = [f"{tool.name}({arguments})  {tool.id}  version {tool.version}"]
    if brief:
        return lines[0]
    lines.append(f"  {tool.description or '(no description)'}")
    flags = [f"timeout {tool.timeout_seconds:g} s"]
    if tool.default_requires_approval:
        flags.append("requires approval")
    if tool.network:
        flags.append("network")
    if tool.pip_requirements:
        flags.append("pip: " + " ".join(r.specifier() for r in tool.pip_requirements))
    lines.append("  " + ", ".join(flags))
    return "\n".join(lines)


def _read_source(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read tool file {path}: {err.strerror or err}") from err
    if len(data) > SOURCE_LIMIT:
        raise UsageError(f"tool file {path} holds {len(data)} bytes, over the limit of {SOURCE_LIMIT}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"cannot read tool file {path}: it is not UTF-8 text") from err
