"""Perdure's stored messages and OpenAI-shaped tool fields in the Messages API's wire format.

Anthropic differs from chat completions in ways the loop must not see: the system prompt is a
parameter, not a message; a tool call is a `tool_use` block of the assistant turn and its
result a `tool_result` block of the next user turn; roles must alternate, so consecutive turns
of one role merge; and the model's signed thinking goes back with the answer it preceded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from perdure.providers.base import LLMBadRequestError
from perdure.schemas.messages import HiddenReasoningContent, Message, ReasoningContent, TextContent
from perdure.tools.returns import REQUEST_CLIP_SLACK, clip_tool_return

EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
CONTINUATION = "(the conversation continues)"
"""Opens a conversation whose first kept turn is the model's: the API wants a user turn first."""
Block = dict[str, Any]
Turn = dict[str, Any]
ANSWER_TOOL = "answer"
"""The structured answer's tool when its `response_format` names no schema."""


def to_anthropic_messages(messages: Iterable[Message], *, tool_return_chars: int | None = None) -> list[Turn]:
    """Convert in order, system messages included as `{"role": "system"}` turns (the provider
    lifts them into its `system` parameter). Held calls of an `approval` message join the model
    turn before them, as every call of one response belongs to one turn."""
    turns: list[Turn] = []
    for message in messages:
        if message.role == "approval" and message.tool_calls and turns and turns[-1]["role"] == "assistant":
            turns[-1]["content"].extend(_tool_uses(message))
            continue
        turn = _convert(message, tool_return_chars)
        if turn is not None:
            turns.append(turn)
    return turns


def _convert(message: Message, tool_return_chars: int | None) -> Turn | None:
    if message.role == "system":
        return {"role": "system", "content": _text_blocks(message)}
    if message.role in ("user", "summary"):
        return {"role": "user", "content": _text_blocks(message)}
    if message.role == "assistant" or (message.role == "approval" and message.tool_calls):
        return {
            "role": "assistant",
            "content": _reasoning_blocks(message) + _text_blocks(message) + _tool_uses(message),
        }
    if message.role == "tool":
        results = [
            _tool_result(r.tool_call_id, r.status, r.func_response, tool_return_chars) for r in message.tool_returns
        ]
        return {"role": "user", "content": results}
    return None


def _text_blocks(message: Message) -> list[Block]:
    """Empty text blocks are refused by the API, so none are made."""
    return [
        {"type": "text", "text": part.text} for part in message.content if isinstance(part, TextContent) and part.text
    ]


def _reasoning_blocks(message: Message) -> list[Block]:
    """Only signed thinking can go back (the API checks the signature); unsigned reasoning from
    another provider stays in the store and out of the request."""
    blocks: list[Block] = []
    for part in message.content:
        if isinstance(part, ReasoningContent) and part.signature:
            blocks.append({"type": "thinking", "thinking": part.reasoning, "signature": part.signature})
        elif isinstance(part, HiddenReasoningContent):
            blocks.append({"type": "redacted_thinking", "data": part.data})
    return blocks


def _tool_uses(message: Message) -> list[Block]:
    return [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(c.arguments)} for c in message.tool_calls
    ]


