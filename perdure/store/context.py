"""The agent's context as the LLM request reads it: every message of it, on every step.

`messages.load_in_context` makes an ORM row per message, has the JSON column decode its data and
validates the dict into a `Message`: on a long context that was most of the LLM activity's own CPU,
and the objects it leaves behind (thousands per step, alive for the whole request) kept the
garbage collector busy. Here the select asks for the id and the stored JSON text alone, and the
parsed messages are kept in a bounded, process-wide cache keyed by id and checked against the
stored text, so a step parses only the messages that are new or changed since the last one (the
system message after a memory edit). What comes back is always what the database holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from pydantic import BaseModel
from sqlalchemy import Text, bindparam, cast, select
from sqlalchemy.orm import Session

from perdure.schemas.agent import LLMConfig
from perdure.schemas.messages import Message
from perdure.store.errors import NotFoundError
from perdure.store.tables import AgentRow, MessageRow

PARSED_MESSAGES_CACHE_CHARS = 8_000_000
"""The stored text the cache of parsed messages may hold (with the messages, some 30 MB): the
contexts of the agents a worker serves at once (a few thousand messages of a kilobyte or two)."""

_AGENTS = AgentRow.__table__.c
_REQUEST_AGENT = select(_AGENTS.system, _AGENTS.tools, _AGENTS.llm_config, _AGENTS.message_ids).where(
    _AGENTS.id == bindparam("agent_id")
)
_MESSAGES = MessageRow.__table__.c
_STORED_TEXTS = select(_MESSAGES.id, cast(_MESSAGES.data, Text)).where(
    _MESSAGES.id.in_(bindparam("ids", expanding=True))
)
"""Built once: the ids are bound when it runs, so they are not coerced into the statement each time."""


class RequestAgent(BaseModel):
    """What an LLM request reads of the agent: `agents.get_agent` without the columns and the
    blocks query it does not need (only a model without native tool calls reads the blocks, and
    `agents.get_blocks` fetches them then)."""

    system: str
    tools: list[str]
    llm_config: LLMConfig
    message_ids: list[str]


def load_request_agent(session: Session, agent_id: str) -> RequestAgent:
    row = session.execute(_REQUEST_AGENT, {"agent_id": agent_id}).one_or_none()
    if row is None:
        raise NotFoundError(f"agent '{agent_id}' not found")
    return RequestAgent.model_validate(row._asdict())


class ParsedMessages:
    """A thread-safe LRU of parsed messages by id, each with the stored text it was parsed from:
    an entry serves only while the database holds the same text. The messages are shared between
    the requests that read them, so they are never changed in place (`model_copy` makes a changed one)."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._entries: OrderedDict[str, tuple[str, Message]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def parsed(self, stored: Sequence[tuple[str, str]]) -> dict[str, Message]:
        """Each (id, stored JSON text) as a message: from the cache when its text is unchanged,
        else parsed (outside the lock) and kept."""
        found: dict[str, Message] = {}
        missing: list[tuple[str, str]] = []
        with self._lock:
            for message_id, text in stored:
                entry = self._entries.get(message_id)
                if entry is not None and entry[0] == text:
                    self._entries.move_to_end(message_id)
                    found[message_id] = entry[1]
                else:
                    missing.append((message_id, text))
        parsed = {message_id: (text, Message.model_validate_json(text)) for message_id, text in missing}
        with self._lock:
            for message_id, entry in parsed.items():
                self._keep(message_id, entry)
        return found | {message_id: message for message_id, (_, message) in parsed.items()}

    def _keep(self, message_id: str, entry: tuple[str, Message]) -> None:
        """Add or replace an entry, then drop the least recently used past the budget."""
        replaced = self._entries.pop(message_id, None)
        if replaced is not None:
            self._chars -= len(replaced[0])
        self._entries[message_id] = entry
        self._chars += len(entry[0])
        while self._chars > self.max_chars:
            _, (text, _) = self._entries.popitem(last=False)
            self._chars -= len(text)


_parsed_messages = ParsedMessages(PARSED_MESSAGES_CACHE_CHARS)


def load_context_messages(session: Session, message_ids: Sequence[str]) -> list[Message]:
    """The messages of `message_ids` in that order (ids not stored are skipped), as
    `messages.load_messages` returns them; the messages are shared, not to be changed in place.
    A plain Core select, which flushes nothing: for a transaction where nothing is pending (the
    LLM request's, which only reads; `messages.load_context_tail` flushes before it calls this)."""
    ids = list(message_ids)
    by_id = _parsed_messages.parsed(session.execute(_STORED_TEXTS, {"ids": ids}).all())
    return [by_id[message_id] for message_id in ids if message_id in by_id]
