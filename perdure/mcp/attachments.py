"""How agents name MCP tools (`SERVER/TOOL`, or `SERVER/*` for all of a server's tools), and the
function name the model calls a tool by.

OpenAI function names must match `^[a-zA-Z0-9_-]{1,64}$`, and MCP tool names need not: the
function name is the tool's own name with every other character replaced by `_` (and a leading
`_` when it starts with neither a letter nor `_`), cut to 64 characters. Two tools that map to
one name, or an MCP tool named like one of the agent's other tools, are refused (at agent
creation when the agent names the tool; at run time, for `SERVER/*`, the later one is left out).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from perdure.schemas.mcp import SERVER_NAME_PATTERN

ALL_TOOLS = "*"
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
_SERVER_NAME = re.compile(SERVER_NAME_PATTERN)


@dataclass(frozen=True)
class Attachment:
    """One `SERVER/TOOL` (or `SERVER/*`) entry of an agent's tools."""

    server: str
    tool: str

    @property
    def everything(self) -> bool:
        return self.tool == ALL_TOOLS

    def covers(self, server: str, tool: str) -> bool:
        return self.server == server and (self.everything or self.tool == tool)


def is_attachment(name: str) -> bool:
    """Whether an entry of an agent's tools names an MCP tool (built-in and custom names have no `/`)."""
    return "/" in name


def parse_attachment(name: str) -> Attachment:
    """`SERVER/TOOL` or `SERVER/*`; anything else is a ValueError saying which form is expected."""
    server, _, tool = name.partition("/")
    if not _SERVER_NAME.match(server) or not tool:
        raise ValueError(f"MCP tools are named SERVER/TOOL or SERVER/*, got {name!r}")
    return Attachment(server=server, tool=tool)


def function_name(tool: str) -> str:
    """The name the model calls an MCP tool by (see the module's docstring)."""
    name = _NOT_ALLOWED.sub("_", tool)
    if not re.match(r"[A-Za-z_]", name):
        name = f"_{name}"
    return name[:64]


def split_tools(tools: Sequence[str]) -> tuple[list[str], list[str]]:
    """An agent's tools: (the others, the MCP attachments), each in the agent's order."""
    return [t for t in tools if not is_attachment(t)], [t for t in tools if is_attachment(t)]


def named_function_clashes(attachments: Iterable[Attachment], taken: Iterable[str]) -> list[str]:
    """Sentences for the explicitly named tools whose function names clash with `taken` or each other."""
    seen = set(taken)
    problems: list[str] = []
    for attachment in attachments:
        if attachment.everything:
            continue
        function = function_name(attachment.tool)
        if function in seen:
            problems.append(
                f"MCP tool {attachment.server}/{attachment.tool} would be called {function!r}, "
                "which another of the agent's tools is called already"
            )
        seen.add(function)
    return problems
