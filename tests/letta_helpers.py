"""Reading what the letta-client SDK hands back in tests: its message lists are unions of a
dozen types and its error bodies plain objects, so tests read them through `Any`."""

from __future__ import annotations

from typing import Any

import letta_client


def body(error: letta_client.APIStatusError) -> Any:
    """The JSON body of an error answer (`{"detail": ...}`, or the `event: error` payload)."""
    return error.body


def parts(response: Any) -> list[Any]:
    """A response's messages, each read by its own type's fields."""
    return list(response.messages)


def content(message: Any) -> str | None:
    """A message's text, for the types that have one."""
    return getattr(message, "content", None)


def extra(model: Any, key: str) -> Any:
    """A field Perdure adds to Letta's shapes (`run_id`, `error` on a LettaResponse)."""
    return (model.model_extra or {})[key]


def approve(tool_call_id: str, approve: bool = True, reason: str | None = None) -> Any:
    """Letta's approval message answering one call."""
    answer = {"type": "approval", "tool_call_id": tool_call_id, "approve": approve, "reason": reason}
    return {"type": "approval", "approvals": [answer]}


def letta_llm_config(model_name: str, endpoint: str) -> Any:
    """An agent's `llm_config` in Letta's form, on the scripted model at `endpoint`."""
    return {
        "model": model_name,
        "model_endpoint_type": "openai",
        "model_endpoint": endpoint,
        "context_window": 16_000,
    }
