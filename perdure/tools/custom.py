"""Custom tools: a definition from a user's Python source, checked before anything is stored."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from pydantic import BaseModel, Field

from perdure.schemas.tools import (
    DEFAULT_TOOL_TIMEOUT_S,
    FUNCTION_RETURN_CHAR_LIMIT,
    MAX_TOOL_TIMEOUT_S,
    PipRequirement,
    ToolDef,
)
from perdure.tools.schemas import BUILTIN_TOOL_DEFS
from perdure.tools.source_schema import ParsedTool, ToolSourceError, parse_tool_source

_REQUIREMENT = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._\-]*(?:\[[A-Za-z0-9._,\-]+\])?)\s*(?:==\s*([A-Za-z0-9.*+!_\-]+))?\s*$"
)


class CustomToolCreate(BaseModel):
    """What `perdure tool create` (and `POST /v1/tools`) gives: the source and the options."""

    source_code: str = Field(max_length=1_000_000)
    name: str | None = None
    """The function to use when the source defines several."""
    json_schema: dict[str, Any] | None = None
    """An explicit schema instead of the one read from the signature and docstring."""
    description: str | None = None
    default_requires_approval: bool = False
    timeout_seconds: float = Field(default=DEFAULT_TOOL_TIMEOUT_S, gt=0, le=MAX_TOOL_TIMEOUT_S)
    pip_requirements: list[str] = Field(default_factory=list)
    network: bool = False
    return_char_limit: int = Field(default=FUNCTION_RETURN_CHAR_LIMIT, ge=1, le=1_000_000)
    enable_parallel_execution: bool = False
    tags: list[str] = Field(default_factory=list)


def build_custom_tool(request: CustomToolCreate, existing_id: str | None = None) -> ToolDef:
    """The definition `request` makes, or `ToolSourceError` with one line saying why not."""
    parsed = parse_tool_source(request.source_code, request.name)
    if parsed.function in BUILTIN_TOOL_DEFS:
        raise ToolSourceError(f"{parsed.function} is a built-in tool's name: rename the function")
    description, schema = _described(parsed, request.json_schema)
    if request.description is not None:
        description = request.description
    definition = ToolDef(
        id=existing_id or f"tool-{uuid.uuid4()}",
        name=parsed.function,
        description=description,
        json_schema=schema,
        tool_type="custom",
        source_code=request.source_code,
        return_char_limit=request.return_char_limit,
        default_requires_approval=request.default_requires_approval,
        enable_parallel_execution=request.enable_parallel_execution,
        pip_requirements=[parse_requirement(r) for r in request.pip_requirements],
        tags=request.tags,
        timeout_seconds=request.timeout_seconds,
        network=request.network,
    )
    return definition.model_copy(update={"version": tool_version(definition)})


def tool_version(tool: ToolDef) -> str:
    """A hash of what the tool does and how it is offered: source, schema, requirements, limits."""
    identity = tool.model_dump(mode="json", exclude={"id", "version", "tags"})
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def parse_requirement(text: str) -> PipRequirement:
    match = _REQUIREMENT.match(text)
    if match is None:
        raise ToolSourceError(f"--pip takes NAME or NAME==VERSION, got {text!r}")
    return PipRequirement(name=match.group(1), version=match.group(2))


def _described(parsed: ParsedTool, given: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The description and parameters schema: the source's, or a given schema's (Letta's form
    `{name, description, parameters}` or a bare object schema)."""
    if given is None:
        return parsed.description, parsed.json_schema
    parameters = given.get("parameters", given)
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise ToolSourceError('the schema is not a JSON object schema: it needs "type": "object"')
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(p, dict) for p in properties.values()):
        raise ToolSourceError('the schema\'s "properties" must be an object of schemas')
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) and r in properties for r in required):
        raise ToolSourceError('the schema\'s "required" must list names among its "properties"')
    description = given.get("description") if "parameters" in given else None
    return str(description or parsed.description), {"properties": {}, **parameters}
