"""An OpenAI-compatible chat-completions client on httpx (OpenAI, vLLM, Ollama, llama.cpp ...).

It never retries: Temporal does, with backoff, and the typed errors below tell it whether to.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from functools import partial
from email.utils import parsedate_to_datetime
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from perdure.providers.base import (
    transport_faults,
    ChatRequest,
    ChatResponse,
    ContextWindowExceededError,
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMConnectionError,
    LLMError,
    LLMInvalidResponseError,
    LLMNotFoundError,
    LLMRateLimitError,
    LLMServerError,
    new_call_id,
)
from perdure.providers.openai_stream import (
    DONE,
    StreamAssembler,
    StreamPiece,
    decode_event,
    error_from_event,
    read_usage,
)
from perdure.schemas.messages import ToolCall

_CONTEXT_OVERFLOW = re.compile(
    r"context[_ ]length|context window|context size|maximum context|too many tokens|prompt is too long"
    r"|exceeds the (?:model'?s? )?(?:context|max)",
    re.IGNORECASE,
)
ERROR_TEXT_LIMIT = 500


class OpenAICompatibleProvider:
    def __init__(self, base_url: str, api_key: str | None, *, client: httpx.AsyncClient) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client

    async def complete(self, request: ChatRequest) -> ChatResponse:
        body = request.body()
        with transport_faults(self._url, stream=False):
            response = await self._client.post(self._url, json=body, headers=self._headers)
        if response.status_code >= 400:
            raise error_for_status(response)
        return parse_completion(response.content)

    async def stream(self, request: ChatRequest, on_piece: Callable[[StreamPiece], None]) -> ChatResponse:
        """Ask with `stream: true`, hand each piece to `on_piece` as it arrives, return the whole
        answer. A stream that breaks off is a retryable connection error: the answer so far is
        incomplete, so the activity's next attempt asks again."""
        body = {**request.body(), "stream": True, "stream_options": {"include_usage": True}}
        assembler = StreamAssembler()
        with transport_faults(self._url, stream=True):
            async with self._client.stream("POST", self._url, json=body, headers=self._headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_for_status(response)
                async for line in response.aiter_lines():
                    event = decode_event(line)
                    if event == DONE:
                        assembler.done = True
                        break
                    if event is not None:
                        for piece in checked_shape(partial(assembler.feed, event, self._stream_error)):
                            on_piece(piece)
        if not assembler.finished:
            raise LLMConnectionError(f"the stream from {self._url} ended before the model finished")
        return checked_shape(assembler.finish)

    def _stream_error(self, error: Any) -> LLMError:
        return error_from_event(
            error, lambda status, text: classify_error(status, f"in-stream error from {self._url}: {text}", text)
        )


T = TypeVar("T")


def checked_shape(read: Callable[[], T]) -> T:
    """Like `parse_completion`: an event of the wrong shape is an invalid response, never an
    unknown error that Temporal would retry."""
    try:
        return read()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise LLMInvalidResponseError(f"the model's stream has an event of the wrong shape: {err!r}") from err


def error_for_status(response: httpx.Response) -> LLMError:
    """Map an HTTP error to the typed error that decides retrying: Temporal retries what may
    pass (429, 5xx), and 400/401/403/404 stop at once, since asking again cannot help."""
    status = response.status_code
    text = _error_text(response)
    return classify_error(status, f"{status} from {response.request.url}: {text}", text, retry_after_seconds(response))


def classify_error(status: int, message: str, text: str, retry_after: float | None = None) -> LLMError:
    if status == 413 or (status == 400 and _CONTEXT_OVERFLOW.search(text)):
        return ContextWindowExceededError(message, status_code=status)
    if status == 429:
        return LLMRateLimitError(message, status_code=status, retry_after=retry_after)
    if status >= 500 or status in (408, 409):
        return LLMServerError(message, status_code=status, retry_after=retry_after)
    if status in (401, 403):
        return LLMAuthenticationError(message, status_code=status)
    if status == 404:
        return LLMNotFoundError(message, status_code=status)
    return LLMBadRequestError(message, status_code=status)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`retry-after-ms`, else `Retry-After` as seconds or an HTTP date."""
    millis = _finite(response.headers.get("retry-after-ms"))
    if millis is not None:
        return max(0.0, millis / 1000)
    value = response.headers.get("retry-after")
    if not value:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone at all: HTTP dates are always GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _finite(value: str | None) -> float | None:
    """A header as a finite number; "inf"/"nan" would make an impossible retry delay."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_completion(raw: bytes) -> ChatResponse:
    """Read a chat-completions body.

    A body that is not JSON at all (empty, or cut off on the way) is a transport fault, retried
    like a 5xx. A JSON answer of the wrong shape (wrong types, a null message, a non-string
    content, bad usage numbers) is the model breaking the protocol: a non-retryable
    `LLMInvalidResponseError`, since any other exception would be retried by Temporal as an
    unknown error and end the run as `error`.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise LLMConnectionError(
            f"the model's answer is not JSON (cut off on the way?): {err!r}; body: {_clip(raw)}"
        ) from err
    try:
        response = _read_completion(data)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        # pydantic's ValidationError is a ValueError
        raise LLMInvalidResponseError(
            f"the model's response is not a chat completion: {err!r}; body: {_clip(raw)}"
        ) from err
    if not response.content and not response.tool_calls:
        raise LLMInvalidResponseError(f"the model returned neither text nor a tool call; body: {_clip(raw)}")
    return response


def _read_completion(data: Any) -> ChatResponse:
    choice = data["choices"][0]
    message = choice["message"]
    calls = [
        ToolCall(
            id=call.get("id") or new_call_id(),
            name=call["function"]["name"],
            arguments=_arguments_text(call["function"].get("arguments")),
        )
        for call in message.get("tool_calls") or []
    ]
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return ChatResponse(
        content=content or None,
        reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
        tool_calls=calls,
        finish_reason=choice.get("finish_reason"),
        usage=read_usage(data.get("usage")),
        model=data.get("model"),
    )


def _arguments_text(arguments: Any) -> str:
    """Some servers send arguments as an object rather than a JSON string: keep the string form.
    No arguments at all is an empty object, as a streamed call without argument pieces is."""
    if arguments is None or arguments == "":
        return "{}"
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return _clip(response.content)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        code = error.get("code")
        return f"{error['message']}" + (f" ({code})" if code else "")
    if isinstance(error, str):
        return error
    return _clip(response.content)


def _clip(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "…"
