"""Checking an agent's MCP tools when it is created: the form, the server, the function names."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from perdure.mcp.attachments import function_name, is_attachment, named_function_clashes, parse_attachment
from perdure.store.errors import InvalidRequestError
from perdure.store.mcp_servers import server_names


def check_attachments(session: Session, tools: Sequence[str], taken: set[str]) -> list[str]:
    """The function names of the MCP tools the agent names one by one (tool rules may name
    them); refuses a malformed name, a server that is not registered, or a function-name clash
    with `taken` (the other tools) or each other. No server is contacted."""
    try:
        attachments = [parse_attachment(name) for name in tools if is_attachment(name)]
    except ValueError as err:
        raise InvalidRequestError(str(err)) from err
    if not attachments:
        return []
    registered = server_names(session)
    unknown = sorted({a.server for a in attachments if a.server not in registered})
    if unknown:
        known = ", ".join(sorted(registered)) or "none; add one with `perdure mcp add`"
        raise InvalidRequestError(f"unknown MCP server(s): {', '.join(unknown)}; registered: {known}")
    clashes = named_function_clashes(attachments, taken)
    if clashes:
        raise InvalidRequestError(clashes[0])
    return [function_name(a.tool) for a in attachments if not a.everything]
