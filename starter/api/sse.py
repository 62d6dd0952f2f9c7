"""A run's stream as Letta's server-sent events.

One `data: {json}` per event, each with its `seq_id` (the stream offset + 1, so Letta's
`starting_after=N` resumes right after event N and its default 0 reads everything); a failed
run's `error_message` goes out as `event: error`; the stream ends with `data: [DONE]`. With
`include_pings`, a `ping` goes out whenever nothing else has for a while, so proxies and
clients with read timeouts keep the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from perdure.schemas.stream import ERROR_MESSAGE, LettaErrorMessage
from starter.api.shapes import finish_message
from starter.updates import RunRejectedError
from starter.stream import StreamItem

DONE = b"data: [DONE]\n\n"
CONTROL_TYPES = frozenset({"stop_reason", "usage_statistics", "error_message", "attempt_started"})
"""Events that always go out, whatever `include_return_message_types` asks for."""
log = logging.getLogger("perdure.api")


class StreamOptions(BaseModel):
    ping_interval: float | None
    """Seconds of silence before a ping; None: no pings."""
    shows: Callable[[str], bool] = lambda _type: True
    """Which message types the client asked for."""


def data(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def error(payload: dict[str, Any]) -> bytes:
    return f"event: error\ndata: {json.dumps(payload)}\n\n".encode()


async def letta_events(items: AsyncIterator[StreamItem], options: StreamOptions) -> AsyncIterator[bytes]:
    """The SSE body of a stream; a failure after the first byte is told as Letta tells it."""
    run_id: str | None = None
    request_id: str | None = None
    try:
        async for item in _with_pings(items, options.ping_interval):
            if item is None:
                yield data(
                    {"message_type": "ping", "id": f"ping-{uuid.uuid4()}", "date": _now().isoformat(), "run_id": run_id}
                )
                continue
            event = item.event.model_dump(mode="json", exclude_none=True)
            run_id = event.get("run_id", run_id)
            kind = event["message_type"]
            if kind not in CONTROL_TYPES and not options.shows(kind):
                continue
            event = finish_message({**event, "seq_id": item.offset + 1}, request_id=request_id, now=_now())
            if kind == "approval_request_message":
                request_id = event["id"]
            yield error(event) if isinstance(item.event, LettaErrorMessage) else data(event)
    except RunRejectedError as err:
        yield data({"message_type": "stop_reason", "stop_reason": "error"})
        yield error(_error_event(run_id, str(err)))
    except Exception as err:  # the connection is open: the client must hear that the stream broke
        log.exception("stream of run %s failed", run_id)
        yield error(_error_event(run_id, f"{type(err).__name__}: {err}"))
    yield DONE


def _error_event(run_id: str | None, detail: str) -> dict[str, Any]:
    return {
        "message_type": "error_message",
        "run_id": run_id or "",
        "error_type": "internal_error",
        "message": ERROR_MESSAGE,
        "detail": detail,
    }


async def _with_pings(items: AsyncIterator[StreamItem], interval: float | None) -> AsyncIterator[StreamItem | None]:
    """The items, and None whenever `interval` seconds pass without one. The pending read is
    kept across pings (never cancelled), so no event is lost to a ping."""
    iterator = aiter(items)
    next_item: asyncio.Task[StreamItem] | None = None
    try:
        while True:
            if next_item is None:
                next_item = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({next_item}, timeout=interval)
            if not done:
                yield None
                continue
            try:
                item = next_item.result()
            except StopAsyncIteration:
                return
            next_item = None
            yield item
    finally:
        if next_item is not None and not next_item.done():
            next_item.cancel()


def _now() -> datetime:
    return datetime.now(UTC)
