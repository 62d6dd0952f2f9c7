"""Stream readers on PostgreSQL read when a write's notice tells them to, not every 10 ms, and
lose nothing when notices fail: the listening connection cut off, a server it cannot reach,
notices that never arrive."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, event, text

from perdure.schemas.letta import AssistantMessage
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from perdure.store import stream_chunks
from perdure.store.db import Database, get_database, upgrade_database
from perdure.store.stream_notices import LISTENER_NAME, Wakeups
from perdure.store.stream_notify import SENDER_NAME, Notifier
from starter.client import PerdureClient
from starter.updates import message_request
from tests.conftest import AgentFactory
from tests.ports import free_port
from tests.postgres_server import create_database
from tests.test_streaming import ANSWER, collect, kinds

pytestmark = pytest.mark.only_postgresql

LISTENING = text(
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = :name"
    " AND query = 'LISTEN perdure_stream' AND state = 'idle'"
)
TERMINATE_SENDERS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name = :name"
)
NOTICES_LOG = "perdure.store.stream_notices"
NOTIFY_LOG = "perdure.store.stream_notify"
PASSWORD = "s3cret-pw"


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
    """The backends of this process's listening connections that have run their LISTEN."""
    with db.transaction(read_only=True) as session:
        return list(session.scalars(LISTENING, {"name": LISTENER_NAME}))


