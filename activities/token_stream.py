"""Forwarding the model's tokens from the LLM activity to the run's stream.

Runs started with the stream in the store (`LLMStepInput.stream_in_store`) get each piece
written to the `stream_chunks` table as soon as the write before it is done (see
`activities.store_tokens`). Runs started before keep their stream in the Workflow Stream:
every publish there is a signal, and each signal adds events to the run's history, so pieces
are gathered for FLUSH_EVERY_S and merged into one Letta message chunk per kind before they go:
the history cost follows the time spent streaming, not the number of tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from types import TracebackType
from typing import Any

from temporalio import activity
from temporalio.contrib.workflow_streams import TopicHandle, WorkflowStreamClient
from temporalio.service import RPCError

from perdure.providers.openai_stream import StreamPiece
from perdure.schemas.letta import (
    ApprovalRequestMessage,
    AssistantMessage,
    HiddenReasoningMessage,
    LettaToolCall,
    ReasoningMessage,
    ToolCallMessage,
)
from perdure.schemas.run import LLMStepInput
from perdure.schemas.stream import STREAM_TOPIC, AttemptStarted, StreamEvent

FLUSH_EVERY_S = 0.5
FINAL_FLUSH_TIMEOUT_S = 5.0
"""A failing attempt still tries to deliver its partial output, but never hangs on it."""
FINAL_FLUSH_TRIES = 3
FINAL_FLUSH_BACKOFF_S = 0.5


class TokenPublisher:
    """For runs whose stream is in history: collects pieces for one LLM request and publishes
    them as Letta chunks under the ids the step will store them with: the answer's, or for a call
    that will wait for a person or the client, the approval request's (as Letta streams
    `approval_request_message` chunks)."""

    def __init__(self, step: LLMStepInput) -> None:
        self._step = step
        self._pending: list[StreamPiece] = []
        self._client = WorkflowStreamClient.from_within_activity(batch_interval=timedelta(hours=1))
        self._topic: TopicHandle[Any] = self._client.topic(STREAM_TOPIC)
        self._loop: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TokenPublisher:
        await self._client.__aenter__()
        started = attempt_started(self._step)
        if started is not None:  # queued first, so it goes out before anything this attempt streams
            self._send(started)
        self._loop = asyncio.create_task(self._flush_periodically())
        return self

    def add(self, piece: StreamPiece) -> None:
        if streams(self._step, piece):
            self._pending.append(piece)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop
        self._publish_pending()
        if error is None:
            await self._final_flush()
            return
        # The attempt failed: its partial output is still worth showing, but its own error wins.
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self._client.__aexit__(None, None, None), FINAL_FLUSH_TIMEOUT_S)

    async def _final_flush(self) -> None:
        """A finished answer is worth a few tries to deliver (a repeated batch is dropped by the
        stream) before it fails the attempt and the model is asked again."""
        for attempt in range(FINAL_FLUSH_TRIES):
            try:
                await self._client.__aexit__(None, None, None)
                return
            except RPCError:
                if attempt == FINAL_FLUSH_TRIES - 1:
                    raise
                await asyncio.sleep(FINAL_FLUSH_BACKOFF_S)

    async def _flush_periodically(self) -> None:
        """A batch that fails to go out stays queued for the next flush (the stream dedups a
        batch sent twice); only the final flush may fail the attempt."""
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            if self._pending:
                self._publish_pending()
                try:
                    await self._client.flush()
                except RPCError as err:
                    activity.logger.warning("publishing tokens failed, retrying with the next batch: %s", err)

    def _publish_pending(self) -> None:
        pending, self._pending = self._pending, []
        for chunk in merge_pieces(pending):
            self._send(chunk_event(self._step, chunk))

    def _send(self, event: StreamEvent) -> None:
        self._topic.publish(event.model_dump(mode="json", exclude_none=True))


def attempt_started(step: LLMStepInput) -> AttemptStarted | None:
    """What a retried attempt (or a later request of the step) announces before it streams, so
    readers drop what the earlier one streamed; None for the step's first try."""
    attempt = activity.info().attempt
    if attempt == 1 and step.request_number == 1:
        return None
    return AttemptStarted(run_id=step.run_id, step_id=step.step_id, attempt=attempt, request=step.request_number)


def streams(step: LLMStepInput, piece: StreamPiece) -> bool:
    """Whether `piece` goes out: the loop keeps only the first call when parallel calls are off."""
    return not (piece.kind == "tool_call" and piece.index > 0 and not step.parallel_tool_calls)


def chunk_event(step: LLMStepInput, piece: StreamPiece) -> StreamEvent:
    """A piece as the Letta chunk the step will store it under."""
    if piece.kind == "content":
        return AssistantMessage(id=step.message_id, run_id=step.run_id, step_id=step.step_id, content=piece.text)
    if piece.kind == "reasoning":
        return ReasoningMessage(id=step.message_id, run_id=step.run_id, step_id=step.step_id, reasoning=piece.text)
    if piece.kind == "hidden_reasoning":
        return HiddenReasoningMessage(
            id=step.message_id,
            run_id=step.run_id,
            step_id=step.step_id,
            state="redacted",
            hidden_reasoning=piece.text,
        )
    call = LettaToolCall(name=piece.name, arguments=piece.text, tool_call_id=piece.tool_call_id)
    if piece.name in step.held_tools:
        return ApprovalRequestMessage(
            id=step.approval_message_id, run_id=step.run_id, step_id=step.step_id, tool_call=call, tool_calls=[call]
        )
    return ToolCallMessage(
        id=step.message_id, run_id=step.run_id, step_id=step.step_id, tool_call=call, tool_calls=[call]
    )


def merge_pieces(pieces: list[StreamPiece]) -> list[StreamPiece]:
    """Join neighbouring pieces of the same text (or the same tool call) into one."""
    merged: list[StreamPiece] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if last is not None and last.kind == piece.kind and last.index == piece.index:
            merged[-1] = last.model_copy(
                update={
                    "text": last.text + piece.text,
                    "name": piece.name or last.name,
                    "tool_call_id": piece.tool_call_id or last.tool_call_id,
                }
            )
        else:
            merged.append(piece)
    return merged
