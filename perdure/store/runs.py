"""Runs and steps. A step's messages, the in-context list and the step row commit together."""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, select, update
from sqlalchemy.orm import Session

from perdure.schemas.letta import LettaUsageStatistics, RunStatus, StopReasonType
from perdure.schemas.run import SendMessageRequest, StepRecord, TokenUsage
from perdure.schemas.messages import Message, ToolReturn
from perdure.schemas.stream import LettaErrorMessage, error_event
from perdure.store.errors import NotFoundError
from perdure.store.db import dialect_insert, forget_loaded, upsert_statement
from perdure.store.messages import AGENTS, append_to_locked, insert_messages, lock_in_context
from perdure.store.tables import AgentRow, RunRow, StepRow, utcnow
from perdure.store.tool_executions import recorded_returns
from pydantic import BaseModel
from datetime import datetime


class RunInfo(BaseModel):
    id: str
    agent_id: str
    workflow_id: str
    status: RunStatus
    stop_reason: StopReasonType | None
    request: SendMessageRequest
    usage: LettaUsageStatistics | None
    error: str | None
    created_at: datetime
    completed_at: datetime | None


class StepInfo(StepRecord):
    created_at: datetime


def create_run(session: Session, *, run_id: str, agent_id: str, workflow_id: str, request: SendMessageRequest) -> None:
    """Record the run and its request (so an input that never reaches the context is not lost);
    a retried activity whose first attempt did commit records nothing more."""
    statement = upsert_statement(session, RunRow).values(
        id=run_id,
        agent_id=agent_id,
        workflow_id=workflow_id,
        status=RunStatus.running.value,
        request=request.model_dump(mode="json"),
        created_at=utcnow(),
        turn_key=request.turn_key,
    )
    session.execute(statement.on_conflict_do_nothing(index_elements=["id"]))


def checkpoint_step(session: Session, agent_id: str, messages: list[Message], step: StepRecord) -> None:
    """Commit a step. Tool returns the workflow holds as previews are replaced by the full
    returns the tool activity recorded, so the step's payloads stay small. The agent is locked
    first, so a checkpoint and any other write to the agent take turns, on any database."""
    in_context = lock_in_context(session, agent_id)
    messages = _with_recorded_returns(session, messages)
    insert_messages(session, messages)
    append_to_locked(session, agent_id, in_context, [m.id for m in messages])
    upsert_step(session, step)
    if step.stop_reason is StopReasonType.requires_approval:
        _mark_paused(session, step.run_id, agent_id)


def _mark_paused(session: Session, run_id: str, agent_id: str) -> None:
    """A paused run is still running, but says why it waits (Letta's `last_stop_reason`)."""
    reason = StopReasonType.requires_approval.value
    session.flush()
    session.execute(_RUN_STOP_REASON, {"paused_run": run_id, "reason": reason})
    session.execute(_AGENT_STOP_REASON, {"stopped_agent": agent_id, "reason": reason})
    _forget_run_and_agent(session, run_id, agent_id)


def _forget_run_and_agent(session: Session, run_id: str, agent_id: str) -> None:
    """The rows the updates above changed, expired in the session (`forget_loaded`)."""
    forget_loaded(session, RunRow, run_id)
    forget_loaded(session, AgentRow, agent_id)


def _with_recorded_returns(session: Session, messages: list[Message]) -> list[Message]:
    """`messages` with each tool return the tool activity recorded in full, read in one statement."""
    keys = [_return_key(m, r) for m in messages if _has_recorded_returns(m) for r in m.tool_returns]
    recorded = recorded_returns(session, keys)
    return [
        message.model_copy(
            update={"tool_returns": [recorded.get(_return_key(message, r), r) for r in message.tool_returns]}
        )
        if _has_recorded_returns(message)
        else message
        for message in messages
    ]


def _has_recorded_returns(message: Message) -> bool:
    return message.role == "tool" and message.step_id is not None


def _return_key(message: Message, tool_return: ToolReturn) -> str:
    return f"{message.step_id}:{tool_return.tool_call_id}"


STEPS = cast(Table, StepRow.__table__)


@cache
def _upsert_step(dialect_name: str, updated: tuple[str, ...]) -> Any:
    """Built once per dialect: on a conflict the row takes the `updated` values the insert carried."""
    statement = dialect_insert(dialect_name, STEPS)
    return statement.on_conflict_do_update(
        index_elements=["id"], set_={name: statement.excluded[name] for name in updated}
    )


def upsert_step(session: Session, step: StepRecord) -> None:
    """Insert or update the step's row in one statement (a retried checkpoint, a failed step)."""
    values = {
        "run_id": step.run_id,
        "agent_id": step.agent_id,
        "step_number": step.step_number,
        "model": step.model,
        "status": step.status,
        "stop_reason": step.stop_reason.value if step.stop_reason else None,
        "prompt_tokens": step.usage.prompt_tokens,
        "completion_tokens": step.usage.completion_tokens,
        "total_tokens": step.usage.prompt_tokens + step.usage.completion_tokens,
        "llm_request_ns": step.llm_request_ns,
        "tool_execution_ns": step.tool_execution_ns,
        "step_ns": step.step_ns,
        "error_type": step.error_type,
        "error": step.error,
    }
    session.flush()
    statement = _upsert_step(session.get_bind().dialect.name, tuple(values))
    session.execute(statement, {"id": step.id, "created_at": utcnow(), **values})


