"""Schema-constrained tool calling, for OpenAI-compatible servers whose model cannot call tools.

Small local models (SmolLM2 on llama.cpp, many models on vLLM or Ollama) ignore `tools` and
`tool_choice`, but their servers can constrain decoding to a JSON schema. The request then
asks for exactly one JSON object: `{"tool_call": {"name": ..., "arguments": {...}}}` naming one
of the allowed tools, or `{"response": "..."}` to answer. The grammar makes every answer
parseable and every call's arguments fit its tool's schema; which branch the model picks is
still the model's choice.

The history is rewritten into the same shape, so the model sees its earlier calls as it is
asked to write them, and tool results come back as user turns: a plain chat template renders
any role name, but such a model was only trained on system, user and assistant.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

RESPONSE_KEY = "response"
TOOL_CALL_KEY = "tool_call"
SCHEMA_NAME = "answer"
TOOL_RESULT_PREFIX = "Tool result"
"""Starts every rewritten tool result; the instructions name it so the model can tell results
from what the user says."""
_ANSWER_CLIP = 300


class StructuredToolCall(BaseModel):
    name: str
    arguments: str
    """The arguments object as JSON text: exactly what the model wrote, like a native call's."""


class StructuredAnswer(BaseModel):
    """One decoded answer: `content` (possibly empty) or one tool call, never both."""

    content: str | None = None
    tool_call: StructuredToolCall | None = None


class StreamPiece(BaseModel):
    """A fragment of an answer as it streams. A tool call first yields a piece with its name and
    no text, then pieces of its arguments' JSON text; they join to `StructuredToolCall.arguments`."""

    kind: Literal["content", "tool_call"]
    text: str = ""
    name: str = ""


# --------------------------------------------------------------------------- request


def response_format_for(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None) -> dict[str, Any] | None:
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
    call = _closed_object({"name": {"const": function["name"]}, "arguments": _arguments_schema(function.get("parameters"))})
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
    lines = ["Answer with one JSON object and nothing else: " + (f"either {reply}, or {call}" if answer_allowed(tool_choice) else call)]
    lines += [_describe(function) for function in _functions(tools) if function["name"] in names]
    then = (
        f'reply to the user with "{RESPONSE_KEY}" unless you need another tool'
        if answer_allowed(tool_choice)
        else "call the next tool you need"
    )
    lines.append(f'A tool\'s result comes back in a user message starting with "{TOOL_RESULT_PREFIX}". After it, {then}.')
    return "\n".join(lines)


