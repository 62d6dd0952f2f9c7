"""Custom tools: every version of a tool's definition, and each agent's tool variables.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_versions",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("version", sa.String(length=64), primary_key=True),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "agent_tool_variables",
        sa.Column("agent_id", sa.String(length=64), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(length=200), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_tool_variables")
    op.drop_table("tool_versions")
