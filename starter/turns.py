"""What the store knows of a turn (a request's `otid`s): the run that took it, and its outcome.

A client that sends a request again, after a lost connection or a restart, must get the first
run's outcome, never a second turn; these reads find it.
"""

from __future__ import annotations

from perdure.schemas.letta import LettaUsageStatistics, RunStatus
from perdure.schemas.run import RunResult
from perdure.store import messages, runs
from perdure.store.db import Database


class TurnStillRunningError(RuntimeError):
    """The run that took the turn has not stopped, and no live workflow answers for it."""


def ended_run_for(db: Database, agent_id: str, turn: str) -> RunResult | None:
    """The outcome of the ended run that took `turn`; None while none did, or while it runs
    (a live run is joined through its update id instead)."""
    with db.transaction(read_only=True) as session:
        earlier = runs.find_run_for_turn(session, agent_id, turn)
    if earlier is None or earlier.status is RunStatus.running:
        return None
    return stored_outcome(db, agent_id, earlier.id)


def stored_outcome(db: Database, agent_id: str, run_id: str) -> RunResult:
    """A run's outcome as the store has it, with every message it added."""
    with db.transaction(read_only=True) as session:
        run = runs.get_run(session, run_id)
        stored = messages.list_messages(session, agent_id, run_id=run_id)
    if run.stop_reason is None:
        raise TurnStillRunningError(
            f"run {run_id} took this message and is still running; follow it with `perdure follow {agent_id}`"
        )
    return RunResult(
        run_id=run.id,
        agent_id=agent_id,
        stop_reason=run.stop_reason,
        status=run.status,
        usage=run.usage or LettaUsageStatistics(),
        error=run.error,
        message_ids=[m.id for m in stored],
    )


def unfinished_line(db: Database, agent_id: str, turn: str | None, timeout_s: float, error: BaseException) -> str:
    """One line for a request Temporal did not answer in time: what is known of its run."""
    with db.transaction(read_only=True) as session:
        run = runs.find_run_for_turn(session, agent_id, turn) if turn else None
    known = f"run {run.id} is {run.status.value}" if run is not None else "no run has recorded it yet"
    return (
        f"Temporal did not answer within {timeout_s:g} s ({error}); {known}: "
        f"check with `perdure status {agent_id}`; sending the same request again is safe (it never runs twice)"
    )
