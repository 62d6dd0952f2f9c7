"""Runs keep their turn key in an indexed column: a retried send is found by one indexed read,
instead of by parsing the requests of the agent's latest 200 runs on every send.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BACKFILL_PAGE = 1000
"""Runs read and keyed at a time, so a large store is not held in memory at once."""


def upgrade() -> None:
    op.add_column("runs", sa.Column("turn_key", sa.String(length=32), nullable=True))
    op.create_index("ix_runs_agent_id_turn_key", "runs", ["agent_id", "turn_key"])
    connection = op.get_bind()
    runs = sa.table("runs", sa.column("id", sa.String), sa.column("request", sa.JSON), sa.column("turn_key", sa.String))
    page = sa.select(runs.c.id, runs.c.request).where(runs.c.id > sa.bindparam("after")).order_by(runs.c.id)
    fill = runs.update().where(runs.c.id == sa.bindparam("run_id")).values(turn_key=sa.bindparam("key"))
    after = ""
    while rows := connection.execute(page.limit(BACKFILL_PAGE), {"after": after}).all():
        keyed = [{"run_id": row.id, "key": key} for row in rows if (key := _turn_key(row.request)) is not None]
        if keyed:
            connection.execute(fill, keyed)
        after = rows[-1].id


def downgrade() -> None:
    op.drop_index("ix_runs_agent_id_turn_key", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("turn_key")


def _turn_key(request: Any) -> str | None:
    """The turn key of a stored request, as this revision's `SendMessageRequest.turn_key` makes
    it (written out here so that the migration keeps its meaning when that code changes): the
    hash of its user messages' otids; None for answers alone or a message without an otid."""
    if isinstance(request, str):
        request = json.loads(request)
    messages = request.get("messages", []) if isinstance(request, dict) else []
    otids = [m.get("otid") for m in messages if isinstance(m, dict) and m.get("type", "message") == "message"]
    string_otids = [otid for otid in otids if isinstance(otid, str)]
    if not otids or len(string_otids) < len(otids):
        return None
    return hashlib.sha256("\n".join(string_otids).encode()).hexdigest()[:32]
