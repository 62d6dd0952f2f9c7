"""Stream readers on PostgreSQL read when a write's notice tells them to, not every 10 ms, and
lose nothing when the listening connection is cut off."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text

from perdure.schemas.letta import AssistantMessage
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from perdure.store import stream_chunks, stream_notices
from perdure.store.db import Database
from starter.client import PerdureClient
from starter.updates import message_request
from tests.conftest import AgentFactory
from tests.test_streaming import ANSWER, collect, kinds

pytestmark = pytest.mark.only_postgresql

LISTENERS = text(
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN perdure_stream'"
)


@contextmanager
def stream_reads(db: Database) -> Iterator[list[float]]:
    """The times this process's readers read a run's stream (the worker, in this process too,
    writes it without that select)."""
    reads: list[float] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("SELECT") and "stream_chunks.final" in statement:
            reads.append(time.monotonic())

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        yield reads
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)


def listeners(db: Database) -> list[int]:
    with db.transaction(read_only=True) as session:
        return list(session.scalars(LISTENERS))


async def until(check: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


def write(db: Database, run_key: str) -> None:
    with db.transaction() as session:
        stream_chunks.append(session, run_key, "agent-x", [{"message_type": "ping"}])


async def test_a_committed_write_notifies_the_channel_with_its_run_and_a_rolled_back_one_does_not(
    db: Database,
) -> None:
    conninfo = db.engine.url.set(drivername="postgresql").render_as_string(False)
    kept, dropped = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listening:
        await listening.execute("LISTEN perdure_stream")
        await asyncio.to_thread(rolled_back, db, dropped)
        await asyncio.to_thread(write, db, kept)
        notices = [n.payload async for n in listening.notifies(timeout=10, stop_after=1)]

    assert notices == [kept]


def rolled_back(db: Database, run_key: str) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        stream_chunks.append(session, run_key, "agent-x", [{"message_type": "ping"}])
        raise RuntimeError("the transaction fails after the write")


async def test_a_write_wakes_the_readers_of_its_run_and_no_others(db: Database) -> None:
    """Readers wake at least every 0.25 s anyway; 20 writes 10 ms apart wake their run's reader
    far more often than that in one second, and another run's reader no more often."""
    written, other = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"

    async def wakes(run_key: str, seconds: float) -> int:
        count, until_s = 0, time.monotonic() + seconds
        async with stream_notices.Wakeups(db, run_key) as wakeups:
            started.set()
            while time.monotonic() < until_s:
                await wakeups.wait()
                count += 1
        return count

    def writes() -> None:
        for _ in range(20):
            write(db, written)
            time.sleep(0.01)

    started = asyncio.Event()
    counting = asyncio.gather(wakes(written, 1.0), wakes(other, 1.0))
    await started.wait()
    await asyncio.to_thread(writes)
    woken, not_told = await counting

    assert woken >= 10, f"the written run's reader woke {woken} times"
    assert not_told <= 6, f"the other run's reader woke {not_told} times"


async def test_a_reader_reads_when_a_write_tells_it_and_not_in_between(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent()
    quiet_s = 1.5
    llm.script(model_name, [ScriptedReply(content=ANSWER, delay_s=quiet_s, chunk_delay_s=0.01)])

    with stream_reads(db) as reads:
        started = time.monotonic()
        items = await collect(client.stream_message(agent.id, message_request("Hi", stream_tokens=True)))
        elapsed = time.monotonic() - started

    assert kinds(items)[-3:] == ["assistant_message", "stop_reason", "usage_statistics"]
    assert "".join(i.event.content for i in items if isinstance(i.event, AssistantMessage)) == ANSWER
    assert [i.offset for i in items] == list(range(len(items)))
    # Polling every 10 ms would read at least 150 times while the model is quiet; a reader
    # told by notices reads after each write, and every 0.25 s when there is none.
    assert len(reads) <= len(items) + 8 * elapsed + 8, f"{len(reads)} reads in {elapsed:.2f} s"
    quiet = [at for at in reads if started + 0.3 < at < started + quiet_s - 0.1]
    assert len(quiet) <= 8, f"{len(quiet)} reads while nothing was written"


async def test_the_listener_closes_when_its_last_reader_is_done(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content=ANSWER, delay_s=1.0)])
    reader = asyncio.ensure_future(collect(client.stream_message(agent.id, message_request("Hi", stream_tokens=True))))

    await until(lambda: len(listeners(db)) == 1)
    await reader
    await until(lambda: listeners(db) == [])


async def test_a_reader_whose_listener_is_cut_off_gets_every_event(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content=ANSWER, delay_s=0.5, chunk_delay_s=0.1)])
    caplog.set_level(logging.WARNING, logger="perdure.store.stream_notices")
    reader = asyncio.ensure_future(collect(client.stream_message(agent.id, message_request("Hi", stream_tokens=True))))
    await until(lambda: len(listeners(db)) == 1)
    [cut] = listeners(db)

    with db.transaction() as session:
        session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": cut})
    await until(lambda: listeners(db) not in ([], [cut]))
    items = await reader

    assert "".join(i.event.content for i in items if isinstance(i.event, AssistantMessage)) == ANSWER
    assert [i.offset for i in items] == list(range(len(items)))
    assert kinds(items)[-2:] == ["stop_reason", "usage_statistics"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "perdure.store.stream_notices"]
    assert len(warnings) == 1 and "readers poll until the listener is back" in warnings[0]
    assert "\n" not in warnings[0] and "password" not in warnings[0]


async def test_readers_poll_once_a_read_finds_events_no_notice_announced(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """As behind a connection pooler in transaction mode, which passes no notice on: here a row
    is written without one."""
    run_key = f"run-{uuid.uuid4()}"
    caplog.set_level(logging.WARNING, logger="perdure.store.stream_notices")
    async with stream_notices.Wakeups(db, run_key) as wakeups:
        await wakeups.wait()  # the wake-up every reader gets as the listener starts
        with db.transaction() as session:
            session.execute(
                text(
                    "INSERT INTO stream_chunks (run_key, seq, agent_id, event, final) VALUES (:k, 0, 'a', '{}', false)"
                ),
                {"k": run_key},
            )
        await wakeups.wait()
        await wakeups.read(found_events=True)
        waits, until_s = 0, time.monotonic() + 0.5
        while time.monotonic() < until_s:
            await wakeups.wait()
            waits += 1

    assert waits >= 10, f"{waits} reads in 0.5 s: the reader still waits for notices"
    [warning] = [r.getMessage() for r in caplog.records if r.name == "perdure.store.stream_notices"]
    assert "found events no notice announced" in warning and "poll every 10 ms" in warning
