"""Helpers the tests share: where the project and its CLI are, settings for a test's own
server, scripting the model's replies, and reading what a run did.

Each test module used to carry its own copy of these one-liners.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from perdure.schemas.letta import LettaResponse, LettaToolReturn, ToolReturnMessage
from perdure.schemas.messages import Message
from perdure.scripted.server import ScriptedReply, ScriptedToolCall
from perdure.settings import Settings
from perdure.store import agents, messages
from perdure.store.db import Database

REPO = Path(__file__).resolve().parent.parent
PERDURE = Path(sys.executable).parent / "perdure"
"""The console script of this environment, as a user runs it."""


def settings_at(address: str) -> Settings:
    """This process's settings, pointed at another Temporal server (one a test started)."""
    return Settings.from_env().model_copy(update={"temporal_address": address})


def call(name: str, **arguments: Any) -> ScriptedReply:
    """A reply with one tool call."""
    return ScriptedReply(tool_calls=[ScriptedToolCall(name=name, arguments=arguments)])


def calls(*tool_calls: ScriptedToolCall) -> ScriptedReply:
    """A reply with several tool calls, in this order."""
    return ScriptedReply(tool_calls=list(tool_calls))


def text(content: str, **fields: Any) -> ScriptedReply:
    return ScriptedReply(content=content, **fields)


def types_of(response: LettaResponse) -> list[str]:
    return [m.message_type for m in response.messages]


def tool_returns(response: LettaResponse) -> list[LettaToolReturn]:
    """Every tool return of the response, in order."""
    return [r for m in response.messages if isinstance(m, ToolReturnMessage) for r in m.tool_returns]


def in_context(db: Database, agent_id: str) -> list[Message]:
    with db.transaction() as session:
        return messages.load_in_context(session, agent_id)


def block_value(db: Database, agent_id: str, label: str = "human") -> str:
    """A memory block's stored value: the proof that a tool ran (or did not)."""
    with db.transaction() as session:
        block = agents.get_agent(session, agent_id).block(label)
    assert block is not None, f"no block {label}"
    return block.value
