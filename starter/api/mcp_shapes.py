"""MCP servers and their tools in the shapes letta-client 1.12 sends and reads.

A server's id is its name: agents name its tools `SERVER/TOOL`, so the name is what identifies
it everywhere in Perdure. Letta's stdio `command` and `args` are stored as one command line
(split again as a shell would when shown and when started); a streamable-HTTP server's
`auth_header`/`auth_token` and `custom_headers` are stored as one set of headers, and shown back
as `custom_headers` with every value masked, like a stdio server's `env`. SSE servers are not
supported (Perdure speaks stdio and streamable HTTP).
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from perdure.mcp.attachments import function_name
from perdure.mcp.servers import SettingNames, server_config
from perdure.schemas.mcp import DEFAULT_MCP_TIMEOUT_S, MASK, McpServerConfig, McpServerView, McpToolSpec
from perdure.store.errors import InvalidRequestError

API_FIELDS = SettingNames(
    command="config.command",
    url="config.server_url",
    timeout="config.timeout_seconds",
    env="config.env",
    headers="config header",
)
TRANSPORTS = "mcp_server_type must be 'stdio' or 'streamable_http' (SSE servers are not supported)"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StdioConfig(_Lenient):
    """Letta's `CreateStdioMcpServer`, plus Perdure's `timeout_seconds`."""

    mcp_server_type: Literal["stdio"] = "stdio"
    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    timeout_seconds: float = DEFAULT_MCP_TIMEOUT_S
    """Perdure's own: how long one call may take before the model gets an error return."""

    def to_config(self, name: str) -> McpServerConfig:
        return server_config(
            name,
            command=shlex.join([self.command, *self.args]),
            url=None,
            env=self.env or {},
            headers={},
            timeout_seconds=self.timeout_seconds,
            names=API_FIELDS,
        )


class StreamableHttpConfig(_Lenient):
    """Letta's `CreateStreamableHTTPMcpServer`, plus Perdure's `timeout_seconds`."""

    mcp_server_type: Literal["streamable_http"] = "streamable_http"
    server_url: str
    auth_header: str | None = None
    auth_token: str | None = None
    custom_headers: dict[str, str] | None = None
    timeout_seconds: float = DEFAULT_MCP_TIMEOUT_S
    """Perdure's own: how long one call may take before the model gets an error return."""

    def to_config(self, name: str) -> McpServerConfig:
        return server_config(
            name,
            command=None,
            url=self.server_url,
            env={},
            headers=self.headers(),
            timeout_seconds=self.timeout_seconds,
            names=API_FIELDS,
        )

    def headers(self) -> dict[str, str]:
        """`custom_headers` plus `auth_header: auth_token`, as Letta sends them."""
        if (self.auth_header is None) != (self.auth_token is None):
            raise InvalidRequestError("config.auth_header and config.auth_token go together: give both or neither")
        auth = (
            {self.auth_header: self.auth_token} if self.auth_header is not None and self.auth_token is not None else {}
        )
        return {**(self.custom_headers or {}), **auth}


def _transport(value: Any) -> str | None:
    """The config's `mcp_server_type`; when it is left out (the SDK does not require it), the
    fields say which: a `command` is stdio, a `server_url` streamable HTTP."""
    fields: dict[str, Any] = value if isinstance(value, dict) else value.__dict__
    given = fields.get("mcp_server_type")
    if given is not None:
        return str(given)
    if "command" in fields:
        return "stdio"
    return "streamable_http" if "server_url" in fields else None


ServerSettings = Annotated[
    Annotated[StdioConfig, Tag("stdio")] | Annotated[StreamableHttpConfig, Tag("streamable_http")],
    Discriminator(_transport, custom_error_type="mcp_server_type", custom_error_message=TRANSPORTS),
]


class McpServerCreate(_Lenient):
    """Letta's `CreateMcpServerRequest`."""

    server_name: str
    config: ServerSettings

    def to_config(self) -> McpServerConfig:
        return self.config.to_config(self.server_name)


class StdioUpdate(_Lenient):
    """Letta's `UpdateStdioMcpServer`: what is given replaces what is stored, what is left out
    (or null) stays."""

    mcp_server_type: Literal["stdio"] = "stdio"
    command: str | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = None
    timeout_seconds: float | None = None

    def apply(self, current: McpServerConfig) -> McpServerConfig:
        program, *args = command_argv(current.command or "")
        return StdioConfig(
            command=program if self.command is None else self.command,
            args=args if self.args is None else self.args,
            env=current.env if self.env is None else unmasked(self.env, current.env),
            timeout_seconds=current.timeout_seconds if self.timeout_seconds is None else self.timeout_seconds,
        ).to_config(current.name)


