"""Schema migrations with Alembic, configured in code so an installed `perdure` finds its own.

`perdure db upgrade` (and `perdure dev`, for its own database) applies what is pending; every
other entry point calls `check_schema` and refuses a database that is behind, so a worker never
writes rows the schema cannot hold.

Alembic is imported only to migrate or to explain a mismatch: checking a database at the head
revision, which every worker and CLI start does, reads the head from the migration files' names
and the current revision by one query, so a worker does not carry Alembic's 10 MiB.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"
VERSION_TABLE = "alembic_version"
UPGRADE_HINT = "run `perdure db upgrade`"
MIGRATION_LOCK_KEY = 0x5045_5244_5552_45
"""PostgreSQL advisory lock held while migrating, so two `perdure db upgrade` take turns."""


class SchemaOutOfDateError(Exception):
    """The database's schema is not the one this release writes: one line saying what to run
    (not a RuntimeError, which the CLI reads as an unreachable Temporal)."""


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision: each migration's file name begins with its revision, numbered one
    after another (`tests/test_migrations.py` holds this to Alembic's own head)."""
    revisions = sorted(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))
    if not revisions:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}")
    return revisions[-1]


def current_revision(engine: Engine) -> str | None:
    """The revision Alembic recorded, read directly: configuring Alembic to ask would log two
    INFO lines in every worker and CLI start."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one_or_none()


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def check_schema(engine: Engine) -> None:
    """Raise `SchemaOutOfDateError` unless the database is at this release's head revision."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise SchemaOutOfDateError(f"the database {where} has no Perdure schema yet: {UPGRADE_HINT}")
    if current not in known_revisions():
        raise SchemaOutOfDateError(
            f"the database {where} is at revision {current}, newer than this Perdure knows ({head}): upgrade Perdure"
        )
    raise SchemaOutOfDateError(
        f"the database {where} is at revision {current}, this Perdure needs {head}: {UPGRADE_HINT}"
    )


def upgrade_schema(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Apply pending revisions (up to `target`); return the revision before and after.

    A database made before migrations existed (Perdure's tables, no version table) holds the
    first revision's schema, so it is stamped with it rather than created again.
    """
    from alembic import command
    from alembic.migration import MigrationContext

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config = _config(connection)
        before = MigrationContext.configure(connection).get_current_revision()
        if before is None and inspect(connection).has_table("agents"):
            command.stamp(config, FIRST_REVISION)
            before = FIRST_REVISION
        command.upgrade(config, target)
        after = MigrationContext.configure(connection).get_current_revision()
    return before, after or head_revision()
