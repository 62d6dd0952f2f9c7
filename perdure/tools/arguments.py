"""Checking a tool call's arguments against the tool's JSON schema before anything runs.

A small checker of the schema subset tool definitions use (type, required, properties,
additionalProperties, enum, const, anyOf, oneOf, items), so the model gets one precise sentence
back instead of a stack trace. The tool-rules issue reuses it for prefilled arguments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def decode_arguments(tool_name: str, text: str | None) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """A call's arguments as a dict, or why they are not one (the text the model gets back)."""
    try:
        arguments = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        return None, (
            f"Error: the arguments for {tool_name} are not valid JSON ({exc.msg} at position {exc.pos}); "
            "the tool was not called. Send the arguments as one JSON object."
        )
    except RecursionError:
        # Decoded in workflow code too: an exception escaping here would fail the workflow task
        # on every retry and leave the run stuck.
        return None, (
            f"Error: the arguments for {tool_name} are nested too deeply to read; "
            "the tool was not called. Send the arguments as one flat JSON object."
        )
    if not isinstance(arguments, dict):
        return (
            None,
            f"Error: the arguments for {tool_name} must be a JSON object, got {type(arguments).__name__}; the tool was not called.",
        )
    return arguments, None


def check_arguments(tool_name: str, schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
    """Return why `arguments` do not fit `schema`, or None when they do."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    for key in arguments:
        if key not in properties and schema.get("additionalProperties") is not True:
            return f"Unknown argument '{key}' for tool '{tool_name}'; expected arguments: {sorted(properties)}."
    missing = [key for key in schema.get("required", []) if key not in arguments]
    if missing:
        return f"Missing required argument(s) for tool '{tool_name}': {', '.join(missing)}."
    for key, value in arguments.items():
        if key in properties:
            problem = check_value(value, properties[key])
            if problem is not None:
                return f"Invalid value for '{key}': {problem}"
    return None


def check_value(value: Any, schema: Mapping[str, Any]) -> str | None:
    """Why `value` does not match `schema` (shallow for objects, one level into arrays)."""
    if "const" in schema and value != schema["const"]:
        return f"{value!r} is not the required value {schema['const']!r}."
    if "enum" in schema and value not in schema["enum"]:
        return f"{value!r} is not one of {schema['enum']!r}."
    if "anyOf" in schema and all(check_value(value, option) for option in schema["anyOf"]):
        return f"{value!r} matches none of the allowed schemas."
    if "oneOf" in schema and sum(check_value(value, option) is None for option in schema["oneOf"]) != 1:
        return f"{value!r} must match exactly one of the allowed schemas."
    expected = schema.get("type")
    if expected is not None and not _has_type(value, expected):
        return f"{value!r} does not match expected schema type {expected!r}."
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            problem = check_value(item, schema["items"])
            if problem is not None:
                return f"item {index}: {problem}"
    return None


def _has_type(value: Any, expected: str | list[str]) -> bool:
    names = [expected] if isinstance(expected, str) else list(expected)
    for name in names:
        python_types = _TYPES.get(name)
        if python_types is None:
            return True
        if isinstance(value, bool) and name in ("integer", "number"):
            continue
        if isinstance(value, python_types):
            return True
    return False
