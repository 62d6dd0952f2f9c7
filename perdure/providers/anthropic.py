"""Anthropic's Messages API (`/v1/messages`) on httpx, streamed or not.

httpx rather than the `anthropic` SDK: the worker keeps one HTTP stack and one connection pool
for every provider, and Temporal owns retries (with backoff, `retry-after` honoured and each
attempt visible in the run's history), so an SDK's own retry loop would only hide attempts.
The typed errors below tell the activity whether to try again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx

from perdure.providers.anthropic_format import (
    answer_tool,
    answer_tool_name,
    anthropic_tool_choice,
    anthropic_tools,
    forces_tool,
    system_and_turns,
    unthought_call_pending,
)
from perdure.providers.anthropic_stream import ERROR_STATUS, AnthropicStreamAssembler, read_message
from perdure.providers.base import (
    transport_faults,
    ChatRequest,
    ChatResponse,
    LLMBadRequestError,
    LLMConnectionError,
    LLMError,
    LLMInvalidResponseError,
    StreamPiece,
)
from perdure.providers.openai import ERROR_TEXT_LIMIT, checked_shape, classify_error, retry_after_seconds
from perdure.providers.openai_stream import decode_event

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4_096
"""The API requires `max_tokens`; an agent without one gets what every Claude model can write."""


class AnthropicProvider:
    def __init__(self, base_url: str, api_key: str | None, *, client: httpx.AsyncClient) -> None:
        self._url = messages_url(base_url)
        self._headers = {"anthropic-version": API_VERSION}
        if api_key:
            self._headers["x-api-key"] = api_key
        self._client = client

    async def complete(self, request: ChatRequest) -> ChatResponse:
        body = request_body(request)
        with transport_faults(self._url, stream=False):
            response = await self._client.post(self._url, json=body, headers=self._headers)
        if response.status_code >= 400:
            raise error_for_status(response)
        try:
            data = json.loads(response.content)
        except (ValueError, RecursionError) as err:
            # A 2xx whose body is not JSON was cut or mangled on the way: ask again.
            raise LLMConnectionError(f"the answer from {self._url} is not JSON: {_clip(response.content)}") from err
        try:
            return read_message(data, answer_tool_name(request.response_format))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
            # never an unknown error: Temporal would retry it and the run would end as `error`
            body = _clip(response.content)
            raise LLMInvalidResponseError(f"the model's answer is not a message: {err!r}; body: {body}") from err

    async def stream(self, request: ChatRequest, on_piece: Callable[[StreamPiece], None]) -> ChatResponse:
        """Ask with `stream: true` and hand each piece to `on_piece`. A stream that ends before
        `message_stop` is a retryable connection error: the answer so far is incomplete."""
        body = {**request_body(request), "stream": True}
        assembler = AnthropicStreamAssembler(answer_tool_name(request.response_format))
        with transport_faults(self._url, stream=True):
            async with self._client.stream("POST", self._url, json=body, headers=self._headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_for_status(response)
                async for line in response.aiter_lines():
                    event = decode_event(line)
                    if event is not None:
                        for piece in checked_shape(partial(assembler.feed, event, self._stream_error)):
                            on_piece(piece)
                    if assembler.finished:
                        break
        if not assembler.finished:
            raise LLMConnectionError(f"the stream from {self._url} ended before message_stop")
        return checked_shape(assembler.finish)

    def _stream_error(self, error: Any) -> LLMError:
        kind, text = _error_parts(error)
        return classify_error(ERROR_STATUS.get(kind, 500), f"in-stream error from {self._url}: {text}", text)


def messages_url(base_url: str) -> str:
    """Anthropic's base URL is the host (the SDK's convention); Letta's `model_endpoint` ends
    in `/v1`. Both work."""
    base = base_url.rstrip("/")
    return base + ("/messages" if base.endswith("/v1") else "/v1/messages")


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The Messages API body. Extended thinking cannot be combined with a forced tool (the API
    refuses it), so a step the rules force is asked without thinking, and so is the step after
    it, whose tool results answer a turn without thinking; with thinking, the API wants no
    temperature and more `max_tokens` than the budget. A `response_format` (a structured answer)
    is asked for through a forced tool of its own (`answer_tool`), so it excludes other tools."""
    system, turns = system_and_turns(request.messages)
    answer = answer_tool(request.response_format)
    if answer is not None and request.tools:
        raise LLMBadRequestError("a structured answer (response_format) cannot be asked for together with tools")
    tools = [answer] if answer is not None else anthropic_tools(request.tools)
    if answer is not None:
        choice: dict[str, Any] | None = {"type": "tool", "name": answer["name"], "disable_parallel_tool_use": True}
    else:
        choice = anthropic_tool_choice(request.tool_choice, request.parallel_tool_calls) if tools else None
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        body["system"] = system
    if tools:
        body["tools"] = tools
        body["tool_choice"] = choice
    if request.temperature is not None:
        body["temperature"] = request.temperature
    budget = request.reasoning_budget
    if budget and not forces_tool(choice) and not unthought_call_pending(turns):
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        body["max_tokens"] = max(body["max_tokens"], budget + DEFAULT_MAX_TOKENS)
        body.pop("temperature", None)
    return {**body, **request.extra_body}


def error_for_status(response: httpx.Response) -> LLMError:
    """529 overloaded and 5xx are retried, 429 after its `retry-after`, a 400 saying the prompt
    is too long goes to compaction, 401/403 end the run (`classify_error`)."""
    status = response.status_code
    try:
        data = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    kind, text = _error_parts(error) if isinstance(error, dict) else ("", _clip(response.content))
    if status == 400 and kind == "request_too_large":
        status = 413
    return classify_error(status, f"{status} from {response.request.url}: {text}", text, retry_after_seconds(response))


def _error_parts(error: Any) -> tuple[str, str]:
    """`{"type": "overloaded_error", "message": "Overloaded"}` as its type and a readable text."""
    if not isinstance(error, dict):
        return "", _clip(str(error).encode())
    kind = str(error.get("type") or "")
    message = str(error.get("message") or error)
    return kind, f"{message} ({kind})" if kind else message


def _clip(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "…"
