"""SQLAlchemy tables. Rows keep pydantic payloads in JSON columns next to the columns we query."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class AgentRow(Base):
    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    system: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    tools: Mapped[list[Any]] = mapped_column(JSON)
    tool_rules: Mapped[list[Any]] = mapped_column(JSON)
    llm_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    message_ids: Mapped[list[Any]] = mapped_column(JSON)
    context_version: Mapped[int] = mapped_column(Integer, default=0)
    last_stop_reason: Mapped[str | None] = mapped_column(String(64))
    approval_timeout_seconds: Mapped[float | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BlockRow(Base):
    __tablename__ = "blocks"
    __table_args__ = (UniqueConstraint("agent_id", "label"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(Text)
    limit: Mapped[int] = mapped_column(Integer)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer, default=0)


class ToolRow(Base):
    __tablename__ = "tools"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)


class ToolVersionRow(Base):
    """Every version a custom tool has had: a run calls the version it started with, even after an edit."""

    __tablename__ = "tool_versions"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentToolVariableRow(Base):
    """An agent's tool variables (Letta's `tool_exec_environment_variables`): kept apart from its
    messages and state, read only by the activity that starts a sandbox."""

    __tablename__ = "agent_tool_variables"
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_agent_seq", "agent_id", "seq"),)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    step_id: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PassageRow(Base):
    __tablename__ = "passages"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_agent_id_turn_key", "agent_id", "turn_key"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    workflow_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    stop_reason: Mapped[str | None] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column()
    turn_key: Mapped[str | None] = mapped_column(String(32))
    """`SendMessageRequest.turn_key`: a client's retry of this run's send is found by it."""


class StepRow(Base):
    __tablename__ = "steps"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    step_number: Mapped[int] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    stop_reason: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    llm_request_ns: Mapped[int | None] = mapped_column(BigInteger)
    tool_execution_ns: Mapped[int | None] = mapped_column(BigInteger)
    step_ns: Mapped[int | None] = mapped_column(BigInteger)
    error_type: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ToolExecutionRow(Base):
    """The recorded result of a side-effecting tool call, so a retried activity does not run it twice."""

    __tablename__ = "tool_executions"
    tool_call_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    tool_return: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StreamChunkRow(Base):
    """One event of a run's stream: a token chunk the LLM activity wrote, or a committed step's
    or outcome's event. `seq` is the event's offset in the run's stream; `dedup_key` marks the
    first event of a write a retried activity must not repeat."""

    __tablename__ = "stream_chunks"
    __table_args__ = (UniqueConstraint("run_key", "dedup_key", name="uq_stream_chunks_dedup"),)
    run_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The Temporal run id of the run's workflow execution."""
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    event: Mapped[dict[str, Any]] = mapped_column(JSON)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    """The run's last event: readers stop after it."""
    dedup_key: Mapped[str | None] = mapped_column(String(100))


class McpServerRow(Base):
    """A registered MCP server. `env` and `headers` are secrets: read by the worker and the CLI only."""

    __tablename__ = "mcp_servers"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    transport: Mapped[str] = mapped_column(String(16))
    command: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    env: Mapped[dict[str, Any]] = mapped_column(JSON)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON)
    timeout_seconds: Mapped[float] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class McpRunToolRow(Base):
    """The MCP tools one run offers, as listed when it began: the LLM requests read their schemas here."""

    __tablename__ = "mcp_run_tools"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    function_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    server_name: Mapped[str] = mapped_column(String(64))
    tool_name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