RUNS = cast(Table, RunRow.__table__)
_FINISH_RUN = (
    update(RUNS)
    .where(RUNS.c.id == bindparam("finished_run"))
    .values(
        status=bindparam("run_status"),
        stop_reason=bindparam("run_stop_reason"),
        usage=bindparam("run_usage"),
        error=bindparam("run_error"),
        completed_at=bindparam("finished_at"),
    )
)
"""Built once, like the step's statements and the two below: a run's end is two updates, not
two ORM loads (the run's whole request and the agent's whole row) and a flush."""
_RUN_STOP_REASON = update(RUNS).where(RUNS.c.id == bindparam("paused_run")).values(stop_reason=bindparam("reason"))
_AGENT_STOP_REASON = (
    update(AGENTS).where(AGENTS.c.id == bindparam("stopped_agent")).values(last_stop_reason=bindparam("reason"))
)


def finish_run(
    session: Session,
    *,
    run_id: str,
    agent_id: str,
    stop_reason: StopReasonType,
    usage: LettaUsageStatistics,
    error: str | None,
    finished_at: datetime,
) -> bool:
    """Record how the run ended, and the agent's last stop reason. False, with nothing written,
    when the run is not stored (its agent was deleted meanwhile)."""
    session.flush()
    ended = cast(
        CursorResult[Any],
        session.execute(
            _FINISH_RUN,
            {
                "finished_run": run_id,
                "run_status": stop_reason.run_status.value,
                "run_stop_reason": stop_reason.value,
                "run_usage": usage.model_dump(mode="json"),
                "run_error": error,
                "finished_at": finished_at,
            },
        ),
    )
    if ended.rowcount == 0:
        return False
    session.execute(_AGENT_STOP_REASON, {"stopped_agent": agent_id, "reason": stop_reason.value})
    _forget_run_and_agent(session, run_id, agent_id)
    return True


def get_run(session: Session, run_id: str) -> RunInfo:
    run = session.get(RunRow, run_id)
    if run is None:
        raise NotFoundError(f"run '{run_id}' not found")
    return _run_info(run)


def list_runs(session: Session, agent_id: str) -> list[RunInfo]:
    rows = session.scalars(select(RunRow).where(RunRow.agent_id == agent_id).order_by(RunRow.created_at)).all()
    return [_run_info(r) for r in rows]


def find_run_for_turn(session: Session, agent_id: str, turn_key: str) -> RunInfo | None:
    """The run that took the turn `turn_key` (`SendMessageRequest.turn_key`), if one did: one
    indexed read however many runs the agent has made."""
    query = (
        select(RunRow)
        .where(RunRow.agent_id == agent_id, RunRow.turn_key == turn_key)
        .order_by(RunRow.created_at.desc())
        .limit(1)
    )
    row = session.scalars(query).first()
    return _run_info(row) if row is not None else None


def list_steps(session: Session, run_id: str) -> list[StepInfo]:
    rows = session.scalars(select(StepRow).where(StepRow.run_id == run_id).order_by(StepRow.step_number)).all()
    return [
        StepInfo(
            id=r.id,
            run_id=r.run_id,
            agent_id=r.agent_id,
            step_number=r.step_number,
            model=r.model,
            status=r.status,
            stop_reason=StopReasonType(r.stop_reason) if r.stop_reason else None,
            usage=TokenUsage(prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens),
            llm_request_ns=r.llm_request_ns,
            tool_execution_ns=r.tool_execution_ns,
            step_ns=r.step_ns,
            error_type=r.error_type,
            error=r.error,
            created_at=r.created_at,
        )
        for r in rows
    ]


def run_error(session: Session, run_id: str) -> LettaErrorMessage | None:
    """What made a failed run fail, as Letta's error message (the `event: error` of its
    stream): the error type from its failed step, Letta's message, and the run's error text."""
    run = get_run(session, run_id)
    if run.error is None or run.status is not RunStatus.failed:
        return None
    failed = [step for step in list_steps(session, run_id) if step.error_type]
    overflow = run.stop_reason is StopReasonType.context_window_overflow_in_system_prompt
    return error_event(run_id, failed[-1].error_type if failed else None, run.error, overflow)


def _run_info(run: RunRow) -> RunInfo:
    return RunInfo(
        id=run.id,
        agent_id=run.agent_id,
        workflow_id=run.workflow_id,
        status=RunStatus(run.status),
        stop_reason=StopReasonType(run.stop_reason) if run.stop_reason else None,
        request=SendMessageRequest.model_validate(run.request),
        usage=LettaUsageStatistics.model_validate(run.usage) if run.usage else None,
        error=run.error,
        created_at=run.created_at,
        completed_at=run.completed_at,
    )


__all__ = [
    "RunInfo",
    "StepInfo",
    "create_run",
    "checkpoint_step",
    "finish_run",
    "get_run",
    "list_runs",
    "list_steps",
    "run_error",
    "upsert_step",
    "utcnow",
]
