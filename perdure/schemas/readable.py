"""JSON text held as text in Python and written as JSON in the payloads Temporal records.

A model's tool arguments and a tool's packaged return are JSON strings. Written as strings they
show in the Temporal UI as JSON inside JSON (`"{\\"label\\": ...}"`); written as the objects they
hold, a person reads them at a glance. Python code keeps seeing `str`: an object read back is
encoded again, so payloads recorded before (strings) and after (objects) both load.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator, SerializerFunctionWrapHandler, WrapSerializer

from perdure.schemas.messages import ToolCall, ToolReturn


MAX_DEPTH = 32
"""Deeper JSON stays a string: serializers have recursion limits, and no person reads it anyway."""


def json_object(text: str | None) -> dict[str, Any] | None:
    """The object `text` encodes, or None when it is not a JSON object (or nests too deeply)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) and _within_depth(value, MAX_DEPTH) else None


def _within_depth(value: Any, budget: int) -> bool:
    if budget == 0:
        return False
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return all(_within_depth(child, budget - 1) for child in children)


def encode_object(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False)


def _exact_object(text: str | None) -> dict[str, Any] | str | None:
    """The object when encoding it again gives `text` back exactly, else `text` itself."""
    value = json_object(text)
    return value if value is not None and encode_object(value) == text else text


def _dump_call(call: ToolCall, handler: SerializerFunctionWrapHandler) -> Any:
    data = handler(call)
    arguments = json_object(call.arguments)
    return data if arguments is None else {**data, "arguments": arguments}


def _load_call(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("arguments"), dict):
        return {**value, "arguments": encode_object(value["arguments"])}
    return value


ReadableToolCall = Annotated[ToolCall, BeforeValidator(_load_call), WrapSerializer(_dump_call, when_used="json")]
"""A tool call whose arguments are written as an object (when they are one). Read back, they are
that object encoded again: the same arguments, in one canonical spelling."""


def _dump_return(tool_return: ToolReturn, handler: SerializerFunctionWrapHandler) -> Any:
    data = handler(tool_return)
    return {**data, "func_response": _exact_object(tool_return.func_response)}


def _load_return(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("func_response"), dict):
        return {**value, "func_response": encode_object(value["func_response"])}
    return value


ReadableToolReturn = Annotated[
    ToolReturn, BeforeValidator(_load_return), WrapSerializer(_dump_return, when_used="json")
]
"""A tool return whose packaged response (`{"status", "message", "time"}`) is written as its
object, the message as plain text, when reading it back gives the very same string."""
