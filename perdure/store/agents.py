"""Agents and their memory blocks.

The system message (in-context position 0) is rewritten whenever a block changes, in the same
transaction as the change, so the next LLM request sees the new memory.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from perdure.prompt import compile_system_prompt
from perdure.schemas.agent import AgentState, Block, BlockCreate, LLMConfig, ToolRule
from perdure.schemas.messages import Message, TextContent
from perdure.store.errors import NotFoundError
from perdure.store.messages import insert_messages, load_message, lock_agent, replace_message
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
from pydantic import TypeAdapter

_RULES = TypeAdapter(list[ToolRule])


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


def list_agents(session: Session) -> list[AgentState]:
    rows = session.scalars(select(AgentRow).order_by(AgentRow.created_at)).all()
    return [_to_state(session, row) for row in rows]


def delete_agent(session: Session, agent_id: str) -> None:
    if session.get(AgentRow, agent_id) is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    for table in (BlockRow, MessageRow, PassageRow, StepRow, RunRow, StreamChunkRow, AgentToolVariableRow):
        session.execute(delete(table).where(table.agent_id == agent_id))
    session.execute(delete(AgentRow).where(AgentRow.id == agent_id))


def get_blocks(session: Session, agent_id: str) -> list[Block]:
    rows = session.scalars(select(BlockRow).where(BlockRow.agent_id == agent_id).order_by(BlockRow.position)).all()
    return [
        Block(
            id=r.id,
            label=r.label,
            value=r.value,
            limit=r.limit,
            read_only=r.read_only,
            description=r.description,
        )
        for r in rows
    ]


def set_block_value(session: Session, agent_id: str, label: str, value: str) -> None:
    """Change a block and recompile the stored system message in the same transaction."""
    lock_agent(session, agent_id)
    row = session.scalars(select(BlockRow).where(BlockRow.agent_id == agent_id, BlockRow.label == label)).one()
    row.value = value
    session.flush()
    rebuild_system_message(session, agent_id)


def add_block(session: Session, agent_id: str, block: BlockCreate) -> None:
    lock_agent(session, agent_id)
    position = len(get_blocks(session, agent_id))
    session.add(
        BlockRow(
            id=f"block-{agent_id.removeprefix('agent-')}-{position}",
            agent_id=agent_id,
            position=position,
            **block.model_dump(),
        )
    )
    session.flush()
    rebuild_system_message(session, agent_id)


def rebuild_system_message(session: Session, agent_id: str) -> None:
    agent = session.get(AgentRow, agent_id)
    if agent is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    system_id = agent.message_ids[0]
    message = load_message(session, system_id)
    rules = _RULES.validate_python(agent.tool_rules)
    text = compile_system_prompt(agent.system, get_blocks(session, agent_id), _rule_prompts(rules, list(agent.tools)))
    if message.text != text:
        replace_message(session, message.model_copy(update={"content": [TextContent(text=text)]}))


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
