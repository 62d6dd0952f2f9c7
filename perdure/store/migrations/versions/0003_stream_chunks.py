"""A run's stream in the database: token chunks and committed events, one offset space per run.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_chunks",
        sa.Column("run_key", sa.String(length=64), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("dedup_key", sa.String(length=100), nullable=True),
        sa.UniqueConstraint("run_key", "dedup_key", name="uq_stream_chunks_dedup"),
    )
    op.create_index("ix_stream_chunks_agent_id", "stream_chunks", ["agent_id"])


def downgrade() -> None:
    op.drop_index("ix_stream_chunks_agent_id", table_name="stream_chunks")
    op.drop_table("stream_chunks")
