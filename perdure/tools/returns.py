"""How a tool's result is packaged for the model and clipped to the tool's limit (Letta's forms)."""

from __future__ import annotations

import json
import re
from datetime import datetime


def package_function_response(success: bool, text: str, now: datetime) -> str:
    """Letta's envelope `{"status": "OK"|"Failed", "message": ..., "time": ...}`.

    The time is passed in, not read here, so the workflow can package with `workflow.now()`.
    """
    return json.dumps(
        {"status": "OK" if success else "Failed", "message": text, "time": now.strftime("%Y-%m-%d %I:%M:%S %p %Z%z")},
        ensure_ascii=False,
    )


def truncate_function_return(text: str, limit: int) -> str:
    """Clip a tool's output to its `return_char_limit`, saying so, as Letta's executor does."""
    if len(text) <= limit:
        return text
    return (
        f"{text[:limit]}... [NOTE: function output was truncated since it exceeded the character limit: "
        f"{len(text)} > {limit}]"
    )


def tool_return_cap(context_window: int) -> int:
    """Letta's request-level cap on a tool return, in characters."""
    return max(5_000, int(context_window * 0.2 * 4))


REQUEST_CLIP_SLACK = 200
_CLIPPED = re.compile(r"\.\.\. \[truncated \d+ chars\]$")


def clip_tool_return(text: str, limit: int, *, slack: int = 0) -> str:
    """Clip a tool return to `limit` characters; in Letta's `{"status", "message", "time"}`
    envelope (or any JSON object with a string `message`) only the message, so the result stays
    valid JSON. With `slack`, a text within it of the limit is left whole: in a request, that is
    a result already clipped to the same limit (a client's, with its JSON punctuation and note).

    Called for every tool return in the context on every request, so a text that fits (its
    message then fits too) is returned before any parsing."""
    if len(text) <= limit + slack:
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        clipped = _clip(data["message"], limit, slack)
        return text if clipped is data["message"] else json.dumps({**data, "message": clipped}, ensure_ascii=False)
    return _clip(text, limit, slack)


def _clip(text: str, limit: int, slack: int) -> str:
    if len(text) <= limit + slack:
        return text
    suffix = _CLIPPED.search(text)
    if suffix is not None and suffix.start() <= limit:
        return text
    return f"{text[:limit]}... [truncated {len(text) - limit} chars]"
