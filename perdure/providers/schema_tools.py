"""Schema-constrained tool calling, for models that cannot call tools, on either protocol.

Small local models (SmolLM2 on llama.cpp, many models on vLLM or Ollama) ignore `tools` and
`tool_choice`, but their servers can constrain decoding to a JSON schema. The request then
asks for exactly one JSON object: `{"tool_call": {"name": ..., "arguments": {...}}}` naming one
of the allowed tools, or `{"response": "..."}` to answer. The grammar makes every answer
parseable and every call's arguments fit its tool's schema; which branch the model picks is
still the model's choice. The answer is asked for with `response_format`, which each provider
sends its own way: OpenAI-compatible servers as it is, Anthropic as a forced tool whose input is
the answer (`anthropic_format.answer_tool`).

The history is rewritten into the same shape, so the model sees its earlier calls as it is
asked to write them, and tool results come back as user turns: a plain chat template renders
any role name, but such a model was only trained on system, user and assistant.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

RESPONSE_KEY = "response"
TOOL_CALL_KEY = "tool_call"
SCHEMA_NAME = "answer"
TOOL_RESULT_PREFIX = "Tool result"
"""Starts every rewritten tool result; the instructions name it so the model can tell results
from what the user says."""

# --------------------------------------------------------------------------- request


def response_format_for(
    tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None
) -> dict[str, Any] | None:
    """The `response_format` that constrains the answer to the allowed branches, or None when no
    tools are offered (the model then answers in plain text). `tool_choice` follows OpenAI:
    "auto" or None (any tool or an answer), "required" (any tool), "none" (an answer only), or
    `{"type": "function", "function": {"name": ...}}` (that tool)."""
    if not tools:
        return None
    names = allowed_tool_names(tools, tool_choice)
    branches = [_tool_branch(function) for function in _functions(tools) if function["name"] in names]
    if answer_allowed(tool_choice):
        branches.append(_response_branch())
    schema = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True}}


def allowed_tool_names(tools: list[dict[str, Any]], tool_choice: str | dict[str, Any] | None) -> list[str]:
    """The tools `tool_choice` lets the model call, in the order offered."""
    names = [function["name"] for function in _functions(tools)]
    if tool_choice is None or tool_choice in ("auto", "required"):
        return names
    if tool_choice == "none":
        return []
    if isinstance(tool_choice, dict):
        chosen = (tool_choice.get("function") or {}).get("name")
        if tool_choice.get("type") == "function" and isinstance(chosen, str) and chosen in names:
            return [chosen]
        raise ValueError(f"tool_choice names a tool that is not offered: {tool_choice!r}; offered: {names}")
    raise ValueError(f"unknown tool_choice {tool_choice!r}: expected 'auto', 'required', 'none' or a named function")


def answer_allowed(tool_choice: str | dict[str, Any] | None) -> bool:
    return tool_choice is None or tool_choice in ("auto", "none")


def _functions(tools: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(tool["function"]) for tool in tools]


def _tool_branch(function: Mapping[str, Any]) -> dict[str, Any]:
    call = _closed_object(
        {"name": {"const": function["name"]}, "arguments": _arguments_schema(function.get("parameters"))}
    )
    return _closed_object({TOOL_CALL_KEY: call})


def _response_branch() -> dict[str, Any]:
    return _closed_object({RESPONSE_KEY: {"type": "string"}})


def _closed_object(properties: dict[str, Any]) -> dict[str, Any]:
    """All keys required and in this order: grammar-based servers emit properties in schema
    order, which puts a call's name before its arguments for the stream decoder."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _arguments_schema(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The tool's parameters, closed to extra keys unless the tool says otherwise: an open object
    lets a small model wander into invented arguments."""
    schema: dict[str, Any] = copy.deepcopy(dict(parameters)) if parameters else {"type": "object", "properties": {}}
    if schema.get("type") == "object":
        schema.setdefault("additionalProperties", False)
    return schema


# --------------------------------------------------------------------------- messages


def tool_instructions(tools: list[dict[str, Any]], tool_choice: str | dict[str, Any] | None = None) -> str:
    """The system-prompt addition: the answer shapes, and the tools the model may call with what
    they do and their arguments. The schema already enforces the shapes; the text is what lets
    the model choose. Shapes are shown with `...`, never sample values: a small model copies a
    sample such as "your reply" verbatim."""
    names = allowed_tool_names(tools, tool_choice)
    reply = f'{{"{RESPONSE_KEY}": ...}} with your reply to the user as the string'
    call = f'{{"{TOOL_CALL_KEY}": {{"name": ..., "arguments": {{...}}}}}} to call one of these tools:'
    if not names:
        return f"Answer with one JSON object and nothing else: {reply}."
    lines = [
        "Answer with one JSON object and nothing else: "
        + (f"either {reply}, or {call}" if answer_allowed(tool_choice) else call)
    ]
    lines += [_describe(function) for function in _functions(tools) if function["name"] in names]
    then = (
        f'reply to the user with "{RESPONSE_KEY}" unless you need another tool'
        if answer_allowed(tool_choice)
        else "call the next tool you need"
    )
    lines.append(
        f'A tool\'s result comes back in a user message starting with "{TOOL_RESULT_PREFIX}". After it, {then}.'
    )
    return "\n".join(lines)


def _describe(function: Mapping[str, Any]) -> str:
    parameters = function.get("parameters") or {}
    required = set(parameters.get("required") or ())
    arguments = [
        f"{name}{'' if name in required else ' (optional)'}"
        + (f": {_sentence(spec['description'])}" if spec.get("description") else "")
        for name, spec in (parameters.get("properties") or {}).items()
    ]
    description = _sentence(function.get("description") or "")
    return f"- {function['name']}: {description}." + (f" Arguments: {'; '.join(arguments)}." if arguments else "")


def _sentence(text: str) -> str:
    return text.strip().rstrip(".")


def structured_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rewrite OpenAI chat messages for a model that answers in the structured shape.

    The first system message gets the tool instructions (a system message is added when there
    is none). An assistant message's calls become one assistant turn per call, each followed by
    its result as a user turn, since a model writes one call per answer; text that came with
    calls is dropped, as the shape cannot hold both. Plain answers become `{"response": ...}`.
    With no tools offered (`response_format_for` gives None) the model answers in plain text:
    there are no instructions, and earlier answers stay plain so the history shows that form;
    earlier calls are still written as JSON, the only form a model without tool calling can read.
    """
    structured = bool(tools)
    instructions = tool_instructions(tools or [], tool_choice) if structured else ""
    results = {m.get("tool_call_id"): m for m in messages if m.get("role") == "tool"}
    used: set[str] = set()
    out: list[dict[str, Any]] = []
    if structured and (not messages or messages[0].get("role") != "system"):
        out.append({"role": "system", "content": instructions})
    for index, message in enumerate(messages):
        role = message.get("role")
        text = _text(message.get("content"))
        if role == "system" and index == 0 and structured:
            out.append({"role": "system", "content": f"{text}\n\n{instructions}" if text else instructions})
        elif role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                name = function.get("name", "")
                out.append({"role": "assistant", "content": encode_tool_call(name, function.get("arguments"))})
                result = results.get(call.get("id"))
                if result is not None:
                    used.add(call.get("id"))
                    out.append(_tool_result(name, result))
        elif role == "assistant":
            out.append({"role": "assistant", "content": encode_response(text) if structured else text})
        elif role == "tool":
            if message.get("tool_call_id") not in used:
                out.append(_tool_result(message.get("name") or "a tool", message))
        else:
            out.append({"role": role, "content": text})
    return out


def encode_response(text: str) -> str:
    return json.dumps({RESPONSE_KEY: text}, ensure_ascii=False)


def encode_tool_call(name: str, arguments: str | Mapping[str, Any] | None) -> str:
    """A call as the model would write it. Arguments that are not a JSON object (a malformed
    call kept in history) are shown as the string they were."""
    value: Any = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except (ValueError, RecursionError):
            value = arguments
    return json.dumps({TOOL_CALL_KEY: {"name": name, "arguments": {} if value is None else value}}, ensure_ascii=False)


def _tool_result(name: str, message: Mapping[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": f"{TOOL_RESULT_PREFIX} ({name}): {_text(message.get('content'))}"}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""
