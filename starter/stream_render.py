"""Printing a run's stream as it arrives: tokens inline, each step as it completes.

`--json` prints each event as one line, Letta's SSE `data:` payload plus its `seq_id` (the
stream offset), so a client that dropped knows where to resume with `follow --from`.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from perdure.schemas.letta import (
    ApprovalRequestMessage,
    AssistantMessage,
    LettaStopReason,
    LettaUsageStatistics,
    ReasoningMessage,
    ToolCallMessage,
)
from perdure.schemas.stream import AttemptStarted, LettaErrorMessage, StreamEvent
from starter.render import message_lines
from starter.stream import StreamItem

PREFIX = {
    "assistant_message": "assistant  > ",
    "reasoning_message": "reasoning  > ",
    "tool_call_message": "tool call  > ",
    "approval_request_message": "approval   > ",
}


def json_line(item: StreamItem) -> str:
    return json.dumps({**item.event.model_dump(mode="json", exclude_none=True), "seq_id": item.offset})


class StreamPrinter:
    """Keeps the line a chunked message is being written on open until something else comes."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out
        self._open: tuple[str, str, str] | None = None
        """(message id, message type, tool call id) of the chunked line being written."""
        self._stop: LettaStopReason | None = None

    def show(self, item: StreamItem) -> None:
        event = item.event
        if _is_chunk(event):
            self._chunk(event)
        else:
            self._close()
            self._whole(event, item.offset)
        self._out.flush()

    def _chunk(self, event: StreamEvent) -> None:
        assert isinstance(event, (AssistantMessage, ReasoningMessage, ToolCallMessage, ApprovalRequestMessage))
        call = event.tool_call if isinstance(event, (ToolCallMessage, ApprovalRequestMessage)) else None
        key = (event.id, event.message_type, call.tool_call_id if call else "")
        if self._open != key:
            self._close()
            self._out.write(PREFIX[event.message_type] + (f"{call.name}(" if call else ""))
            self._open = key
        if isinstance(event, AssistantMessage):
            self._out.write(event.content)
        elif isinstance(event, ReasoningMessage):
            self._out.write(event.reasoning.replace("\n", " "))
        elif call is not None:
            self._out.write(call.arguments)

    def _close(self) -> None:
        if self._open is not None:
            _, kind, call_id = self._open
            if kind == "tool_call_message":
                self._out.write(f")  [{call_id}]\n")
            elif kind == "approval_request_message":
                self._out.write(f") needs an answer  [{call_id}]\n")
            else:
                self._out.write("\n")
            self._open = None

    def _whole(self, event: StreamEvent, offset: int) -> None:
        if isinstance(event, AttemptStarted):
            again = (
                f"asked again after compacting the context (request {event.request})"
                if event.attempt == 1
                else f"tried again (attempt {event.attempt})"
            )
            self._out.write(
                f"-- the LLM request of step {event.step_id} is {again}; the partial answer above is void\n"
            )
        elif isinstance(event, LettaStopReason):
            self._stop = event
        elif isinstance(event, LettaUsageStatistics):
            stop = self._stop.stop_reason.value if self._stop else "?"
            run = f"run {event.run_ids[0]}: " if event.run_ids else ""
            self._out.write(
                f"-- {run}stop_reason={stop}, steps={event.step_count}, tokens={event.total_tokens} "
                f"(prompt {event.prompt_tokens}, completion {event.completion_tokens}); stream offset {offset}\n"
            )
        elif isinstance(event, LettaErrorMessage):
            stop = self._stop.stop_reason.value if self._stop else "?"
            self._out.write(
                f"-- run {event.run_id}: stop_reason={stop}; error ({event.error_type}): {event.detail or event.message}; stream offset {offset}\n"
            )
        else:
            self._out.writelines(line + "\n" for line in message_lines([event]))

    def finish(self) -> None:
        self._close()
        self._out.flush()


def _is_chunk(event: StreamEvent) -> bool:
    """A run streams either token chunks (from the LLM activity) or whole answers (from the
    workflow), never both; a whole answer prints the same as its single chunk would, so both
    share one path. Only a response with several calls is printed as a list."""
    if isinstance(event, (ToolCallMessage, ApprovalRequestMessage)):
        return len(event.tool_calls) <= 1
    return isinstance(event, (AssistantMessage, ReasoningMessage))
