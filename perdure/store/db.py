"""Engine and sessions, for SQLite (the embedded default) and PostgreSQL (production).

The schema is made and changed by the migrations in `perdure.store.schema`: `get_database`,
which every entry point uses, refuses a database they have not brought up to date.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.util import identity_key

from perdure.store.schema import check_schema, upgrade_schema


def driver_url(url: str) -> str:
    """Use psycopg 3 for a plain `postgresql://` URL (SQLAlchemy would pick psycopg2, not installed)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


AFTER_COMMIT = "perdure_after_commit"
"""The `session.info` key of what a transaction runs after its commit: a stream's notice
(`perdure.store.stream_notify`), which must not hold the commit's locks."""


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url)
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            # Enough connections for every activity thread of a worker (16) plus its client.
            self.engine = create_engine(driver_url(url), pool_pre_ping=True, pool_size=5, max_overflow=20)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine.execution_options(perdure_read_only=True), expire_on_commit=False)

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any error. A read-only one
        takes no write lock on SQLite, so readers run side by side. What a writer puts in
        `session.info[AFTER_COMMIT]` runs once the transaction has committed, outside it."""
        with (self._readers if read_only else self._sessions).begin() as session:
            yield session
        for after in session.info.get(AFTER_COMMIT, ()):
            after()


def upsert_statement(session: Session, table: Any) -> Any:
    """The dialect's INSERT, which has `ON CONFLICT`: a write that two workers (or a retried
    activity and the attempt it replaces) make at once lands once, on either database.
    Checking first and inserting after would let both see nothing and one fail on PostgreSQL.

    The statement is built on the table, not the mapped class, so it runs as a plain Core
    statement: the ORM's bulk-insert handling of a mapped class was a measurable share of a
    step's worker CPU (`python bench/profile_steps.py`). The session's pending changes are
    flushed first, as the ORM path's autoflush did, so the row can refer to them."""
    session.flush()
    return dialect_insert(session.get_bind().dialect.name, getattr(table, "__table__", table))


def dialect_insert(dialect_name: str, table: Table) -> Any:
    """The INSERT with `ON CONFLICT` of the dialect named `dialect_name` (see `upsert_statement`),
    for a statement built once per dialect and kept: building a statement, not running it, is
    most of a short statement's CPU."""
    return (postgresql if dialect_name == "postgresql" else sqlite).insert(table)


def forget_loaded(session: Session, row_type: type[Any], key: object) -> None:
    """Expire the session's copy of a row a Core statement just changed, if it holds one, so an
    ORM read later in the transaction sees the new values instead of the copy. Callers flush
    first: expiring a copy with unflushed changes would drop them."""
    loaded = session.identity_map.get(identity_key(row_type, key))
    if loaded is not None:
        session.expire(loaded)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Hand transaction control to SQLAlchemy, and set the pragmas.

    Python's sqlite3 driver opens and commits transactions on its own schedule, which breaks
    savepoints: a tool's edit inside `begin_nested()` reached the disk before the record of its
    result, so a crash in between would apply the edit twice on retry. With the driver's
    isolation level off, `_sqlite_begin` starts every transaction explicitly (SQLAlchemy's
    documented recipe). WAL lets the CLI read while the worker writes; the busy timeout rides
    out short locks.
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    """IMMEDIATE takes the write lock up front, so concurrent writers wait on the busy timeout
    instead of failing when a read lock cannot be upgraded; readers need no lock (WAL)."""
    read_only = connection.get_execution_options().get("perdure_read_only", False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@lru_cache(maxsize=8)
def get_database(url: str) -> Database:
    """The process's database for `url`, once its schema is known to be current: a worker, the
    CLI or a server started against an out-of-date database says so instead of failing later."""
    database = Database(url)
    check_schema(database.engine)
    return database


def upgrade_database(url: str, target: str = "head") -> tuple[str | None, str]:
    """Bring the database at `url` to this release's schema, or to `target`, made from nothing
    if need be; return the revision before and after."""
    database = Database(url)
    try:
        return upgrade_schema(database.engine, target)
    finally:
        database.engine.dispose()


def error_line(err: BaseException) -> str:
    """A database error's first line: the driver's own message, without the statement and its
    parameters SQLAlchemy appends, or the connection string (psycopg's messages name the host
    and port, never the password)."""
    return (str(getattr(err, "orig", None) or err).strip().splitlines() or [type(err).__name__])[0]