def _tool_result(call_id: str, status: str, text: str | None, limit: int | None) -> Block:
    block: Block = {"type": "tool_result", "tool_use_id": call_id}
    if text:
        block["content"] = text if limit is None else clip_tool_return(text, limit, slack=REQUEST_CLIP_SLACK)
    if status == "error":
        block["is_error"] = True
    return block


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object `tool_use.input` must be. A model's malformed arguments
    (kept raw in the store) go back wrapped, so the model still sees what it wrote."""
    try:
        value = json.loads(arguments or "{}")
    except (json.JSONDecodeError, RecursionError):
        return {"raw_arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def system_and_turns(messages: list[dict[str, Any]]) -> tuple[list[Block], list[Turn]]:
    """Split the system prompt from the conversation and make the conversation valid: string
    contents become text blocks (so plain chat messages, such as the summarizer's, work too),
    turns of one role merge, and it opens with a user turn. The last system block and the last
    block of the conversation carry `cache_control`, so the tools, the system prompt with its
    memory blocks and the conversation so far are read from Anthropic's cache next step."""
    system: list[Block] = []
    turns: list[Turn] = []
    for message in messages:
        blocks = _as_blocks(message.get("content"))
        if message.get("role") == "system":
            system += blocks
        elif blocks and turns and turns[-1]["role"] == message.get("role"):
            turns[-1]["content"] = turns[-1]["content"] + blocks
        elif blocks:
            turns.append({"role": message.get("role"), "content": blocks})
    if turns and turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": CONTINUATION}]})
    return _cached_last(system), _cache_last_turn(turns)


def _as_blocks(content: Any) -> list[Block]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [dict(block) for block in content or []]


def _cached_last(blocks: list[Block]) -> list[Block]:
    if not blocks:
        return blocks
    return [*blocks[:-1], {**blocks[-1], "cache_control": EPHEMERAL}]


def _cache_last_turn(turns: list[Turn]) -> list[Turn]:
    """Thinking blocks cannot carry `cache_control`; the last turn is a user turn (text or tool
    results) in every request the loop makes, so this only skips odd cases."""
    if not turns or turns[-1]["content"][-1].get("type") not in ("text", "tool_result"):
        return turns
    return [*turns[:-1], {**turns[-1], "content": _cached_last(turns[-1]["content"])}]


def anthropic_tools(tools: list[dict[str, Any]] | None) -> list[Block] | None:
    """OpenAI `{"type": "function", "function": {...}}` entries as Anthropic tool definitions."""
    if not tools:
        return None
    return [
        {
            "name": tool["function"]["name"],
            "description": tool["function"].get("description") or "",
            "input_schema": tool["function"].get("parameters") or {"type": "object", "properties": {}},
        }
        for tool in tools
    ]


def anthropic_tool_choice(choice: str | dict[str, Any] | None, parallel: bool | None) -> Block | None:
    """OpenAI's `tool_choice` ("auto", "required", "none", or one function by name) as
    Anthropic's (`auto`, `any`, `none`, `tool`); with parallel calls off, one call at most."""
    if isinstance(choice, dict):
        anthropic: Block = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    elif choice in (None, "auto"):
        anthropic = {"type": "auto"}
    elif choice == "required":
        anthropic = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    else:
        raise ValueError(f"unknown tool_choice {choice!r}: expected 'auto', 'required', 'none' or a named function")
    if parallel is False:
        anthropic["disable_parallel_tool_use"] = True
    return anthropic


def answer_tool_name(response_format: dict[str, Any] | None) -> str | None:
    """The tool a structured answer is given through (named after its schema), or None."""
    if response_format is None:
        return None
    return str((response_format.get("json_schema") or {}).get("name") or ANSWER_TOOL)


def answer_tool(response_format: dict[str, Any] | None) -> Block | None:
    """A `json_schema` response format as Anthropic does structured output: one tool, which the
    request forces, whose input is the answer. The API wants an input schema to be one object
    and refuses `anyOf` at its top, so alternative objects merge into one with the properties of
    each, required where all require them; the reader of the answer checks it is one of them."""
    name = answer_tool_name(response_format)
    if response_format is None or name is None:
        return None
    if response_format.get("type") != "json_schema":
        raise LLMBadRequestError(
            f"response_format {response_format.get('type')!r} has no Messages API form: only json_schema has"
        )
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    description = "Give your whole answer as this tool's input."
    return {"name": name, "description": description, "input_schema": _one_object(schema)}


def _one_object(schema: dict[str, Any]) -> dict[str, Any]:
    branches = schema.get("anyOf")
    if branches is None and schema.get("type") == "object":
        return schema
    if not branches or any(not isinstance(b, dict) or b.get("type") != "object" for b in branches):
        raise LLMBadRequestError(f"a structured answer must be an object or a choice of objects: {schema}")
    alternatives: dict[str, list[Any]] = {}
    for branch in branches:
        for key, value in (branch.get("properties") or {}).items():
            alternatives.setdefault(key, []).append(value)
    return {
        "type": "object",
        "properties": {key: v[0] if len(v) == 1 else {"anyOf": v} for key, v in alternatives.items()},
        "required": [key for key in alternatives if all(key in (b.get("required") or ()) for b in branches)],
        "additionalProperties": False,
    }


def forces_tool(choice: Block | None) -> bool:
    return choice is not None and choice["type"] in ("any", "tool")


def unthought_call_pending(turns: list[Turn]) -> bool:
    """Whether the conversation ends answering a model turn that called tools without thinking
    first: with thinking on, the API wants that turn to open with its thinking block."""
    model_turns = [turn for turn in turns if turn["role"] == "assistant"]
    if not model_turns or turns[-1]["role"] != "user":
        return False
    blocks = model_turns[-1]["content"]
    calls = any(block.get("type") == "tool_use" for block in blocks)
    return calls and blocks[0].get("type") not in ("thinking", "redacted_thinking")