class StreamableHttpUpdate(_Lenient):
    """Letta's `UpdateStreamableHTTPMcpServer`: `custom_headers` replaces the stored headers,
    `auth_header`/`auth_token` sets one of them, and what is left out (or null) stays."""

    mcp_server_type: Literal["streamable_http"] = "streamable_http"
    server_url: str | None = None
    auth_header: str | None = None
    auth_token: str | None = None
    custom_headers: dict[str, str] | None = None
    timeout_seconds: float | None = None

    def apply(self, current: McpServerConfig) -> McpServerConfig:
        headers = current.headers if self.custom_headers is None else unmasked(self.custom_headers, current.headers)
        return StreamableHttpConfig(
            server_url=(current.url or "") if self.server_url is None else self.server_url,
            auth_header=self.auth_header,
            auth_token=self.auth_token,
            custom_headers=headers,
            timeout_seconds=current.timeout_seconds if self.timeout_seconds is None else self.timeout_seconds,
        ).to_config(current.name)


def unmasked(given: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    """`given`, where a value that is the mask stands for the stored one: a client that sends back
    what it retrieved, with one value changed, keeps the others."""
    return {key: stored[key] if value == MASK and key in stored else value for key, value in given.items()}


class McpServerUpdate(_Lenient):
    """Letta's `UpdateMcpServerRequest`. The config is read as the stored server's transport,
    which an update cannot change; nor can it rename a server (agents name its tools by it)."""

    server_name: str | None = None
    config: dict[str, Any]

    def apply(self, current: McpServerConfig) -> McpServerConfig:
        if self.server_name not in (None, current.name):
            raise InvalidRequestError(
                f"an MCP server cannot be renamed (agents name its tools {current.name}/TOOL): "
                f"create '{self.server_name}' and delete '{current.name}'"
            )
        update = StdioUpdate if current.transport == "stdio" else StreamableHttpUpdate
        kind = update.model_fields["mcp_server_type"].default
        if self.config.get("mcp_server_type", kind) != kind:
            raise InvalidRequestError(
                f"MCP server {current.name} is {kind}: an update cannot change its transport (delete it and create it again)"
            )
        return update.model_validate(self.config).apply(current)


class LettaStdioServer(BaseModel):
    """Letta's `StdioMcpServer`, with `env` masked."""

    id: str
    server_name: str
    mcp_server_type: Literal["stdio"] = "stdio"
    command: str
    args: list[str]
    env: dict[str, str]
    timeout_seconds: float


class LettaStreamableHttpServer(BaseModel):
    """Letta's `StreamableHTTPMcpServer`: every header (the auth header too) in `custom_headers`, masked."""

    id: str
    server_name: str
    mcp_server_type: Literal["streamable_http"] = "streamable_http"
    server_url: str
    auth_header: None = None
    auth_token: None = None
    custom_headers: dict[str, str]
    timeout_seconds: float


LettaMcpServer = LettaStdioServer | LettaStreamableHttpServer


class LettaMcpTool(BaseModel):
    """Letta's `Tool` for an MCP tool. `id` is the tool's own name (unique on its server, and
    every route that takes it names the server too); `metadata_.agent_tool` is how an agent
    lists it in `tools`, and `json_schema.name` the function the model calls."""

    id: str
    name: str
    description: str
    tool_type: str = "external_mcp"
    json_schema: dict[str, Any]
    metadata_: dict[str, Any]


class ToolRunRequest(_Lenient):
    """Letta's `ToolExecuteRequest` for an MCP tool."""

    args: dict[str, Any] = Field(default_factory=dict)


class LettaToolExecutionResult(BaseModel):
    """Letta's `ToolExecutionResult`: an MCP tool's answer is text; it prints nowhere Perdure sees."""

    status: Literal["success", "error"]
    func_return: str
    stdout: list[str] = Field(default_factory=list)
    stderr: list[str] = Field(default_factory=list)


def command_argv(command: str) -> list[str]:
    """A stored command line as Letta's `command` and `args`; one stored before commands were
    checked to split (by an older `perdure mcp add`) is shown whole, as the command."""
    try:
        return shlex.split(command) or [command]
    except ValueError:
        return [command]


def letta_server(view: McpServerView) -> LettaMcpServer:
    if view.transport == "stdio":
        program, *args = command_argv(view.command or "")
        return LettaStdioServer(
            id=view.name,
            server_name=view.name,
            command=program,
            args=args,
            env=view.env,
            timeout_seconds=view.timeout_seconds,
        )
    return LettaStreamableHttpServer(
        id=view.name,
        server_name=view.name,
        server_url=view.url or "",
        custom_headers=view.headers,
        timeout_seconds=view.timeout_seconds,
    )


def letta_mcp_tool(server: str, spec: McpToolSpec) -> LettaMcpTool:
    function = function_name(spec.name)
    return LettaMcpTool(
        id=spec.name,
        name=spec.name,
        description=spec.description,
        json_schema={"name": function, "description": spec.description, "parameters": spec.input_schema},
        metadata_={"mcp": {"server_name": server}, "agent_tool": f"{server}/{spec.name}"},
    )
