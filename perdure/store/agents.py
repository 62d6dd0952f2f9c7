"""Agents and their memory blocks.

The system message (in-context position 0) is rewritten whenever a block changes, in the same
transaction as the change, so the next LLM request sees the new memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, delete, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from perdure.prompt import compile_system_prompt
from perdure.schemas.agent import AgentState, Block, BlockCreate, LLMConfig, ToolRule
from perdure.schemas.messages import Message, TextContent
from perdure.store.db import forget_loaded
from perdure.store.errors import NotFoundError
from perdure.store.messages import (
    AGENTS,
    StoredMessage,
    insert_messages,
    load_stored_message,
    locking_select,
    replace_message,
)
from perdure.tool_rules import ToolRulesSolver
from perdure.store.tables import (
    AgentRow,
    AgentToolVariableRow,
    BlockRow,
    MessageRow,
    PassageRow,
    RunRow,
    StepRow,
    StreamChunkRow,
)
from pydantic import BaseModel, TypeAdapter

_RULES = TypeAdapter(list[ToolRule])
BLOCKS = cast(Table, BlockRow.__table__)


def insert_agent(
    session: Session,
    *,
    agent_id: str,
    name: str,
    system: str,
    description: str | None,
    blocks: list[BlockCreate],
    tools: list[str],
    tool_rules: list[ToolRule],
    llm_config: LLMConfig,
    system_message_id: str,
    approval_timeout_seconds: float | None = None,
) -> AgentState:
    row = AgentRow(
        id=agent_id,
        name=name,
        system=system,
        description=description,
        tools=tools,
        tool_rules=_RULES.dump_python(tool_rules, mode="json"),
        llm_config=llm_config.model_dump(mode="json"),
        message_ids=[system_message_id],
        approval_timeout_seconds=approval_timeout_seconds,
    )
    session.add(row)
    for position, block in enumerate(blocks):
        session.add(
            BlockRow(
                id=f"block-{agent_id.removeprefix('agent-')}-{position}",
                agent_id=agent_id,
                position=position,
                **block.model_dump(),
            )
        )
    session.flush()
    state = get_agent(session, agent_id)
    system_message = Message(
        id=system_message_id,
        agent_id=agent_id,
        role="system",
        content=[
            TextContent(text=compile_system_prompt(system, state.blocks, _rule_prompts(state.tool_rules, state.tools)))
        ],
    )
    insert_messages(session, [system_message])
    return state


def get_agent(session: Session, agent_id: str) -> AgentState:
    row = session.get(AgentRow, agent_id)
    if row is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    return _to_state(session, row)


class RunAgent(BaseModel):
    """What a run's begin reads of the agent: `get_agent` without the blocks and the columns a
    run does not need, read by one Core select instead of an ORM load."""

    id: str
    name: str
    tools: list[str]
    tool_rules: list[ToolRule]
    llm_config: LLMConfig
    approval_timeout_seconds: float | None
    message_ids: list[str]


_RUN_AGENT = select(
    AGENTS.c.id,
    AGENTS.c.name,
    AGENTS.c.tools,
    AGENTS.c.tool_rules,
    AGENTS.c.llm_config,
    AGENTS.c.approval_timeout_seconds,
    AGENTS.c.message_ids,
).where(AGENTS.c.id == bindparam("agent_id"))


def load_run_agent(session: Session, agent_id: str) -> RunAgent:
    """The agent as a run's begin needs it, as `context.load_request_agent` reads it for a request."""
    row = session.execute(_RUN_AGENT, {"agent_id": agent_id}).one_or_none()
    if row is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    return RunAgent.model_validate(row._asdict())


def list_agents(session: Session) -> list[AgentState]:
    rows = session.scalars(select(AgentRow).order_by(AgentRow.created_at)).all()
    return [_to_state(session, row) for row in rows]


def delete_agent(session: Session, agent_id: str) -> None:
    if session.get(AgentRow, agent_id) is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    for table in (BlockRow, MessageRow, PassageRow, StepRow, RunRow, StreamChunkRow, AgentToolVariableRow):
        session.execute(delete(table).where(table.agent_id == agent_id))
    session.execute(delete(AgentRow).where(AgentRow.id == agent_id))


