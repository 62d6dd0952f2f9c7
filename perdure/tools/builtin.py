"""Letta's built-in memory tools: names, arguments and error texts as Letta has them.

Each tool works inside the caller's transaction, so its effect commits together with the
record of its result (see `activities/tools.py`): a retried activity never edits memory twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timezone
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from perdure.schemas.agent import Block, BlockCreate
from perdure.schemas.messages import Message
from perdure.store import agents, messages, passages

READ_ONLY_BLOCK_EDIT_ERROR = "Error This block is read-only and cannot be edited."
LINE_NUMBER_PREFIX = re.compile(r"^\s*\d+→", re.MULTILINE)
SEARCH_DEFAULT_LIMIT = 5
EDIT_SUCCESS = (
    "The core memory block with label `{label}` has been successfully edited. Your system prompt has been "
    "recompiled with the updated memory contents and is now active in your context. Review the changes and make "
    "sure they are as expected (correct indentation, no duplicate lines, etc). Edit the memory block again if necessary."
)


class ToolError(Exception):
    """A tool refused or failed; the model sees `{kind}: {message}` in an error tool return."""

    def __init__(self, message: str, kind: str = "ValueError") -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


@dataclass(frozen=True)
class ToolContext:
    session: Session
    agent_id: str
    agent: agents.LockedAgent | None = None
    """The agent as the tool activity locked it before an editing tool ran (None for a read-only
    tool, or when there is no agent): its edits use it instead of locking the row again."""

    def locked_agent(self) -> agents.LockedAgent:
        """The agent, locked: as the activity locked it, or locked now for a caller that did not."""
        return self.agent if self.agent is not None else agents.lock_for_memory_edit(self.session, self.agent_id)


def _block(ctx: ToolContext, label: str, *, editable: bool = True) -> Block:
    blocks = agents.get_blocks(ctx.session, ctx.agent_id)
    found = next((b for b in blocks if b.label == label), None)
    if found is None:
        available = [b.label for b in blocks]
        raise ToolError(f"Block field {label} does not exist (available sections = {', '.join(available)})", "KeyError")
    if editable and found.read_only:
        raise ToolError(READ_ONLY_BLOCK_EDIT_ERROR)
    return found


def _no_line_numbers(field: str, value: str) -> None:
    if LINE_NUMBER_PREFIX.search(value):
        raise ToolError(
            f"{field} contains a line number prefix, which is not allowed. Do not include line numbers when "
            "calling memory tools (line numbers are for display purposes only)."
        )


def memory_replace(ctx: ToolContext, label: str, old_string: str, new_string: str) -> str:
    block = _block(ctx, label)
    _no_line_numbers("old_string", old_string)
    _no_line_numbers("new_string", new_string)
    current = block.value.expandtabs()
    old, new = old_string.expandtabs(), new_string.expandtabs()
    occurrences = current.count(old) if old else 0
    if occurrences == 0:
        raise ToolError(
            f"No replacement was performed, old_string `{old}` did not appear verbatim in memory block with label `{label}`."
        )
    if occurrences > 1:
        lines = [i + 1 for i, line in enumerate(current.split("\n")) if old in line]
        raise ToolError(
            f"No replacement was performed. Multiple occurrences of old_string `{old}` in lines {lines}. Please ensure it is unique."
        )
    agents.set_locked_block_value(ctx.session, ctx.locked_agent(), label, current.replace(old, new))
    return EDIT_SUCCESS.format(label=label)


def memory_insert(ctx: ToolContext, label: str, new_string: str, insert_line: int = -1) -> str:
    block = _block(ctx, label)
    _no_line_numbers("new_string", new_string)
    lines = block.value.expandtabs().split("\n") if block.value else []
    if insert_line == -1:
        insert_line = len(lines)
    elif not 0 <= insert_line <= len(lines):
        raise ToolError(
            f"Invalid `insert_line` parameter: {insert_line}. It should be within the range of lines of the memory "
            f"block: {[0, len(lines)]}, or -1 to append to the end of the memory block."
        )
    value = "\n".join(lines[:insert_line] + new_string.expandtabs().split("\n") + lines[insert_line:])
    agents.set_locked_block_value(ctx.session, ctx.locked_agent(), label, value)
    return EDIT_SUCCESS.format(label=label)


def memory_rethink(ctx: ToolContext, label: str, new_memory: str) -> str:
    _no_line_numbers("new_memory", new_memory)
    existing = {b.label: b for b in agents.get_blocks(ctx.session, ctx.agent_id)}
    if label not in existing:
        try:
            created = BlockCreate(label=label, value=new_memory)
        except ValidationError:
            # Without this the pydantic error escapes the tool, the activity retries and the run ends in error.
            raise ToolError(
                f"Cannot create memory block with label `{label}`: a label is 1 to 100 characters, "
                "using only letters, digits, '_' and '-'."
            ) from None
        agents.add_block(ctx.session, ctx.locked_agent(), created)
    else:
        _block(ctx, label)
        agents.set_locked_block_value(ctx.session, ctx.locked_agent(), label, new_memory)
    return EDIT_SUCCESS.format(label=label)


def core_memory_append(ctx: ToolContext, label: str, content: str) -> None:
    block = _block(ctx, label)
    value = f"{block.value}\n{content}" if block.value else content
    agents.set_locked_block_value(ctx.session, ctx.locked_agent(), label, value)


def core_memory_replace(ctx: ToolContext, label: str, old_content: str, new_content: str) -> None:
    block = _block(ctx, label)
    if not old_content or old_content not in block.value:
        raise ToolError(f"Old content '{old_content}' not found in memory block '{label}'")
    agents.set_locked_block_value(ctx.session, ctx.locked_agent(), label, block.value.replace(old_content, new_content))


def conversation_search(
    ctx: ToolContext,
    query: str | None = None,
    roles: list[str] | None = None,
    limit: int | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
) -> str:
    wanted = _positive("limit", limit)
    start = _parse_date("start_date", start_date, end_of_day=False)
    end = _parse_date("end_date", end_date, end_of_day=True)
    # Search calls are dropped after the query, so fetch more until `wanted` others are found or
    # the history runs out; otherwise earlier searches for the same words would use up the limit.
    fetch = wanted
    while True:
        found = messages.search_messages(
            ctx.session,
            ctx.agent_id,
            query=query,
            roles=roles or ["user", "assistant"],
            start=start,
            end=end,
            limit=fetch,
        )
        kept = [m for m in found if not _is_search_call(m)]
        if len(kept) >= wanted or len(found) < fetch:
            break
        fetch *= 2
    results = [_search_result(m) for m in kept[:wanted]]
    if not results:
        return json.dumps({"message": "No results found.", "results": []})
    return json.dumps({"message": f"Showing {len(results)} results:", "results": results}, ensure_ascii=False)


def archival_memory_insert(ctx: ToolContext, content: str, tags: list[str] | None = None) -> None:
    passages.insert_passage(ctx.session, ctx.agent_id, content, tags or [])


def archival_memory_search(
    ctx: ToolContext,
    query: str,
    tags: list[str] | None = None,
    tag_match_mode: str = "any",
    top_k: int | None = None,
    start_datetime: str | None = None,
    end_datetime: str | None = None,
) -> str:
    found = passages.search_passages(
        ctx.session,
        ctx.agent_id,
        query=query,
        tags=tags or [],
        match_all_tags=tag_match_mode == "all",
        start=_parse_date("start_datetime", start_datetime, end_of_day=False),
        end=_parse_date("end_datetime", end_datetime, end_of_day=True),
        limit=_positive("top_k", top_k),
    )
    return json.dumps(
        [{"timestamp": p.created_at.isoformat(), "content": p.text, "tags": p.tags} for p in found],
        ensure_ascii=False,
    )


def _parse_date(field: str, value: str | None, *, end_of_day: bool) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ToolError(
            f"Invalid {field} format: {value}. Use ISO 8601 format (YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
        ) from None
    if len(value) == 10 and end_of_day:
        parsed = datetime.combine(parsed.date(), time.max)
    # Stored times are UTC (SQLite keeps them without an offset): compare in UTC, not wall-clock time.
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _positive(field: str, value: int | None) -> int:
    """A result count: the default when absent; zero or negative is refused, not silently reinterpreted."""
    if value is None:
        return SEARCH_DEFAULT_LIMIT
    if value < 1:
        raise ToolError(f"Invalid `{field}` parameter: {value}. It must be a positive integer.")
    return value


def _is_search_call(message: Message) -> bool:
    """Letta skips calls to the search itself, whose query would match every search."""
    return any(call.name == "conversation_search" for call in message.tool_calls)


def _search_result(message: Message) -> dict[str, Any]:
    content = message.text or "; ".join(f"{c.name}({c.arguments})" for c in message.tool_calls)
    created = message.created_at.isoformat() if message.created_at else "Unknown"
    return {"timestamp": created, "role": message.role, "content": content}


ToolFunction = Callable[..., str | None]

BUILTIN_FUNCTIONS: dict[str, ToolFunction] = {
    "memory_replace": memory_replace,
    "memory_insert": memory_insert,
    "memory_rethink": memory_rethink,
    "core_memory_append": core_memory_append,
    "core_memory_replace": core_memory_replace,
    "conversation_search": conversation_search,
    "archival_memory_insert": archival_memory_insert,
    "archival_memory_search": archival_memory_search,
}


def run_builtin(
    session: Session, agent_id: str, name: str, arguments: dict[str, Any], agent: agents.LockedAgent | None = None
) -> str:
    """Run a built-in tool; its text result is what Letta would send (`None` prints as "None").
    `agent` is the agent as the caller locked it, if it did (see `ToolContext.agent`)."""
    result = BUILTIN_FUNCTIONS[name](ToolContext(session, agent_id, agent), **arguments)
    return "None" if result is None else result