async def until(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


async def wakes(wakeups: Wakeups, seconds: float) -> int:
    count, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        await wakeups.wait()
        count += 1
    return count


def write(db: Database, run_key: str) -> None:
    with db.transaction() as session:
        stream_chunks.append(session, run_key, "agent-x", [{"message_type": "ping"}])


def write_unannounced(db: Database, run_key: str, seq: int) -> None:
    """A row as a write behind a pooler in transaction mode leaves it: no notice reaches a reader."""
    with db.transaction() as session:
        session.execute(
            text("INSERT INTO stream_chunks (run_key, seq, agent_id, event, final) VALUES (:k, :s, 'a', '{}', false)"),
            {"k": run_key, "s": seq},
        )


def dead_url() -> str:
    """A PostgreSQL URL with a password, where nothing listens."""
    return f"postgresql+psycopg://perdure:{PASSWORD}@127.0.0.1:{free_port()}/perdure"


def rolled_back(db: Database, run_key: str) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        stream_chunks.append(session, run_key, "agent-x", [{"message_type": "ping"}])
        raise RuntimeError("the transaction fails after the write")


async def test_a_committed_write_notifies_the_channel_with_its_run_and_a_rolled_back_one_does_not(
    db: Database,
) -> None:
    conninfo = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    kept, dropped = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    seen: list[str] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listening:
        await listening.execute("LISTEN perdure_stream")
        await asyncio.to_thread(rolled_back, db, dropped)
        await asyncio.to_thread(write, db, kept)
        async for notice in listening.notifies(timeout=10):
            seen.append(notice.payload)
            if notice.payload == kept:
                break

    assert kept in seen and dropped not in seen


async def test_notices_of_concurrent_writers_go_out_together_and_name_every_run(db: Database) -> None:
    """Eight writers, twenty writes each, to runs of their own: every run is named, in fewer
    notice transactions than writes (keys that arrive while one is in flight wait for the next)."""
    conninfo = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    runs = [f"run-{uuid.uuid4()}" for _ in range(8)]
    sent: list[str] = []

    def counted(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "pg_notify" in statement:
            sent.append(statement)

    def writer(run_key: str) -> None:
        for _ in range(20):
            write(db, run_key)

    event.listen(db.engine, "before_cursor_execute", counted)
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listening:
            await listening.execute("LISTEN perdure_stream")
            await asyncio.gather(*(asyncio.to_thread(writer, run_key) for run_key in runs))
            named: set[str] = set()
            async for notice in listening.notifies(timeout=10):
                named.add(notice.payload)
                if named >= set(runs):
                    break
    finally:
        event.remove(db.engine, "before_cursor_execute", counted)

    assert set(runs) <= named
    assert len(sent) < 8 * 20, f"{len(sent)} notice transactions for 160 writes"


async def test_a_notice_that_cannot_be_sent_is_one_warning_and_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """The rows are committed by then: a writer hands its notice over and never hears of it."""
    caplog.set_level(logging.WARNING, logger=NOTIFY_LOG)

    Notifier(create_engine(dead_url())).send({"run-x"})
    await until(lambda: any(r.name == NOTIFY_LOG for r in caplog.records))

    [warning] = [r.getMessage() for r in caplog.records if r.name == NOTIFY_LOG]
    assert warning.startswith("stream notices not sent (readers read at their next interval): ")
    assert "\n" not in warning and PASSWORD not in caplog.text


async def test_notices_go_on_after_the_sending_connection_is_cut_off(
    postgres_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database of its own, so only this test's sender is cut off."""
    url = create_database(postgres_server_url)
    upgrade_database(url)
    db = get_database(url)
    caplog.set_level(logging.WARNING, logger=NOTIFY_LOG)
    notifier = Notifier(db.engine)
    conninfo = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    first, lost, later = (f"run-{uuid.uuid4()}" for _ in range(3))

    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listening:
        await listening.execute("LISTEN perdure_stream")
        notifier.send({first})
        before = [n.payload async for n in listening.notifies(timeout=10, stop_after=1)]
        with db.transaction() as session:
            session.execute(text(TERMINATE_SENDERS), {"name": SENDER_NAME})
        notifier.send({lost})
        await until(lambda: any(r.name == NOTIFY_LOG for r in caplog.records))
        notifier.send({later})
        after = [n.payload async for n in listening.notifies(timeout=10, stop_after=1)]

    assert before == [first] and after == [later]
    [warning] = [r.getMessage() for r in caplog.records if r.name == NOTIFY_LOG]
    assert warning.startswith("stream notices not sent (readers read at their next interval): ")


async def test_a_write_wakes_the_readers_of_its_run_and_no_others(db: Database) -> None:
    """A listening reader wakes at least every 0.25 s anyway; 20 writes 10 ms apart wake their
    run's reader far more often than that in one second, and another run's reader no more often."""
    written, other = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"

    def writes() -> None:
        for _ in range(20):
            write(db, written)
            time.sleep(0.01)

    async with Wakeups(db, written) as told, Wakeups(db, other) as not_told:
        await until(lambda: told.told)
        counting = asyncio.gather(wakes(told, 1.0), wakes(not_told, 1.0))
        await asyncio.to_thread(writes)
        woken, others = await counting

    assert woken >= 10, f"the written run's reader woke {woken} times"
    assert others <= 6, f"the other run's reader woke {others} times"


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
    # Polling every 10 ms would read at least 100 times while the model is quiet; a reader
    # told by notices reads after each write, and every 0.25 s when there is none.
    assert len(reads) <= len(items) + 8 * elapsed + 8, f"{len(reads)} reads in {elapsed:.2f} s"
    quiet = [at for at in reads if started + 0.4 < at < started + quiet_s - 0.1]
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
    caplog.set_level(logging.WARNING, logger=NOTICES_LOG)
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
    [warning] = [r.getMessage() for r in caplog.records if r.name == NOTICES_LOG]
    assert warning.startswith("stream notices: ") and warning.endswith("; readers poll until the listener is back")
    assert "\n" not in warning


async def test_readers_of_a_server_the_listener_cannot_reach_poll(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=NOTICES_LOG)

    async with Wakeups(Database(dead_url()), f"run-{uuid.uuid4()}") as wakeups:
        waits = await wakes(wakeups, 0.5)
        await until(lambda: any(r.name == NOTICES_LOG for r in caplog.records))

    assert waits >= 10, f"{waits} waits in 0.5 s: the reader waited for notices that cannot come"
    warning = next(r.getMessage() for r in caplog.records if r.name == NOTICES_LOG)
    assert "readers poll until the listener is back" in warning
    assert PASSWORD not in caplog.text


async def test_readers_poll_once_reads_find_events_no_notice_announced(
    postgres_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As behind a connection pooler in transaction mode, which passes no notice on. A database
    of its own: once it has missed notices, the process polls it for good."""
    url = create_database(postgres_server_url)
    upgrade_database(url)
    db = get_database(url)
    run_key = f"run-{uuid.uuid4()}"
    caplog.set_level(logging.WARNING, logger=NOTICES_LOG)

    async with Wakeups(db, run_key) as wakeups:
        await until(lambda: wakeups.told)
        await wakeups.wait()  # the wake-up every reader gets as the listener starts
        for seq in range(4):
            write_unannounced(db, run_key, seq)
            await wakeups.wait()
            wakeups.after_read(found_events=True)
        waits = await wakes(wakeups, 0.5)
    async with Wakeups(db, run_key) as later:
        later_waits = await wakes(later, 0.5)

    assert waits >= 10, f"{waits} waits in 0.5 s: the reader still waits for notices"
    assert later_waits >= 10, f"{later_waits} waits in 0.5 s: a later reader waits for notices again"
    [warning] = [r.getMessage() for r in caplog.records if r.name == NOTICES_LOG]
    assert warning.startswith("stream notices: 3 reads found events no notice announced")
    assert listeners(db) == []


async def test_a_listener_that_had_notices_and_misses_one_listens_anew(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Its connection may have died unseen: readers are not left waiting on it, and the process
    goes on trusting notices."""
    run_key = f"run-{uuid.uuid4()}"
    caplog.set_level(logging.WARNING, logger=NOTICES_LOG)

    async with Wakeups(db, run_key) as wakeups:
        await until(lambda: wakeups.told)
        [first] = listeners(db)
        await asyncio.to_thread(write, db, run_key)
        await wakeups.wait()
        await wakeups.wait()  # ends by the write's notice, or at the interval if it came earlier
        write_unannounced(db, run_key, 1000)
        await wakeups.wait()
        wakeups.after_read(found_events=True)
        await wakeups.wait()
        await until(lambda: wakeups.told and listeners(db) not in ([], [first]))

    [warning] = [r.getMessage() for r in caplog.records if r.name == NOTICES_LOG]
    assert warning == "stream notices: a write's notice did not come; listening again"
