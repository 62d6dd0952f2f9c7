"""Writing a run's stream to the database: committed steps, outcomes, and pauses.

The stream is keyed by the run's Temporal run id, which readers already know (the update's
handle, or the agent's latest execution). A committed step's events go in the transaction
that commits the step, so a reader never sees a step the store may lose; every write carries a
key, so a retried activity adds nothing twice.
"""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session
from temporalio import activity

from perdure.schemas.run import AppendStreamInput, CheckpointInput
from perdure.store import stream_chunks
from perdure.store.db import Database
from perdure.stream_events import step_events
from perdure import names

FINISH_KEY = "finish"


def run_key() -> str:
    """The stream's key: the Temporal run id of the activity's workflow execution."""
    return activity.info().workflow_run_id or ""


def append_step(session: Session, input: CheckpointInput) -> None:
    """The committed step's events, once however often the checkpoint is retried."""
    ids = ",".join(m.id for m in input.messages)
    key = f"step:{hashlib.sha256(f'{input.step.id}|{ids}'.encode()).hexdigest()[:40]}"
    events = step_events(input.messages, tokens_streamed=input.tokens_streamed)
    stream_chunks.append(session, run_key(), input.agent_id, events, dedup_key=key)


def append_outcome(session: Session, agent_id: str, events: list[dict[str, object]]) -> None:
    """The run's last events: readers stop after them."""
    stream_chunks.append(session, run_key(), agent_id, events, final=True, dedup_key=FINISH_KEY)


class StreamActivities:
    def __init__(self, db: Database) -> None:
        self._db = db

    @activity.defn(name=names.APPEND_STREAM)
    def append_stream(self, input: AppendStreamInput) -> None:
        """Events the workflow adds outside a commit (a pause's outcome)."""
        with self._db.transaction() as session:
            stream_chunks.append(session, run_key(), input.agent_id, input.events, dedup_key=input.dedup_key)
