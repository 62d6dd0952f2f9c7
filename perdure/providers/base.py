"""Provider-neutral request and response, and the typed errors the LLM activity maps to retries."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, Field

from perdure.schemas.messages import ReasoningPart, ToolCall
from perdure.schemas.run import TokenUsage


class ChatRequest(BaseModel):
    """One request. `messages` are in the provider's wire format (`to_openai_messages` or
    `to_anthropic_messages`); `tools` and `tool_choice` in OpenAI's, which the Anthropic
    provider translates."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    response_format: dict[str, Any] | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Server-specific options sent as they are (e.g. llama.cpp's `repeat_penalty`)."""
    reasoning_budget: int | None = None
    """Tokens the model may think for before it answers (Anthropic's extended thinking); None: off.
    Not a chat-completions field, so the OpenAI-compatible body leaves it out."""

    def body(self) -> dict[str, Any]:
        return {**self.model_dump(exclude_none=True, exclude={"extra_body", "reasoning_budget"}), **self.extra_body}


def new_call_id() -> str:
    """For a call the server sent without an id (some local servers do): made where the answer
    is read, so streamed chunks and the stored call agree."""
    return f"call_{uuid.uuid4().hex[:24]}"


class ChatResponse(BaseModel):
    content: str | None = None
    reasoning: str | None = None
    reasoning_parts: list[ReasoningPart] = Field(default_factory=list)
    """The thinking blocks with what must go back to the provider (signatures, redacted data),
    from providers that send them (Anthropic); `reasoning` is their readable text."""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    model: str | None = None


class StreamPiece(BaseModel):
    """A fragment of the answer as it arrives: text, reasoning, or a tool call's arguments."""

    kind: Literal["content", "reasoning", "hidden_reasoning", "tool_call"]
    text: str = ""
    """For `hidden_reasoning`, the provider's opaque data, whole."""
    index: int = 0
    """The tool call's position in the answer (tool_call pieces), or the block's (hidden_reasoning)."""
    tool_call_id: str = ""
    name: str = ""


class ChatProvider(Protocol):
    """What the LLM activity asks of a provider: the plain client, or a wrapper around it."""

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def stream(self, request: ChatRequest, on_piece: Callable[[StreamPiece], None]) -> ChatResponse: ...


class LLMError(Exception):
    """Base of provider errors. `retryable` decides whether Temporal tries the activity again."""

    retryable = False
    error_type = "LLMError"

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after


class LLMRateLimitError(LLMError):
    retryable = True
    error_type = "LLMRateLimitError"


class LLMServerError(LLMError):
    retryable = True
    error_type = "LLMServerError"


class LLMConnectionError(LLMError):
    retryable = True
    error_type = "LLMConnectionError"


class LLMTimeoutError(LLMError):
    retryable = True
    error_type = "LLMTimeoutError"


class LLMBadRequestError(LLMError):
    error_type = "LLMBadRequestError"


class LLMAuthenticationError(LLMError):
    error_type = "LLMAuthenticationError"


class LLMNotFoundError(LLMError):
    error_type = "LLMNotFoundError"


class LLMInvalidResponseError(LLMError):
    """The provider answered 2xx with a body we cannot use (malformed JSON, no choices)."""

    error_type = "LLMInvalidResponseError"


class ContextWindowExceededError(LLMError):
    """The request is larger than the model's window: compaction, not a retry, is the cure."""

    error_type = "ContextWindowExceededError"


@contextmanager
def transport_faults(url: str, *, stream: bool) -> Iterator[None]:
    """httpx's transport failures as the provider errors Temporal retries (a request that timed
    out, a server out of reach, a stream that broke off), mapped the same way for every provider."""
    try:
        yield
    except httpx.TimeoutException as err:
        raise LLMTimeoutError(f"{'stream from' if stream else 'request to'} {url} timed out: {err!r}") from err
    except httpx.TransportError as err:
        failed = f"the stream from {url} broke off" if stream else f"cannot reach {url}"
        raise LLMConnectionError(f"{failed}: {err!r}") from err