_BLOCKS = (
    select(BLOCKS.c.id, BLOCKS.c.label, BLOCKS.c.value, BLOCKS.c.limit, BLOCKS.c.read_only, BLOCKS.c.description)
    .where(BLOCKS.c.agent_id == bindparam("agent_id"))
    .order_by(BLOCKS.c.position)
)
_SET_BLOCK_VALUE = (
    update(BLOCKS)
    .where(BLOCKS.c.agent_id == bindparam("owner_id"), BLOCKS.c.label == bindparam("block_label"))
    .values(value=bindparam("new_value"))
)
"""Blocks are read and changed only with these Core statements, built once (building a statement
was a large share of a memory tool's CPU); the ORM only adds blocks, so no ORM read can see a
copy of a block an update left behind."""


def get_blocks(session: Session, agent_id: str) -> list[Block]:
    session.flush()
    return [
        Block(
            id=r.id,
            label=r.label,
            value=r.value,
            limit=r.limit,
            read_only=r.read_only,
            description=r.description,
        )
        for r in session.execute(_BLOCKS, {"agent_id": agent_id})
    ]


@dataclass(frozen=True)
class LockedAgent:
    """What compiling an agent's system message needs of its row, read with the row locked:
    a memory tool locks the agent once and hands this to the edits it makes."""

    id: str
    system: str
    tools: list[str]
    tool_rules: list[Any]
    system_message_id: str


_LOCK_FOR_MEMORY_EDIT = locking_select(AGENTS.c.system, AGENTS.c.tools, AGENTS.c.tool_rules, AGENTS.c.message_ids)


def try_lock_for_memory_edit(session: Session, agent_id: str) -> LockedAgent | None:
    """The agent's row (None if there is none), locked as `messages.try_lock_agent` locks it."""
    session.flush()
    forget_loaded(session, AgentRow, agent_id)
    row = session.execute(_LOCK_FOR_MEMORY_EDIT, {"agent_id": agent_id}).one_or_none()
    if row is None:
        return None
    return LockedAgent(
        id=agent_id,
        system=row.system,
        tools=list(row.tools),
        tool_rules=row.tool_rules,
        system_message_id=row.message_ids[0],
    )


def lock_for_memory_edit(session: Session, agent_id: str) -> LockedAgent:
    agent = try_lock_for_memory_edit(session, agent_id)
    if agent is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    return agent


def set_block_value(session: Session, agent_id: str, label: str, value: str) -> None:
    """Change a block and recompile the stored system message in the same transaction."""
    set_locked_block_value(session, lock_for_memory_edit(session, agent_id), label, value)


def set_locked_block_value(session: Session, agent: LockedAgent, label: str, value: str) -> None:
    """`set_block_value` for an agent this transaction has already locked."""
    values = {"owner_id": agent.id, "block_label": label, "new_value": value}
    changed = cast(CursorResult[Any], session.execute(_SET_BLOCK_VALUE, values))
    if changed.rowcount != 1:
        raise NoResultFound(f"agent '{agent.id}' has no block '{label}'")
    rebuild_system_message(session, agent)


def add_block(session: Session, agent: LockedAgent, block: BlockCreate) -> None:
    """Add a block to an agent this transaction has already locked."""
    position = len(get_blocks(session, agent.id))
    session.add(
        BlockRow(
            id=f"block-{agent.id.removeprefix('agent-')}-{position}",
            agent_id=agent.id,
            position=position,
            **block.model_dump(),
        )
    )
    session.flush()
    rebuild_system_message(session, agent)


def rebuild_system_message(session: Session, agent: LockedAgent) -> None:
    stored = load_stored_message(session, agent.system_message_id)
    rules = _RULES.validate_python(agent.tool_rules)
    text = compile_system_prompt(agent.system, get_blocks(session, agent.id), _rule_prompts(rules, agent.tools))
    if stored.message.text != text:
        rewritten = stored.message.model_copy(update={"content": [TextContent(text=text)]})
        replace_message(session, StoredMessage(seq=stored.seq, message=rewritten))


def _rule_prompts(rules: list[ToolRule], tools: list[str]) -> list[str]:
    """The rules' <tool_usage_rules> texts, as Letta renders them into the system prompt."""
    return ToolRulesSolver(rules, tools).rule_prompts()


def _to_state(session: Session, row: AgentRow) -> AgentState:
    return AgentState(
        id=row.id,
        name=row.name,
        system=row.system,
        description=row.description,
        blocks=get_blocks(session, row.id),
        tools=list(row.tools),
        tool_rules=_RULES.validate_python(row.tool_rules),
        llm_config=LLMConfig.model_validate(row.llm_config),
        message_ids=list(row.message_ids),
        created_at=row.created_at,
        last_stop_reason=row.last_stop_reason,
        approval_timeout_seconds=row.approval_timeout_seconds,
    )
