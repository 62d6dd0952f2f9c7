"""Perdure's records in the shapes letta-client 1.12 reads: AgentState, Block, Tool, Run, and
the last touches on messages that Letta's clients rely on."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from perdure.schemas.agent import AgentState, Block, ToolRule
from perdure.schemas.letta import RunStatus, StopReasonType
from perdure.schemas.tools import ToolDef
from perdure.store.runs import RunInfo

AGENT_TYPE = "letta_v1_agent"
"""Perdure runs Letta's v3 loop, which Letta's API calls `letta_v1_agent`."""
ENDPOINT_TYPE = "openai"
"""Every provider here speaks OpenAI's chat completions."""
_PART_INDEX = {"reasoning_message": 0, "assistant_message": 1, "tool_call_message": 2}
"""Which part of a stored message a Letta message is, for its otid: the same in the stream
and in the history, so a client can match a streamed part to the stored one."""
_NOT_MESSAGES = frozenset({"stop_reason", "usage_statistics", "error_message", "ping", "attempt_started"})


class LettaBlock(BaseModel):
    id: str
    label: str
    value: str
    limit: int
    read_only: bool
    description: str | None = None


class LettaTool(BaseModel):
    id: str
    name: str
    description: str
    json_schema: dict[str, Any]
    tool_type: str
    return_char_limit: int
    default_requires_approval: bool
    enable_parallel_execution: bool


class LettaLLMConfig(BaseModel):
    model: str
    model_endpoint_type: str = ENDPOINT_TYPE
    model_endpoint: str | None = None
    context_window: int
    handle: str
    max_tokens: int | None = None
    temperature: float | None = None
    parallel_tool_calls: bool = False


class LettaMemory(BaseModel):
    agent_type: str = AGENT_TYPE
    blocks: list[LettaBlock]


class LettaAgentState(BaseModel):
    id: str
    name: str
    system: str
    description: str | None
    agent_type: str = AGENT_TYPE
    model: str
    llm_config: LettaLLMConfig
    blocks: list[LettaBlock]
    memory: LettaMemory
    tools: list[LettaTool]
    tool_rules: list[ToolRule]
    message_ids: list[str]
    created_at: datetime
    last_stop_reason: str | None
    pending_approval: dict[str, Any] | None = None
    """With `include=agent.pending_approval`: the approval request message the agent waits on."""
    sources: list[Any] = []
    tags: list[str] = []


class LettaRun(BaseModel):
    id: str
    agent_id: str
    status: RunStatus
    stop_reason: StopReasonType | None
    created_at: datetime
    completed_at: datetime | None
    background: bool = False
    metadata: dict[str, Any] | None = None


def letta_block(block: Block) -> LettaBlock:
    return LettaBlock.model_validate(block.model_dump())


def letta_agent(agent: AgentState, tools: dict[str, ToolDef]) -> LettaAgentState:
    config = agent.llm_config
    blocks = [letta_block(b) for b in agent.blocks]
    return LettaAgentState(
        id=agent.id,
        name=agent.name,
        system=agent.system,
        description=agent.description,
        model=config.model,
        llm_config=LettaLLMConfig(
            model=config.model_name,
            model_endpoint=config.endpoint,
            context_window=config.context_window,
            handle=config.model,
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            parallel_tool_calls=config.parallel_tool_calls,
        ),
        blocks=blocks,
        memory=LettaMemory(blocks=blocks),
        tools=[_letta_tool(tools[name]) for name in agent.tools if name in tools],
        tool_rules=agent.tool_rules,
        message_ids=agent.message_ids,
        created_at=agent.created_at,
        last_stop_reason=agent.last_stop_reason,
    )


def _letta_tool(tool: ToolDef) -> LettaTool:
    return LettaTool(**{**tool.model_dump(), "id": tool.id or f"tool-{tool.name}"})


def letta_run(run: RunInfo) -> LettaRun:
    return LettaRun(
        id=run.id,
        agent_id=run.agent_id,
        status=run.status,
        stop_reason=run.stop_reason,
        created_at=run.created_at,
        completed_at=run.completed_at,
        metadata={"error": run.error} if run.error else None,
    )


def finish_message(
    message: dict[str, Any], *, request_id: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Fill what Letta's messages carry and Perdure's records leave out: each part's otid
    (derived from the message id, as Letta derives it), the deprecated single-approval fields
    of an approval response, and a date for a token chunk (when it was relayed)."""
    kind = message.get("message_type", "")
    if not message.get("otid") and kind not in _NOT_MESSAGES and "id" in message:
        message["otid"] = part_otid(message["id"], _PART_INDEX.get(kind, 0))
    if kind == "approval_response_message":
        first = next((a for a in message.get("approvals", []) if a.get("type") == "approval"), None)
        if first is not None:
            message.setdefault("approve", first["approve"])
            message.setdefault("reason", first.get("reason"))
        if request_id is not None:
            message.setdefault("approval_request_id", request_id)
    if now is not None and "id" in message:
        message.setdefault("date", now.isoformat())
    return message


def part_otid(message_id: str, index: int) -> str:
    """Letta's `generate_otid_from_id`: the message's uuid with its last 7 bits set to the
    part's index."""
    try:
        base = uuid.UUID(message_id.split("-", 1)[1])
    except (IndexError, ValueError):
        return f"{message_id}-{index}"
    return str(uuid.UUID(int=(base.int & ~0x7F) | index))


def finish_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`finish_message` over a list in order: an approval response names the request before it."""
    request_id = None
    for message in messages:
        finish_message(message, request_id=request_id)
        if message.get("message_type") == "approval_request_message":
            request_id = message["id"]
    return messages
