"""When a stream reader reads again: when told, on PostgreSQL; every 10 ms, on SQLite.

A write to a run's stream on PostgreSQL sends `NOTIFY perdure_stream` with the run's key in
its transaction, so the notice goes out when the rows are committed (`stream_chunks.append`).
A process reading streams keeps one connection listening on that channel for as long as it
has a reader, and wakes the readers of the run a notice names. A reader of a quiet run reads
every FALLBACK_INTERVAL instead of every 10 ms, and one of a busy run after each write.

A notice is only a hint to read: a reader reads the table after waking, so a lost notice delays
a reader and never loses an event. Readers poll every POLL_INTERVAL while the listening
connection is down (it reconnects), and for good once a read finds events no notice announced
(a connection pooler in transaction mode between Perdure and PostgreSQL drops LISTEN's notices).
SQLite has no such channel; its readers, usually on the worker's machine, poll."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from perdure.store.db import Database
from perdure.store.stream_chunks import CHANNEL

POLL_INTERVAL = timedelta(milliseconds=10)
"""How often a reader that cannot be told reads: on SQLite, and on PostgreSQL while not listening."""
FALLBACK_INTERVAL = timedelta(milliseconds=250)
"""The longest a listening reader waits without a notice (a run that ends without a last event,
a terminated one, shows only to a reader that looks)."""
NOTICE_GRACE = timedelta(milliseconds=100)
"""How long a notice may trail the rows it announces before it counts as lost."""
RECONNECT_DELAYS_S = (0.1, 0.5, 1.0, 5.0)
"""How long the listener waits before connecting again after losing its connection, growing to the last."""

log = logging.getLogger(__name__)


class Wakeups:
    """A reader's wake-ups for the run `run_key` (its Temporal run id), as `async with
    Wakeups(db, run_key) as wakeups`. On PostgreSQL the process's listener for `db` is listening
    (or has failed once, and reconnects) when the block starts, so a write committed after the
    reader's first read wakes it. `wait` returns at once when a notice came since it last
    returned, so a notice that arrives while the reader reads is not lost.

    A class rather than an async generator: a reader left unfinished (a closed pipe) is closed
    when its loop shuts down, and the loop may close a generator inside it first."""

    def __init__(self, db: Database, run_key: str) -> None:
        self._db = db
        self._run_key = run_key
        self._listener: _Listener | None = None
        self._notice = asyncio.Event()
        self._expected_notice = False
        """The last wait ended without a notice while notices were trusted."""

    async def __aenter__(self) -> Wakeups:
        if self._db.engine.dialect.name == "postgresql":
            self._listener = _listener_for(self._db)
            self._listener.add(self._run_key, self)
            try:
                await self._listener.started.wait()
            except BaseException:  # cancelled before the block began: its exit never runs
                self._listener.remove(self._run_key, self)
                raise
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        if self._listener is not None:
            self._listener.remove(self._run_key, self)

    async def wait(self) -> None:
        trusting = self._listener is not None and self._listener.delivers
        interval = FALLBACK_INTERVAL if trusting else POLL_INTERVAL
        try:
            await asyncio.wait_for(self._notice.wait(), interval.total_seconds())
            self._expected_notice = False
        except TimeoutError:
            self._expected_notice = trusting
        self._notice.clear()

    async def read(self, found_events: bool) -> None:
        """Say what the read after a wait found. Events that no notice announced, and none that
        follows within NOTICE_GRACE (one in flight as the wait ended), mean notices do not reach
        this process (a connection pooler in transaction mode passes no LISTEN on): its readers
        poll from then on."""
        if not (found_events and self._expected_notice and self._listener is not None):
            return
        self._expected_notice = False
        try:
            await asyncio.wait_for(self._notice.wait(), NOTICE_GRACE.total_seconds())
        except TimeoutError:
            self._listener.distrust()

    def notify(self) -> None:
        self._notice.set()


class _Listener:
    """One listening connection for the readers of one database in this process."""

    def __init__(self, conninfo: str, on_stop: Callable[[], object]) -> None:
        self._conninfo = conninfo
        self._on_stop = on_stop
        self._readers: dict[str, set[Wakeups]] = {}
        self.listening = False
        self._trusted = True
        self.started = asyncio.Event()
        """Set once the first connection listens, or has failed: a reader starts reading then."""
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="perdure stream notices")

    @property
    def delivers(self) -> bool:
        """Readers can wait for notices: the connection listens, and no notice has gone missing."""
        return self.listening and self._trusted

    def distrust(self) -> None:
        if self._trusted:
            self._trusted = False
            log.warning(
                "stream notices: a reader found events no notice announced (LISTEN needs a session, "
                "not a pooler in transaction mode); this process's readers poll every %g ms",
                POLL_INTERVAL.total_seconds() * 1000,
            )

    def add(self, run_key: str, wakeups: Wakeups) -> None:
        self._readers.setdefault(run_key, set()).add(wakeups)

    def remove(self, run_key: str, wakeups: Wakeups) -> None:
        """Forget a reader; with none left, stop listening."""
        readers = self._readers.get(run_key, set())
        readers.discard(wakeups)
        if not readers:
            self._readers.pop(run_key, None)
        if not self._readers:
            self._task.cancel()
            self._on_stop()

    async def _listen(self) -> None:
        import psycopg  # here, not at the top: a process on SQLite never loads it

        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.listening, failures = True, 0
                    self.started.set()
                    self._wake_all()  # a write may have come while nobody listened
                    async for notice in connection.notifies():
                        for wakeups in self._readers.get(notice.payload, ()):
                            wakeups.notify()
            except psycopg.Error as err:
                log.warning("stream notices: %s; readers poll until the listener is back", _first_line(err))
            self.listening = False
            self.started.set()
            self._wake_all()
            await asyncio.sleep(RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)])
            failures += 1

    def _wake_all(self) -> None:
        for readers in self._readers.values():
            for wakeups in readers:
                wakeups.notify()


def _first_line(err: BaseException) -> str:
    """An error's first line: psycopg's messages say what failed without the connection string."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


_listeners: dict[tuple[asyncio.AbstractEventLoop, str], _Listener] = {}
"""The listener of each database, per event loop, while it has readers."""


def _listener_for(db: Database) -> _Listener:
    key = (asyncio.get_running_loop(), db.url)
    listener = _listeners.get(key)
    if listener is None:
        conninfo = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        listener = _listeners[key] = _Listener(conninfo, on_stop=lambda: _listeners.pop(key, None))
    return listener
