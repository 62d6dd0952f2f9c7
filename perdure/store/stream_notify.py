"""Telling a run's stream readers that it has new rows: on PostgreSQL, `NOTIFY perdure_stream`
with the run's key, once the write has committed (`perdure.store.stream_notices` listens).

The notice goes out after the write, in a transaction of its own that does not wait for the
disk: PostgreSQL lets one notifying transaction commit at a time across the whole server,
holding a lock through the commit's flush, so a notice inside every step's and token's write
would queue all their commits behind one another. A writer only hands its run's key to the
process's sender thread for that database, which sends one notice statement at a time on a
connection of its own, carrying every key handed over meanwhile: under load the notices grow
instead of multiplying, and no writer waits for them.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from perdure.store.db import AFTER_COMMIT, error_line

CHANNEL = "perdure_stream"
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', run_key) FROM unnest(CAST(%s AS text[])) AS run_key"
SENDER_NAME = "perdure-stream-notify"
"""The sending connection's `application_name`, as `pg_stat_activity` shows it."""
_PENDING = "perdure_stream_notices"
"""The `session.info` key of the runs a transaction wrote to, told once it has committed."""

log = logging.getLogger(__name__)


def notify_after_commit(session: Session, run_key: str) -> None:
    """Tell the run's readers once the session's transaction has committed (on PostgreSQL;
    callers check the dialect)."""
    pending: set[str] = session.info.setdefault(_PENDING, set())
    if not pending:
        notifier = notifier_for(session.get_bind().engine)
        session.info.setdefault(AFTER_COMMIT, []).append(lambda: notifier.send(pending))
    pending.add(run_key)


class Notifier:
    """The notices of one database from this process, sent by a thread of their own on a
    connection of its own: in autocommit, with `synchronous_commit` off for that connection
    alone, so a notice is one statement and one round trip, and no pool connection is held."""

    def __init__(self, engine: Engine) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._pending: set[str] = set()
        self._handed = threading.Condition()
        threading.Thread(target=self._send_forever, name=f"{CHANNEL} notices", daemon=True).start()

    def send(self, run_keys: set[str]) -> None:
        """Hand the keys over and return: a writer never waits for, or fails with, its notice."""
        with self._handed:
            self._pending |= run_keys
            self._handed.notify()

    def _send_forever(self) -> None:
        import psycopg  # here, not at the top: a process on SQLite never loads it

        connection: psycopg.Connection | None = None
        while True:
            with self._handed:
                while not self._pending:
                    self._handed.wait()
                batch, self._pending = self._pending, set()
            try:
                if connection is None or connection.closed:
                    connection = psycopg.connect(
                        self._conninfo, autocommit=True, application_name=SENDER_NAME, connect_timeout=10
                    )
                    connection.execute("SET synchronous_commit = off")
                connection.execute(_NOTIFY, (sorted(batch),))
            except Exception as err:  # the network, the server: the next batch connects again
                log.warning("stream notices not sent (readers read at their next interval): %s", error_line(err))
                if connection is not None:
                    connection.close()


_notifiers: dict[str, Notifier] = {}
"""The process's notifier of each database, by URL: one sending connection each, for the process's life."""
_notifiers_lock = threading.Lock()


def notifier_for(engine: Engine) -> Notifier:
    """The process's notifier for `engine`'s database, started on first use."""
    key = engine.url.render_as_string(hide_password=False)
    with _notifiers_lock:
        notifier = _notifiers.get(key)
        if notifier is None:
            notifier = _notifiers[key] = Notifier(engine)
        return notifier
