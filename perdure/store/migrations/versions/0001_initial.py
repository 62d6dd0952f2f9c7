"""The schema as it was when migrations began: agents, blocks, tools, messages, passages, runs,
steps and recorded tool executions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("system", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tools", sa.JSON(), nullable=False),
        sa.Column("tool_rules", sa.JSON(), nullable=False),
        sa.Column("llm_config", sa.JSON(), nullable=False),
        sa.Column("message_ids", sa.JSON(), nullable=False),
        sa.Column("context_version", sa.Integer(), nullable=False),
        sa.Column("last_stop_reason", sa.String(length=64), nullable=True),
        sa.Column("approval_timeout_seconds", sa.Double(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(length=64), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_messages_agent_seq", "messages", ["agent_id", "seq"])
    op.create_index("ix_messages_run_id", "messages", ["run_id"])
    op.create_table(
        "passages",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_passages_agent_id", "passages", ["agent_id"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stop_reason", sa.String(length=64), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("completed_at", UTC_TIME, nullable=True),
    )
    op.create_index("ix_runs_agent_id", "runs", ["agent_id"])
    op.create_table(
        "steps",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("step_number", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stop_reason", sa.String(length=64), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("total_tokens", sa.Integer(), nullable=False),
        sa.Column("llm_request_ns", sa.BigInteger(), nullable=True),
        sa.Column("tool_execution_ns", sa.BigInteger(), nullable=True),
        sa.Column("step_ns", sa.BigInteger(), nullable=True),
        sa.Column("error_type", sa.String(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_steps_run_id", "steps", ["run_id"])
    op.create_table(
        "tool_executions",
        sa.Column("tool_call_key", sa.String(length=200), primary_key=True),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("tool_return", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "tools",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("definition", sa.JSON(), nullable=False),
    )
    op.create_table(
        "blocks",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("agent_id", sa.String(length=64), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("limit", sa.Integer(), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.UniqueConstraint("agent_id", "label"),
    )
    op.create_index("ix_blocks_agent_id", "blocks", ["agent_id"])


def downgrade() -> None:
    for table in ("blocks", "tools", "tool_executions", "steps", "runs", "passages", "messages", "agents"):
        op.drop_table(table)
