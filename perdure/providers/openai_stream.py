"""Reading an OpenAI-compatible chat-completions stream (server-sent events) into one answer.

The assembler is pure: it takes each decoded `data:` event and returns the text pieces worth
forwarding to a listener, while it builds the same `ChatResponse` a non-streamed request
returns. Tool calls arrive in fragments keyed by `index`: the first carries the id and name,
the rest pieces of the arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from perdure.providers.base import ChatResponse, LLMError, LLMInvalidResponseError, StreamPiece, new_call_id
from perdure.schemas.messages import ToolCall
from perdure.schemas.run import TokenUsage

DONE = "[DONE]"


class _CallParts(BaseModel):
    id: str = ""
    name: str = ""
    arguments: str = ""


class StreamAssembler:
    """Builds the answer from stream events; `finish()` says whether the stream was complete."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, _CallParts] = {}
        self._finish_reason: str | None = None
        self._usage: TokenUsage | None = None
        self._model: str | None = None
        self.done = False

    def feed(self, event: Any, error_for: Callable[[Any], LLMError]) -> list[StreamPiece]:
        """Take one decoded event. `error_for` maps an in-stream `{"error": ...}` object to the
        typed error that decides retrying (servers report failures this way once streaming)."""
        if not isinstance(event, dict):
            raise LLMInvalidResponseError(f"a stream event is not a JSON object: {_clip(event)}")
        if "error" in event:
            raise error_for(event["error"])
        self._model = event.get("model") or self._model
        self._usage = read_usage(event.get("usage")) or self._usage
        pieces: list[StreamPiece] = []
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            pieces += self._delta(choice.get("delta") or {})
            self._finish_reason = choice.get("finish_reason") or self._finish_reason
        return pieces

    def _delta(self, delta: dict[str, Any]) -> list[StreamPiece]:
        pieces: list[StreamPiece] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._reasoning.append(reasoning)
            pieces.append(StreamPiece(kind="reasoning", text=reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._content.append(content)
            pieces.append(StreamPiece(kind="content", text=content))
        for fragment in delta.get("tool_calls") or []:
            pieces.append(self._call_fragment(fragment))
        return pieces

    def _call_fragment(self, fragment: dict[str, Any]) -> StreamPiece:
        index = fragment.get("index", len(self._calls))
        if not isinstance(index, int):
            raise LLMInvalidResponseError(f"a tool call fragment has no integer index: {_clip(fragment)}")
        parts = self._calls.get(index)
        if parts is None:  # the first fragment names the call; its id is kept for every piece
            parts = self._calls[index] = _CallParts(id=fragment.get("id") or new_call_id())
        function = fragment.get("function") or {}
        parts.name = function.get("name") or parts.name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send the object whole
            arguments = json.dumps(arguments)
        text = arguments if isinstance(arguments, str) else ""
        parts.arguments += text
        return StreamPiece(kind="tool_call", text=text, index=index, tool_call_id=parts.id, name=parts.name)

    def finish(self) -> ChatResponse:
        """The whole answer. A stream cut before its finish reason cannot be trusted: the caller
        treats that as a dropped connection (retryable), not as an answer."""
        calls = [ToolCall(id=p.id, name=p.name, arguments=p.arguments or "{}") for _, p in sorted(self._calls.items())]
        if any(not call.name for call in calls):
            raise LLMInvalidResponseError("the stream sent a tool call without a name")
        response = ChatResponse(
            content="".join(self._content) or None,
            reasoning="".join(self._reasoning) or None,
            tool_calls=calls,
            finish_reason=self._finish_reason,
            usage=self._usage,
            model=self._model,
        )
        if not response.content and not response.tool_calls:
            raise LLMInvalidResponseError("the model streamed neither text nor a tool call")
        return response

    @property
    def finished(self) -> bool:
        return self.done or self._finish_reason is not None


def decode_event(line: str) -> Any | None:
    """A `data:` line's JSON, `DONE` for the end marker, None for comments and other fields."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == DONE:
        return DONE
    try:
        return json.loads(data)
    except (json.JSONDecodeError, RecursionError) as err:
        raise LLMInvalidResponseError(f"a stream event is not JSON: {_clip(data)}") from err


def error_from_event(error: Any, classify: Callable[[int, str], LLMError]) -> LLMError:
    """An in-stream error object, typed by its `type`/`code` like an HTTP error of that kind."""
    if not isinstance(error, dict):
        return classify(500, str(error))
    code = error.get("code")
    text = str(error.get("message") or error) + (f" ({code})" if code else "")
    kind = f"{error.get('type') or ''} {code or ''}".lower()
    if "rate" in kind:
        status = 429
    elif "invalid_request" in kind or "context_length" in kind:
        status = 400
    elif "auth" in kind:
        status = 401
    else:
        status = 500
    return classify(status, text)


def read_usage(usage: Any) -> TokenUsage | None:
    """Usage as OpenAI reports it, with the cached and reasoning token details when present."""
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return TokenUsage(
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        cached_input_tokens=prompt_details.get("cached_tokens"),
        reasoning_tokens=completion_details.get("reasoning_tokens"),
    )


def _clip(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
