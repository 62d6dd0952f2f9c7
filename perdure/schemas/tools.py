"""Tool definitions as stored and as offered to the model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from perdure.schemas.approvals import ClientTool

FUNCTION_RETURN_CHAR_LIMIT = 50_000
DEFAULT_TOOL_TIMEOUT_S = 60.0
MAX_TOOL_TIMEOUT_S = 3_600.0


class PipRequirement(BaseModel):
    """Letta's shape of one requirement: a package name and, optionally, its exact version."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*(\[[A-Za-z0-9._,\-]+\])?$")
    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.*+!_\-]+$")

    def specifier(self) -> str:
        return f"{self.name}=={self.version}" if self.version else self.name


class CustomToolRef(BaseModel):
    """What a run fixes about a custom tool when it starts: the version it calls, and its timeout."""

    version: str
    timeout_seconds: float = DEFAULT_TOOL_TIMEOUT_S
    installs: bool = False
    """The tool has pip requirements: its first call may wait for their venv to be made."""


class ToolDef(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
    description: str = ""
    json_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    tool_type: Literal["letta_core", "letta_memory_core", "custom", "client"] = "custom"
    return_char_limit: int = Field(default=FUNCTION_RETURN_CHAR_LIMIT, ge=1, le=1_000_000)
    default_requires_approval: bool = False
    enable_parallel_execution: bool = False
    id: str | None = None
    """`tool-<uuid>` for a custom tool (Letta's form); built-ins have none."""
    source_code: str | None = None
    """A custom tool's Python source; None for built-ins."""
    pip_requirements: list[PipRequirement] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    version: str = ""
    """A hash of the source and the schema: a run calls the version it started with."""
    timeout_seconds: float = Field(default=DEFAULT_TOOL_TIMEOUT_S, gt=0, le=MAX_TOOL_TIMEOUT_S)
    network: bool = False
    """Whether the sandbox leaves the network to the tool (namespaces cut it off otherwise)."""

    @property
    def is_custom(self) -> bool:
        return self.source_code is not None

    def openai_schema(self) -> dict[str, Any]:
        """The `tools` entry of a chat-completions request."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.json_schema},
        }


def client_tool_def(tool: ClientTool) -> ToolDef:
    """A client tool as offered to the model (Letta: parameters default to an empty object)."""
    return ToolDef(
        name=tool.name,
        description=tool.description or "",
        json_schema=tool.parameters or {"type": "object", "properties": {}},
        tool_type="client",
    )
