"""Concurrent writers, as several workers, a retried activity racing the attempt it replaces, and
the CLI or HTTP API produce them: nothing is lost, nothing lands twice, on SQLite (one writer at
a time) and on PostgreSQL (concurrent transactions at READ COMMITTED)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute
from temporalio.testing import ActivityEnvironment

from activities.runs import RunActivities
from activities.tools import ToolActivities
from perdure.schemas.messages import Message, TextContent, ToolCall
from perdure.schemas.run import CheckpointInput, SendMessageRequest, StepRecord, ToolStepInput, ToolStepOutput
from perdure.store import messages, runs
from perdure.store.db import Database
from perdure.store.tables import MessageRow, RunRow, StepRow, ToolExecutionRow
from tests.conftest import AgentFactory
from tests.helpers import block_value, in_context

pytestmark = pytest.mark.both_stores

T = TypeVar("T")
WRITERS = 6


def all_at_once(jobs: list[Callable[[], T]]) -> list[T]:
    """Run the jobs in threads released together, so their transactions overlap."""
    start = threading.Barrier(len(jobs))

    def released(job: Callable[[], T]) -> T:
        start.wait()
        return job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(released, jobs))


def user_message(agent_id: str, step_id: str, words: str) -> Message:
    return Message(
        id=f"message-{uuid.uuid4()}", agent_id=agent_id, role="user", step_id=step_id, content=[TextContent(text=words)]
    )


def checkpoint(agent_id: str, *words: str) -> CheckpointInput:
    step_id = f"step-{uuid.uuid4()}"
    step = StepRecord(id=step_id, run_id="run-concurrent", agent_id=agent_id, step_number=1)
    return CheckpointInput(agent_id=agent_id, messages=[user_message(agent_id, step_id, w) for w in words], step=step)


def count(db: Database, column: InstrumentedAttribute[str], value: str) -> int:
    with db.transaction(read_only=True) as session:
        return int(session.scalar(select(func.count()).where(column == value)) or 0)


def test_the_same_checkpoint_committed_by_several_attempts_at_once_lands_once(
    db: Database, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    step = checkpoint(agent.id, "one", "two")

    all_at_once([lambda: RunActivities(db).checkpoint_step(step) for _ in range(WRITERS)])

    ids = [m.id for m in step.messages]
    assert [m.id for m in in_context(db, agent.id)][1:] == ids
    assert [count(db, MessageRow.id, i) for i in ids] == [1, 1]
    assert count(db, StepRow.id, step.step.id) == 1


def test_checkpoints_of_different_steps_at_once_lose_no_message(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent()
    steps = [checkpoint(agent.id, f"words of writer {n}") for n in range(WRITERS)]

    all_at_once([lambda s=s: RunActivities(db).checkpoint_step(s) for s in steps])

    context = [m.id for m in in_context(db, agent.id)][1:]
    assert sorted(context) == sorted(s.messages[0].id for s in steps)


def test_a_compaction_that_raced_a_checkpoint_is_refused_and_keeps_it(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent()
    seen = [m.id for m in in_context(db, agent.id)]
    late = checkpoint(agent.id, "arrived during the compaction")
    RunActivities(db).checkpoint_step(late)

    with db.transaction() as session:
        swapped = messages.swap_in_context(session, agent.id, seen, seen[:1])

    assert not swapped
    assert [m.id for m in in_context(db, agent.id)] == [*seen, late.messages[0].id]


def append_line(db: Database, agent_id: str, line: str, call_id: str, step_id: str) -> ToolStepOutput:
    call = ToolCall(id=call_id, name="core_memory_append", arguments=f'{{"label": "human", "content": "{line}"}}')
    step_input = ToolStepInput(agent_id=agent_id, run_id="run-concurrent", step_id=step_id, tool_call=call)
    return ActivityEnvironment().run(ToolActivities(db).execute_tool, step_input)


def test_memory_edits_of_different_calls_at_once_keep_every_edit(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": "start"}], tools=["core_memory_append"])
    lines = [f"line {n}" for n in range(WRITERS)]

    all_at_once(
        [
            lambda line=line: append_line(db, agent.id, line, f"call_{line[-1]}", f"step-{uuid.uuid4()}")
            for line in lines
        ]
    )

    value = block_value(db, agent.id, "human")
    assert value.splitlines()[0] == "start" and sorted(value.splitlines()[1:]) == lines
    assert all(line in in_context(db, agent.id)[0].text for line in lines), "the system message shows every edit"


def test_one_memory_edit_run_by_several_attempts_at_once_is_applied_once(
    db: Database, make_agent: AgentFactory
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": "start"}], tools=["core_memory_append"])
    step_id = f"step-{uuid.uuid4()}"

    outputs = all_at_once([lambda: append_line(db, agent.id, "once", "call_once", step_id) for _ in range(WRITERS)])

    assert block_value(db, agent.id, "human") == "start\nonce"
    assert len({o.model_dump_json() for o in outputs}) == 1, "every attempt answers with the recorded result"
    assert count(db, ToolExecutionRow.tool_call_key, f"{step_id}:call_once") == 1


def test_one_search_run_by_several_attempts_at_once_is_recorded_once(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent()
    step_id = f"step-{uuid.uuid4()}"
    call = ToolCall(id="call_search", name="conversation_search", arguments='{"query": "anything"}')
    step_input = ToolStepInput(agent_id=agent.id, run_id="run-concurrent", step_id=step_id, tool_call=call)

    outputs = all_at_once(
        [lambda: ActivityEnvironment().run(ToolActivities(db).execute_tool, step_input) for _ in range(WRITERS)]
    )

    assert len({o.model_dump_json() for o in outputs}) == 1
    assert count(db, ToolExecutionRow.tool_call_key, f"{step_id}:call_search") == 1


def test_a_run_recorded_by_several_attempts_at_once_is_one_run(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent()
    run_id = f"run-{uuid.uuid4()}"
    request = SendMessageRequest.model_validate({"messages": [{"role": "user", "content": "hello"}]})

    def record() -> None:
        with db.transaction() as session:
            runs.create_run(session, run_id=run_id, agent_id=agent.id, workflow_id=agent.id, request=request)

    all_at_once([record for _ in range(WRITERS)])

    assert count(db, RunRow.id, run_id) == 1
