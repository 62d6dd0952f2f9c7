"""The JSON schemas the model sees for the built-in tools (Letta's names and arguments)."""

from __future__ import annotations

import copy
from typing import Any

from perdure.schemas.tools import ToolDef

READ_ONLY_TOOLS = frozenset({"conversation_search", "archival_memory_search"})
"""The searches: they change nothing, so they may run concurrently, and their returns are not
clipped to `return_char_limit` (Letta pages them instead)."""
MEMORY_TOOLS = frozenset(
    {"memory_replace", "memory_insert", "memory_rethink", "core_memory_append", "core_memory_replace"}
)
"""The built-ins that edit a memory block named by `label`."""


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_LABEL = {"type": "string", "description": "Label of the memory block, e.g. 'human' or 'persona'."}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_OPTIONAL_DATE = {
    "type": ["string", "null"],
    "description": "ISO 8601 date or datetime, e.g. 2026-11-24 or 2026-11-24T14:30.",
}

_DEFINITIONS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "memory_replace",
        "Replace one exact occurrence of old_string with new_string in a memory block. old_string must appear "
        "verbatim and only once; do not include line numbers.",
        _schema(
            {
                "label": _LABEL,
                "old_string": {"type": "string", "description": "Exact text to replace."},
                "new_string": {"type": "string", "description": "Replacement text (may be empty to delete)."},
            },
            ["label", "old_string", "new_string"],
        ),
    ),
    (
        "memory_insert",
        "Insert text into a memory block at a line (0 = beginning, -1 = end).",
        _schema(
            {
                "label": _LABEL,
                "new_string": {"type": "string", "description": "Text to insert."},
                "insert_line": {
                    "type": "integer",
                    "description": "Line after which to insert; -1 appends.",
                    "default": -1,
                },
            },
            ["label", "new_string"],
        ),
    ),
    (
        "memory_rethink",
        "Rewrite a memory block completely with new_memory (creates the block if it does not exist).",
        _schema(
            {"label": _LABEL, "new_memory": {"type": "string", "description": "The block's new content."}},
            ["label", "new_memory"],
        ),
    ),
    (
        "core_memory_append",
        "Append content to a memory block, on a new line.",
        _schema(
            {"label": _LABEL, "content": {"type": "string", "description": "Text to append."}}, ["label", "content"]
        ),
    ),
    (
        "core_memory_replace",
        "Replace old_content with new_content in a memory block (every occurrence).",
        _schema(
            {
                "label": _LABEL,
                "old_content": {"type": "string", "description": "Text to find."},
                "new_content": {"type": "string", "description": "Replacement text."},
            },
            ["label", "old_content", "new_content"],
        ),
    ),
    (
        "conversation_search",
        "Search earlier messages of this conversation, including ones no longer in your context, by text.",
        _schema(
            {
                "query": {"type": ["string", "null"], "description": "Text to look for (case-insensitive)."},
                "roles": {
                    "type": ["array", "null"],
                    "items": {"type": "string", "enum": ["assistant", "user", "tool"]},
                    "description": "Only messages from these roles.",
                },
                "limit": {"type": ["integer", "null"], "description": "Most results to return (default 5)."},
                "start_date": _OPTIONAL_DATE,
                "end_date": _OPTIONAL_DATE,
            },
            [],
        ),
    ),
    (
        "archival_memory_insert",
        "Store a passage in long-term archival memory for later search.",
        _schema(
            {
                "content": {"type": "string", "description": "Text to store."},
                "tags": {**_STRINGS, "type": ["array", "null"]},
            },
            ["content"],
        ),
    ),
    (
        "archival_memory_search",
        "Search archival memory by keywords; optionally filter by tags and time.",
        _schema(
            {
                "query": {"type": "string", "description": "Keywords to look for."},
                "tags": {**_STRINGS, "type": ["array", "null"]},
                "tag_match_mode": {"type": "string", "enum": ["any", "all"], "default": "any"},
                "top_k": {"type": ["integer", "null"], "description": "Most results to return (default 5)."},
                "start_datetime": _OPTIONAL_DATE,
                "end_datetime": _OPTIONAL_DATE,
            },
            ["query"],
        ),
    ),
]

BUILTIN_TOOL_DEFS: dict[str, ToolDef] = {
    name: ToolDef(
        name=name,
        description=description,
        json_schema=schema,
        tool_type="letta_core" if "search" in name or name.startswith("archival") else "letta_memory_core",
        enable_parallel_execution=name in READ_ONLY_TOOLS,
    )
    for name, description, schema in _DEFINITIONS
}


def constrained_memory_arguments(
    schemas: list[dict[str, Any]], labels: list[str], longest: int
) -> list[dict[str, Any]]:
    """The tool schemas with every memory tool's `label` limited to the agent's writable block
    labels and its text arguments to the largest block limit (a longer text is refused anyway).

    For models without native tool calling, whose answers follow a grammar made from the
    schema: a small model invents labels, or repeats a phrase inside a string until it runs
    out of tokens; bounded, the grammar ends the string and the call stays valid."""
    if not labels:
        return schemas
    out = []
    for schema in schemas:
        function = schema.get("function") or {}
        properties = (function.get("parameters") or {}).get("properties") or {}
        if function.get("name") in MEMORY_TOOLS and isinstance(properties.get("label"), dict):
            schema = copy.deepcopy(schema)
            for name, spec in schema["function"]["parameters"]["properties"].items():
                if name == "label":
                    spec["enum"] = list(labels)
                elif spec.get("type") == "string":
                    spec.setdefault("maxLength", longest)
        out.append(schema)
    return out
