"""Telling a run's stream readers that it has new rows: on PostgreSQL, `NOTIFY perdure_stream`
with the run's key, once the write has committed (`perdure.store.stream_notices` listens).

The notice goes out after the write, in a transaction of its own that does not wait for the
disk: PostgreSQL lets one notifying transaction commit at a time across the whole server,
holding a lock through the commit's flush, so a notice inside every step's and token's write
would queue all their commits behind one another. A process sends one notice transaction at a
time per database: keys that arrive while one is in flight go out together in the next, so
under load the notice transactions grow instead of multiplying.
"""

from __future__ import annotations

import logging
import threading
import weakref

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from perdure.store.db import AFTER_COMMIT, error_line

CHANNEL = "perdure_stream"
_NOTIFY = text(
    "WITH no_flush_wait AS (SELECT set_config('synchronous_commit', 'off', true))"
    f" SELECT pg_notify('{CHANNEL}', run_key) FROM no_flush_wait, unnest(CAST(:run_keys AS text[])) AS run_key"
)
"""One statement, run in autocommit: its own transaction, which commits without waiting for the
disk (the setting is local to it), so a notice costs one round trip."""
_PENDING = "perdure_stream_notices"
"""The `session.info` key of the runs a transaction wrote to, told once it has committed."""

log = logging.getLogger(__name__)


def notify_after_commit(session: Session, run_key: str) -> None:
    """Tell the run's readers once the session's transaction has committed (on PostgreSQL;
    callers check the dialect)."""
    pending: set[str] = session.info.setdefault(_PENDING, set())
    if not pending:
        notifier = _notifier_for(session.get_bind().engine)
        session.info.setdefault(AFTER_COMMIT, []).append(lambda: notifier.send(pending))
    pending.add(run_key)


class Notifier:
    """The notices of one database from this process: the writer that finds none in flight
    sends, for itself and for every writer whose keys arrive meanwhile."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._sending = False

    def send(self, run_keys: set[str]) -> None:
        """Never raises for the database: the rows are committed, and a writer that retried
        would write its events twice. A failure is one warning, and readers read at their next
        interval."""
        with self._lock:
            self._pending |= run_keys
            if self._sending:
                return
            self._sending = True
        try:
            while batch := self._take():
                self._send(batch)
        except BaseException:
            with self._lock:
                self._sending = False
            raise

    def _take(self) -> set[str]:
        with self._lock:
            batch, self._pending = self._pending, set()
            self._sending = bool(batch)
            return batch

    def _send(self, run_keys: set[str]) -> None:
        try:
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(_NOTIFY, {"run_keys": sorted(run_keys)})
        except DBAPIError as err:
            log.warning("stream notices not sent (readers read at their next interval): %s", error_line(err))


_notifiers: weakref.WeakKeyDictionary[Engine, Notifier] = weakref.WeakKeyDictionary()
_notifiers_lock = threading.Lock()


def _notifier_for(engine: Engine) -> Notifier:
    with _notifiers_lock:
        notifier = _notifiers.get(engine)
        if notifier is None:
            notifier = _notifiers[engine] = Notifier(engine)
        return notifier
