"""Where a run's results go: the updates waiting for its next outcome, and the run's stream.

Kept apart from the loop so the workflow reads as the loop: it says what happened (a step was
committed, the run stopped or paused), and this decides who hears of it and in which shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream

with workflow.unsafe.imports_passed_through():
    from perdure.schemas.messages import Message
    from perdure.schemas.run import RunResult
    from perdure.schemas.stream import STREAM_TOPIC

from workflows.stream_events import step_events


class RunOutcomes:
    """The latest outcome with the messages stored since the one before, and the stream.

    Must be made in the workflow's `@workflow.init`: the stream registers its handlers there.
    """

    def __init__(self) -> None:
        self._stream = WorkflowStream()
        self._events = self._stream.topic(STREAM_TOPIC)
        self.latest: RunResult | None = None
        self.count = 0
        """How many outcomes so far: an update waits for this to grow."""
        self._stored: list[str] = []
        self._answer: str | None = None
        """The text of the last assistant message since the latest outcome."""

    def stored(self, message_ids: Sequence[str]) -> None:
        """Messages written outside a step (a compaction's summary and event)."""
        self._stored += message_ids

    def committed(self, messages: Sequence[Message], *, tokens_streamed: bool, publish: bool = True) -> None:
        """A step's messages are in the store: they belong to the next outcome, and go out on
        the Workflow Stream now (`publish`; a run whose stream is in the store has them written
        there by the checkpoint)."""
        self._stored += [m.id for m in messages]
        self._answer = next((m.text for m in reversed(messages) if m.role == "assistant" and m.text), self._answer)
        if publish:
            for event in step_events(messages, tokens_streamed=tokens_streamed):
                self._events.publish(event)

    def reached(self, result: RunResult, events: Sequence[dict[str, Any]], *, publish: bool = True) -> None:
        """The run stopped or paused: hand `result` (with the messages stored since the last
        outcome) to whoever waits, and end the outcome with `events` on the Workflow Stream
        (`publish`; else an activity wrote them to the store)."""
        self.latest = result.model_copy(update={"message_ids": self._stored, "answer": self._answer})
        self._stored, self._answer = [], None
        self.count += 1
        if publish:
            for event in events:
                self._events.publish(event)

    def release_readers(self) -> None:
        """Before the run closes: stream subscribers that long-poll by update get what they
        waited for and read the rest through the stream's query."""
        self._stream.detach_pollers()
