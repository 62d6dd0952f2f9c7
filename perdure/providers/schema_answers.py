"""Reading a schema-constrained answer (see `schema_tools`): whole, or as it streams.

The stream decoder and the whole-text decoder are one code path, so the pieces a client saw
always add up to the answer that is stored.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from perdure.providers.base import StreamPiece
from perdure.providers.schema_tools import RESPONSE_KEY, TOOL_CALL_KEY

_ANSWER_CLIP = 300


class StructuredToolCall(BaseModel):
    name: str
    arguments: str
    """The arguments object as JSON text: exactly what the model wrote, like a native call's."""


class StructuredAnswer(BaseModel):
    """One decoded answer: `content` (possibly empty) or one tool call, never both."""

    content: str | None = None
    tool_call: StructuredToolCall | None = None


# --------------------------------------------------------------------------- answers


def decode_structured(text: str, allowed_tools: Collection[str] | None = None) -> StructuredAnswer:
    """Decode a whole answer; ValueError when it matches neither branch (or, with
    `allowed_tools`, calls another tool)."""
    decoder = StructuredStreamDecoder(allowed_tools)
    decoder.feed(text)
    return decoder.finish()


def _answer(
    text: str, allowed_tools: Collection[str] | None, raw_arguments: str | None, *, cut: bool
) -> StructuredAnswer:
    """`cut`: the text stopped inside its JSON object, which is what hitting max_tokens does."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError as err:
        raise ValueError(f"the model's answer is nested too deeply to read: {_clip(text)}") from err
    except json.JSONDecodeError as err:
        reason = (
            "it ends before its JSON object does (cut off by max_tokens?)"
            if cut
            else f"{err.msg} at character {err.pos}"
        )
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
        raise ValueError(
            f"the model called {call['name']!r}, which is not among the allowed tools {sorted(allowed_tools)}"
        )
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
