"""The model's tokens, written to the run's stream in the database as they come.

One writer task per LLM request: whatever pieces arrived while the previous write was in
flight are merged into one chunk per kind and written next. A lone token goes out alone, within
a write's time of arriving; under load the writes grow instead of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

from temporalio import activity

from activities.run_stream import run_key
from activities.token_stream import TokenPublisher, attempt_started, chunk_event, merge_pieces, streams
from perdure.providers.openai_stream import StreamPiece
from perdure.schemas.run import LLMStepInput
from perdure.store import stream_chunks
from perdure.store.db import Database

FINAL_WRITE_TRIES = 3
"""Tries of a write after the request is done, before the attempt fails (and the model is asked again)."""
RETRY_WRITE_AFTER_S = 0.2
FAILED_ATTEMPT_WRITE_TIMEOUT_S = 5.0
"""A failing attempt still tries to write its partial output, but never hangs on it."""


class StoreTokenPublisher:
    """Collects the pieces of one LLM request and writes them as Letta chunks under the ids the
    step will store them with (see `chunk_event`)."""

    def __init__(self, step: LLMStepInput, db: Database) -> None:
        self._step = step
        self._db = db
        self._key = run_key()
        self._pending: list[StreamPiece] = []
        self._arrived = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> StoreTokenPublisher:
        started = attempt_started(self._step)
        if started is not None:  # written first, so it precedes anything this attempt streams
            await self._write([started.model_dump(mode="json", exclude_none=True)])
        self._writer = asyncio.create_task(self._write_as_they_come())
        return self

    def add(self, piece: StreamPiece) -> None:
        if streams(self._step, piece):
            self._pending.append(piece)
            self._arrived.set()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """The writer writes what is left and stops (never cancelled mid-write, so the events
        land in order). A failed attempt's partial output is still worth showing, but its own
        error wins, and it never hangs on the write."""
        if self._writer is None:
            return
        self._closing = True
        self._arrived.set()
        if error is None:
            await self._writer
            return
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self._writer, FAILED_ATTEMPT_WRITE_TIMEOUT_S)

    async def _write_as_they_come(self) -> None:
        """A write that fails keeps its pieces for the next one; once the request is done, the
        last write gets FINAL_WRITE_TRIES before it fails the attempt."""
        failures = 0
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            pieces, self._pending = self._pending, []
            try:
                await self._write([self._event(piece) for piece in merge_pieces(pieces)])
                failures = 0
            except Exception as err:  # the database may be busy: keep the pieces, try again
                failures += 1
                if self._closing and failures >= FINAL_WRITE_TRIES:
                    raise
                activity.logger.warning("writing tokens failed, retrying: %s", err)
                self._pending[:0] = pieces
                self._arrived.set()
                await asyncio.sleep(RETRY_WRITE_AFTER_S)
                continue
            if self._closing and not self._pending:
                return

    def _event(self, piece: StreamPiece) -> dict[str, Any]:
        return chunk_event(self._step, piece).model_dump(mode="json", exclude_none=True)

    async def _write(self, events: list[dict[str, Any]]) -> None:
        if events:
            await asyncio.to_thread(self._append, events)

    def _append(self, events: list[dict[str, Any]]) -> None:
        with self._db.transaction() as session:
            stream_chunks.append(session, self._key, self._step.agent_id, events)


def token_publisher(step: LLMStepInput, db: Database) -> StoreTokenPublisher | TokenPublisher:
    """Where this run's stream lives: the store, or (runs started before it moved) history."""
    return StoreTokenPublisher(step, db) if step.stream_in_store else TokenPublisher(step)
