"""Telling a run's stream readers that it has new rows: on PostgreSQL, `NOTIFY perdure_stream`
with the run's key, once the write has committed (`perdure.store.stream_notices` listens).

The notice goes out after the write, in a transaction of its own that does not wait for the
disk: PostgreSQL lets one notifying transaction commit at a time across the whole server,
holding a lock through the commit's flush, so a notice inside every step's and token's write
would queue all their commits behind one another. A writer only hands its run's key to the
process's sender thread for that database, which sends one notice transaction at a time,
carrying every key handed over meanwhile: under load the notice transactions grow instead of
multiplying, and no writer waits for them.
"""

from __future__ import annotations

import logging
import threading
import weakref

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from perdure.store.db import AFTER_COMMIT, error_line

CHANNEL = "perdure_stream"
_NOTIFY = text(
    "WITH no_flush_wait AS (SELECT set_config('synchronous_commit', 'off', true))"
    f" SELECT pg_notify('{CHANNEL}', run_key) FROM no_flush_wait, unnest(CAST(:run_keys AS text[])) AS run_key"
)
"""One statement, run in autocommit: a transaction of its own, which commits without waiting for
the disk (the setting is local to it)."""
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
    """The notices of one database from this process, sent by a thread of their own."""

    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)
        """Weak, so an engine nobody uses any more goes, and its sender thread with it."""
        self._pending: set[str] = set()
        self._handed = threading.Condition()
        self._sender = threading.Thread(target=self._send_while_engine_lives, name=f"{CHANNEL} notices", daemon=True)
        self._sender.start()

    def send(self, run_keys: set[str]) -> None:
        """Hand the keys over and return: a writer never waits for, or fails with, its notice."""
        with self._handed:
            self._pending |= run_keys
            self._handed.notify()

    def _send_while_engine_lives(self) -> None:
        while True:
            with self._handed:
                while not self._pending:
                    self._handed.wait(timeout=60)
                    if self._engine() is None:
                        return
                batch, self._pending = self._pending, set()
            engine = self._engine()
            if engine is None:
                return
            _send(engine, batch)
            del engine


def _send(engine: Engine, run_keys: set[str]) -> None:
    """A failure is one warning: readers read at their next interval, and the sender goes on."""
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(_NOTIFY, {"run_keys": sorted(run_keys)})
    except Exception as err:  # the pool, the network, the server: the next batch may fare better
        log.warning("stream notices not sent (readers read at their next interval): %s", error_line(err))


_notifiers: weakref.WeakKeyDictionary[Engine, Notifier] = weakref.WeakKeyDictionary()
_notifiers_lock = threading.Lock()


def notifier_for(engine: Engine) -> Notifier:
    """The process's notifier for `engine`'s database, started on first use."""
    with _notifiers_lock:
        notifier = _notifiers.get(engine)
        if notifier is None:
            notifier = _notifiers[engine] = Notifier(engine)
        return notifier
