"""When a stream reader reads again: when told, on PostgreSQL; every 10 ms, on SQLite.

A write to a run's stream on PostgreSQL is followed, once committed, by `NOTIFY perdure_stream`
with the run's key (`perdure.store.stream_notify`). A process reading streams keeps one connection
listening on that channel for as long as it has a reader, and wakes the readers of the run a
notice names. A reader of a quiet run reads every FALLBACK_INTERVAL instead of every 10 ms,
and one of a busy run after each write.

A notice is only a hint to read: a reader reads the table after waking, so a lost notice delays
a reader and never loses an event. Readers poll every POLL_INTERVAL until the listener listens
and while it reconnects. A read that finds events no notice announced, with none following, is
a missed notice: a connection that has had notices is made anew (it may have died unseen), and
one that never had any after MISSES_TO_DISTRUST misses makes the process poll that database
for good (a connection pooler in transaction mode between Perdure and PostgreSQL drops LISTEN's
notices). SQLite has no such channel; its readers, usually on the worker's machine, poll.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from perdure.store.db import Database, error_line
from perdure.store.stream_notify import CHANNEL

POLL_INTERVAL = timedelta(milliseconds=10)
"""How often a reader that cannot be told reads: on SQLite, and on PostgreSQL while not listening."""
FALLBACK_INTERVAL = timedelta(milliseconds=250)
"""The longest a listening reader waits without a notice (a run that ends without a last event,
a terminated one, shows only to a reader that looks)."""
MISSES_TO_DISTRUST = 3
"""Missed notices on a connection that has had none, after which a process stops waiting for them."""
MISS_WINDOW = timedelta(milliseconds=100)
"""Misses reported this close together are one: every reader of a run misses the same notice."""
RECONNECT_DELAYS_S = (0.1, 0.5, 1.0, 5.0)
"""How long the listener waits before connecting again after losing its connection, growing to the last."""
LISTENER_NAME = "perdure-stream-notices"
"""The listening connection's `application_name`, as `pg_stat_activity` shows it."""

log = logging.getLogger(__name__)

_distrusted: set[str] = set()
"""The databases (by URL) whose notices do not reach this process: their readers poll."""


class Wakeups:
    """A reader's wake-ups for the run `run_key` (its Temporal run id), as `async with
    Wakeups(db, run_key) as wakeups`. `wait` returns at once when a notice came since it last
    returned, so a notice that arrives while the reader reads is not lost.

    A class rather than an async generator: a reader left unfinished (a closed pipe) is closed
    when its loop shuts down, and the loop may close a generator inside it first."""

    def __init__(self, db: Database, run_key: str) -> None:
        self._db = db
        self._run_key = run_key
        self._listener: _Listener | None = None
        self._notice = asyncio.Event()
        self._unannounced_wait = False
        """The last wait ended without a notice while this reader waited for one."""
        self._suspect = False
        """The read after that wait found events: unless a notice follows, one went missing."""

    async def __aenter__(self) -> Wakeups:
        if self._db.engine.dialect.name == "postgresql" and self._db.url not in _distrusted:
            self._listener = _listener_for(self._db)
            self._listener.add(self._run_key, self)
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        if self._listener is not None:
            self._listener.remove(self._run_key, self)

    @property
    def told(self) -> bool:
        """Whether a write wakes this reader now: its process listens, and trusts the notices."""
        return self._listener is not None and self._listener.delivers

    async def wait(self) -> None:
        if not self.told:
            self._unannounced_wait = self._suspect = False
            await asyncio.sleep(POLL_INTERVAL.total_seconds())
            return
        try:
            await asyncio.wait_for(self._notice.wait(), FALLBACK_INTERVAL.total_seconds())
        except TimeoutError:
            pass
        noticed = self._notice.is_set()
        self._notice.clear()
        if self._suspect and not noticed and self._listener is not None:
            self._listener.missed()
        self._unannounced_wait, self._suspect = not noticed, False

    def after_read(self, found_events: bool) -> None:
        """Say what the read after a wait found. Events after a wait that no notice ended are
        suspect: a notice may be in flight (the next wait sees it), or lost (the next wait ends
        without one, and counts a missed notice)."""
        self._suspect = found_events and self._unannounced_wait

    def notify(self) -> None:
        self._notice.set()


class _Listener:
    """One listening connection for the readers of one database in this process."""

    def __init__(self, db: Database) -> None:
        self._url = db.url
        self._conninfo = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._readers: dict[str, set[Wakeups]] = {}
        self._loop = asyncio.get_running_loop()
        self._misses = 0
        self._last_miss = float("-inf")
        self._delivered = False
        """A notice has come on the current connection since its LISTEN."""
        self.listening = False
        self._task = self._loop.create_task(self._listen(), name=LISTENER_NAME)

    @property
    def delivers(self) -> bool:
        """Readers can wait for notices: the connection listens, and notices have not gone missing."""
        return self.listening and self._url not in _distrusted

    def missed(self) -> None:
        """A reader found events no notice announced. On a connection that has had notices, the
        connection may have died unseen: it is made anew. On one that never had any, notices do
        not come through (a pooler in transaction mode): after MISSES_TO_DISTRUST misses, the
        process polls this database for good. Several readers that miss one write count once."""
        now = self._loop.time()
        if now - self._last_miss < MISS_WINDOW.total_seconds():
            return
        self._last_miss = now
        if self._delivered:
            log.warning("stream notices: a write's notice did not come; listening again")
            self._restart()
            return
        self._misses += 1
        if self._misses >= MISSES_TO_DISTRUST and self._url not in _distrusted:
            _distrusted.add(self._url)
            self._task.cancel()
            log.warning(
                "stream notices: %d reads found events no notice announced (LISTEN needs a session, "
                "not a pooler in transaction mode); this process's readers poll every %g ms",
                self._misses,
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
            if _listeners.get((self._loop, self._url)) is self:
                del _listeners[(self._loop, self._url)]

    def _restart(self) -> None:
        self._task.cancel()
        self.listening = False
        self._task = self._loop.create_task(self._listen(), name=LISTENER_NAME)

    async def _listen(self) -> None:
        import psycopg  # here, not at the top: a process on SQLite never loads it

        failures = 0
        while True:
            try:
                # TCP keepalives: a connection whose server went away (a fail-over, a dropped NAT
                # mapping) fails within about a minute instead of waiting for notices forever.
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name=LISTENER_NAME,
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=10,
                    keepalives_count=3,
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.listening, self._delivered, failures = True, False, 0
                    self._wake_all()  # a write may have come before the LISTEN
                    async for notice in connection.notifies():
                        self._delivered = True
                        for wakeups in self._readers.get(notice.payload, ()):
                            wakeups.notify()
            except Exception as err:  # whatever failed, readers poll and the listener reconnects
                log.warning("stream notices: %s; readers poll until the listener is back", error_line(err))
            finally:
                self.listening = False
            self._wake_all()
            await asyncio.sleep(RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)])
            failures += 1

    def _wake_all(self) -> None:
        for readers in self._readers.values():
            for wakeups in readers:
                wakeups.notify()


_listeners: dict[tuple[asyncio.AbstractEventLoop, str], _Listener] = {}
"""The listener of each database, per event loop, while it has readers."""


def _listener_for(db: Database) -> _Listener:
    key = (asyncio.get_running_loop(), db.url)
    listener = _listeners.get(key)
    if listener is None:
        listener = _listeners[key] = _Listener(db)
    return listener
