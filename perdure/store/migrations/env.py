"""Alembic's entry point for Perdure's migrations, run by `perdure.store.schema` on a connection
it opened (Alembic is configured in code: no alembic.ini at run time)."""

from __future__ import annotations

from alembic import context

from perdure.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite changes most columns by copying the table; batch mode does that for a migration.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
