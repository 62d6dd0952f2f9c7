"""Tool calls for models without native tool calling: the answer is constrained to a JSON
schema (see `schema_tools`) and turned back into ordinary tool calls here, streamed or not.

The loop never knows the difference: it gets the same `ChatResponse` and the same stream
pieces as from a model that calls tools itself, and the allowed tools and forced choice of the
step are what the schema admits. It wraps either protocol: the answer's schema goes out as
`response_format`, which each provider asks for its own way, and comes back as the answer's text.
"""

from __future__ import annotations

from collections.abc import Callable

from perdure.providers.base import (
    ChatProvider,
    ChatRequest,
    ChatResponse,
    LLMInvalidResponseError,
    StreamPiece,
    new_call_id,
)
from perdure.providers.schema_answers import StructuredAnswer, StructuredStreamDecoder, decode_structured
from perdure.providers.schema_tools import allowed_tool_names, response_format_for, structured_messages
from perdure.schemas.messages import ToolCall


class StructuredToolCalling:
    """A provider wrapper: same interface, tools by schema-constrained JSON answers."""

    def __init__(self, inner: ChatProvider) -> None:
        self._inner = inner

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if not request.tools:
            return await self._inner.complete(plain(request))
        response = await self._inner.complete(constrained(request))
        return _decoded(response, _valid(lambda: decode_structured(response.content or "", _allowed(request))))

    async def stream(self, request: ChatRequest, on_piece: Callable[[StreamPiece], None]) -> ChatResponse:
        if not request.tools:
            return await self._inner.stream(plain(request), on_piece)
        decoder = StructuredStreamDecoder(_allowed(request))
        call_id = new_call_id()

        def forward(piece: StreamPiece) -> None:
            if piece.kind == "content":
                for part in decoder.feed(piece.text):
                    on_piece(_piece(part, call_id))
            else:
                on_piece(piece)  # reasoning passes through

        response = await self._inner.stream(constrained(request), forward)
        return _decoded(response, _valid(decoder.finish), call_id)


def constrained(request: ChatRequest) -> ChatRequest:
    """The request as the model sees it: instructions and history in the JSON shape, the
    answer held to the schema, and no native tool fields (such models ignore or reject them)."""
    return request.model_copy(
        update={
            "messages": structured_messages(request.messages, request.tools or [], request.tool_choice),
            "response_format": response_format_for(request.tools, request.tool_choice),
            "tools": None,
            "tool_choice": None,
            "parallel_tool_calls": None,
        }
    )


def plain(request: ChatRequest) -> ChatRequest:
    """No tool to offer (a rule allows none): the answer is plain text, but the history still
    shows earlier calls in the JSON shape and their results as user turns, which is what such
    a model can read."""
    return request.model_copy(
        update={
            "messages": structured_messages(request.messages, [], None),
            "tool_choice": None,
            "parallel_tool_calls": None,
        }
    )


def _allowed(request: ChatRequest) -> list[str]:
    return allowed_tool_names(request.tools or [], request.tool_choice)


def _valid(decode: Callable[[], StructuredAnswer]) -> StructuredAnswer:
    """An answer outside the schema is the model's fault, not the network's: not retried."""
    try:
        return decode()
    except ValueError as err:
        raise LLMInvalidResponseError(str(err)) from err


def _piece(part: StreamPiece, call_id: str) -> StreamPiece:
    """The decoder knows no call id: the one made for this answer goes on every call piece."""
    return part.model_copy(update={"tool_call_id": call_id}) if part.kind == "tool_call" else part


def _decoded(response: ChatResponse, answer: StructuredAnswer, call_id: str | None = None) -> ChatResponse:
    if answer.tool_call is not None:
        call = ToolCall(id=call_id or new_call_id(), name=answer.tool_call.name, arguments=answer.tool_call.arguments)
        return response.model_copy(update={"content": None, "tool_calls": [call], "finish_reason": "tool_calls"})
    if not answer.content:
        raise LLMInvalidResponseError("the model's structured answer is an empty response")
    return response.model_copy(update={"content": answer.content, "tool_calls": []})