def _describe(function: Mapping[str, Any]) -> str:
    parameters = function.get("parameters") or {}
    required = set(parameters.get("required") or ())
    arguments = [
        f"{name}{'' if name in required else ' (optional)'}" + (f": {_sentence(spec['description'])}" if spec.get("description") else "")
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
        except ValueError:
            value = arguments
    return json.dumps({TOOL_CALL_KEY: {"name": name, "arguments": {} if value is None else value}}, ensure_ascii=False)


def _tool_result(name: str, message: Mapping[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": f"{TOOL_RESULT_PREFIX} ({name}): {_text(message.get('content'))}"}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


# --------------------------------------------------------------------------- answers


def decode_structured(text: str, allowed_tools: Collection[str] | None = None) -> StructuredAnswer:
    """Decode a whole answer; ValueError when it matches neither branch (or, with
    `allowed_tools`, calls another tool)."""
    decoder = StructuredStreamDecoder(allowed_tools)
    decoder.feed(text)
    return decoder.finish()


def _answer(text: str, allowed_tools: Collection[str] | None, raw_arguments: str | None, *, cut: bool) -> StructuredAnswer:
    """`cut`: the text stopped inside its JSON object, which is what hitting max_tokens does."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        reason = "it ends before its JSON object does (cut off by max_tokens?)" if cut else f"{err.msg} at character {err.pos}"
        raise ValueError(f"the model's answer is not one JSON object: {reason}: {_clip(text)}") from err
    except ValueError as err:
        raise ValueError(f"the model's answer is ambiguous: {err}: {_clip(text)}") from err
    if isinstance(data, dict) and set(data) == {RESPONSE_KEY} and isinstance(data[RESPONSE_KEY], str):
        return StructuredAnswer(content=data[RESPONSE_KEY])
    call = data.get(TOOL_CALL_KEY) if isinstance(data, dict) and set(data) == {TOOL_CALL_KEY} else None
    if not (
        isinstance(call, dict)
        and set(call) == {"name", "arguments"}
        and isinstance(call["name"], str)
        and isinstance(call["arguments"], dict)
    ):
        raise ValueError(
            f'the model\'s answer matches neither {{"{RESPONSE_KEY}": string}} nor '
            f'{{"{TOOL_CALL_KEY}": {{"name": string, "arguments": object}}}}: {_clip(text)}'
        )
    if allowed_tools is not None and call["name"] not in allowed_tools:
        raise ValueError(f"the model called {call['name']!r}, which is not among the allowed tools {sorted(allowed_tools)}")
    arguments = raw_arguments if raw_arguments is not None else json.dumps(call["arguments"], ensure_ascii=False)
    return StructuredAnswer(tool_call=StructuredToolCall(name=call["name"], arguments=arguments))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A repeated key would make the streamed text and the decoded answer disagree."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"repeated key in {keys}")
    return dict(pairs)


def _clip(text: str) -> str:
    return text if len(text) <= _ANSWER_CLIP else text[:_ANSWER_CLIP] + "…"


# --------------------------------------------------------------------------- streaming

_WHITESPACE = " \t\r\n"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_IN_ARRAY = "[]"
_RESPONSE_PATH = (RESPONSE_KEY,)
_NAME_PATH = (TOOL_CALL_KEY, "name")
_ARGUMENTS_PATH = (TOOL_CALL_KEY, "arguments")


@dataclass(slots=True)
class _Frame:
    closer: str
    key: str = _IN_ARRAY


class StructuredStreamDecoder:
    """Decodes a structured answer as its JSON text streams in, at any chunk boundaries.

    `feed` returns the `response` string's text as it is decoded (an escape sequence split
    across chunks waits for its end), or for a tool call its name once complete and then its
    arguments' JSON text forwarded raw as it arrives, as OpenAI streams `function.arguments`.
    `finish` parses the whole text, so a malformed answer raises there even when the pieces
    looked fine; after the first syntax error `feed` stops yielding.
    """

    def __init__(self, allowed_tools: Collection[str] | None = None) -> None:
        self._allowed = allowed_tools
        self._text: list[str] = []
        self._stack: list[_Frame] = []
        self._state = "value"
        self._string: list[str] = []
        self._string_path: tuple[str, ...] | None = None
        """Where the open string sits; None for a key."""
        self._escape = ""
        self._high_surrogate = ""
        self._name: str | None = None
        self._arguments: list[str] = []
        self._held: list[str] = []
        """Argument text seen before the name (a server that reorders keys)."""
        self._capture_depth: int | None = None
        self._arguments_done = False
        self._broken = False
        self._pieces: list[StreamPiece] = []

    def feed(self, delta: str) -> list[StreamPiece]:
        self._text.append(delta)
        for char in delta:
            if self._broken:
                break
            self._char(char)
        pieces, self._pieces = self._pieces, []
        return pieces

    def finish(self) -> StructuredAnswer:
        raw = "".join(self._arguments) if self._arguments_done else None
        cut = not self._broken and bool(self._stack)
        return _answer("".join(self._text), self._allowed, raw, cut=cut)

    def _char(self, char: str) -> None:
        starts_arguments = (
            self._capture_depth is None
            and not self._arguments_done
            and self._state == "value"
            and char == "{"
            and self._path() == _ARGUMENTS_PATH
        )
        if starts_arguments:
            self._capture_depth = len(self._stack)
        if self._capture_depth is not None:
            self._capture(char)
        self._step(char)
        if self._capture_depth is not None and len(self._stack) == self._capture_depth:
            self._capture_depth = None
            self._arguments_done = True

    def _step(self, char: str) -> None:
        state = self._state
        if state == "string":
            self._string_char(char)
        elif state == "literal" and char not in _WHITESPACE + ",]}":
            return  # checked by finish(): the stream only needs to know where it ends
        elif state == "literal":
            self._state = self._after_value()
            self._step(char)
        elif char in _WHITESPACE:
            return
        elif state == "value":
            self._value_start(char)
        elif state == "key":
            self._key_start(char)
        elif state == "colon" and char == ":":
            self._state = "value"
        elif state == "after" and char == ",":
            self._state = "key" if self._stack[-1].closer == "}" else "value"
        elif state == "after" and char == self._stack[-1].closer:
            self._close_container()
        else:
            self._broken = True

    def _value_start(self, char: str) -> None:
        if char == "{":
            self._stack.append(_Frame("}"))
            self._state = "key"
        elif char == "[":
            self._stack.append(_Frame("]"))
        elif char == '"':
            self._open_string(self._path())
        elif char in "-0123456789tfn":
            self._state = "literal"
        elif char == "]" and self._stack and self._stack[-1].closer == "]":  # an empty array
            self._close_container()
        else:
            self._broken = True

    def _key_start(self, char: str) -> None:
        if char == '"':
            self._open_string(None)
        elif char == "}":  # an empty object
            self._close_container()
        else:
            self._broken = True

    def _close_container(self) -> None:
        self._stack.pop()
        self._state = self._after_value()

    def _after_value(self) -> str:
        return "after" if self._stack else "end"

    def _path(self) -> tuple[str, ...]:
        return tuple(frame.key for frame in self._stack)

    def _open_string(self, path: tuple[str, ...] | None) -> None:
        self._state = "string"
        self._string_path = path
        self._string = []

    def _string_char(self, char: str) -> None:
        if self._escape:
            self._escape += char
            if self._escape[1] == "u":
                if len(self._escape) == 6:
                    self._unicode_escape()
                return
            decoded = _ESCAPES.get(char)
            self._escape = ""
            if decoded is None:
                self._broken = True
                return
            self._flush_surrogate()
            self._append(decoded)
        elif char == "\\":
            self._escape = char
        elif char == '"':
            self._flush_surrogate()
            self._close_string()
        else:
            self._flush_surrogate()
            self._append(char)

    def _unicode_escape(self) -> None:
        """A high surrogate waits: its low half may be the next escape. Without one it goes out
        alone, as `json.loads` keeps it."""
        digits, self._escape = self._escape[2:], ""
        if any(digit not in _HEX_DIGITS for digit in digits):
            self._broken = True
            return
        code = int(digits, 16)
        if self._high_surrogate and 0xDC00 <= code <= 0xDFFF:
            high, self._high_surrogate = ord(self._high_surrogate), ""
            self._append(chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)))
            return
        self._flush_surrogate()
        if 0xD800 <= code <= 0xDBFF:
            self._high_surrogate = chr(code)
        else:
            self._append(chr(code))

    def _flush_surrogate(self) -> None:
        if self._high_surrogate:
            lone, self._high_surrogate = self._high_surrogate, ""
            self._append(lone)

    def _append(self, text: str) -> None:
        self._string.append(text)
        if self._string_path == _RESPONSE_PATH:
            self._emit("content", text)

    def _close_string(self) -> None:
        value = "".join(self._string)
        if self._string_path is None:
            self._stack[-1].key = value
            self._state = "colon"
            return
        if self._string_path == _NAME_PATH and self._name is None:
            self._name = value
            self._pieces.append(StreamPiece(kind="tool_call", name=value))
            if self._held:
                self._emit("tool_call", "".join(self._held))
                self._held = []
        self._state = self._after_value()

    def _capture(self, char: str) -> None:
        self._arguments.append(char)
        if self._name is None:
            self._held.append(char)
        else:
            self._emit("tool_call", char)

    def _emit(self, kind: Literal["content", "tool_call"], text: str) -> None:
        """Extend the last piece of the same kind; a call's name piece stays on its own."""
        last = self._pieces[-1] if self._pieces else None
        if last is not None and last.kind == kind and last.text:
            last.text += text
        else:
            self._pieces.append(StreamPiece(kind=kind, text=text, name=self._name or ""))
