"""MCP servers as stored and shown, and the payloads of the MCP activities.

A server's env values and headers are secrets: they live in the database and are read there by
the worker. What the workflow carries (attachments, tool references, call inputs) names a
server, never its settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from perdure.schemas.mcp_refs import McpToolRef
from perdure.schemas.run import ToolStepInput

SERVER_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DEFAULT_MCP_TIMEOUT_S = 60.0
MASK = "****"

McpTransport = Literal["stdio", "http"]


class McpServerConfig(BaseModel):
    """A registered MCP server with its secrets: stdio (`command`, `env`) or streamable HTTP (`url`, `headers`)."""

    name: str = Field(pattern=SERVER_NAME_PATTERN)
    transport: McpTransport
    command: str | None = None
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=DEFAULT_MCP_TIMEOUT_S, gt=0, le=3600)
    """How long one call (or listing) may take before the model gets an error return."""

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if self.transport == "stdio" and (not self.command or self.url is not None or self.headers):
            raise ValueError("a stdio server has a command (and env), no url or headers")
        if self.transport == "http" and (not self.url or self.command is not None or self.env):
            raise ValueError("a streamable-HTTP server has a url (and headers), no command or env")
        return self

    def masked(self) -> McpServerView:
        """What `perdure mcp list` shows: the keys of env and headers, never their values."""
        return McpServerView(
            name=self.name,
            transport=self.transport,
            command=self.command,
            url=self.url,
            env={key: MASK for key in self.env},
            headers={key: MASK for key in self.headers},
            timeout_seconds=self.timeout_seconds,
        )


class McpServerView(BaseModel):
    """A server as listed: secrets replaced by `MASK`."""

    name: str
    transport: McpTransport
    command: str | None = None
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float


class McpToolSpec(BaseModel):
    """One tool a server offers, as its listing gave it."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class McpListInput(BaseModel):
    """List the tools of the servers an agent attaches, once for a run."""

    agent_id: str
    run_id: str
    attachments: list[str]
    """`SERVER/TOOL` or `SERVER/*`, as the agent names them."""
    taken: list[str] = Field(default_factory=list)
    """Function names the agent's other tools use: an MCP tool of the same name is left out."""


class McpListOutput(BaseModel):
    """What the run offers: compact (names only). The schemas are stored under the run."""

    tools: list[McpToolRef] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    """Servers that could not be listed, tools that are missing or clash: one line each."""


class McpToolStepInput(ToolStepInput):
    """One call of an MCP tool: the step's call plus the server and the tool's own name."""

    server: str
    tool: str
