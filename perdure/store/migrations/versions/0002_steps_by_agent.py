"""Index steps by agent: deleting an agent removes its steps without reading the whole table.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_steps_agent_id", "steps", ["agent_id"])


def downgrade() -> None:
    op.drop_index("ix_steps_agent_id", table_name="steps")
