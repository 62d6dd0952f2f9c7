"""The reference to an MCP tool that a run's agent snapshot carries (apart from `perdure.schemas.mcp`,
which builds on the run payloads)."""

from __future__ import annotations

from pydantic import BaseModel


class McpToolRef(BaseModel):
    """An MCP tool as one run offers it: the function name the model calls, and where it lives."""

    function: str
    server: str
    tool: str
