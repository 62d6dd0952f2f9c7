"""When the model's tokens go out, and the events of committed steps and outcomes (made in
`perdure.stream_events`, shared with the activities that write a run's stream to the store).

What is published to a run's Workflow Stream is part of the workflow's determinism for
readers that long-poll by update (the SDK's `subscribe`), so a change to it goes behind
`workflow.patched()`.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from perdure.stream_events import outcome_events, step_events

__all__ = ["STREAM_IN_STORE_PATCH", "outcome_events", "step_events", "stream_tokens_now"]

STREAM_IN_STORE_PATCH = "stream-in-store"
"""Runs started with it keep their whole stream (tokens, steps, outcomes) in the database's
`stream_chunks` table; runs started before it keep theirs in the Workflow Stream."""

TOKEN_STREAM_HISTORY_LIMIT = 20_000
"""For runs whose stream is in history: token chunks cost about four history events per 0.5 s
batch (the signal and its workflow task). Past this many events such a run streams whole steps
only, so even a run of a thousand streamed steps stays well inside Temporal's 51,200-event limit."""


def stream_tokens_now(requested: bool, history_length: int, *, in_store: bool = False) -> bool:
    """Tokens written to the store cost history nothing, so only runs streaming through
    history have a limit."""
    return requested and (in_store or history_length < TOKEN_STREAM_HISTORY_LIMIT)
