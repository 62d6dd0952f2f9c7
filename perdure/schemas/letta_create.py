"""Letta's `CreateAgent` as programs and agent files send it, mapped onto `AgentCreate`.

Letta ignores fields it does not know, so agent files carry many Perdure has no use for
(tags, metadata, embedding settings ...): those are accepted and named in a warning. A field
that would change where requests go or which tools run if ignored is refused instead, so an
agent never silently behaves differently from what its file asks for.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from perdure.schemas.agent import AgentCreate, LLMConfig
from perdure.store.errors import InvalidRequestError

REFUSED_WHEN_SET: dict[str, str] = {
    "tool_ids": "name the tools in `tools` instead",
    "block_ids": "shared blocks are not supported; give the blocks in `memory_blocks`",
    "initial_message_sequence": "an agent starts with its system message alone",
    "message_buffer_autoclear": "every agent keeps its conversation",
    "enable_sleeptime": "sleep-time agents are not supported",
    "response_format": "structured final answers are not supported",
    "folder_ids": "folders are not supported",
    "source_ids": "sources are not supported",
    "from_template": "templates are not supported",
}
"""Fields that change behaviour when set: refused with the reason, never dropped."""
LETTA_LLM_CONFIG_KEYS = frozenset({"model_endpoint", "model_endpoint_type", "handle"})
MODEL_SETTINGS_MAP = {
    "temperature": "temperature",
    "max_output_tokens": "max_tokens",
    "parallel_tool_calls": "parallel_tool_calls",
}
"""The part of Letta's `model_settings` that has an `llm_config` counterpart here."""
MAPPED = frozenset({"max_tokens", "model_settings", "secrets"})
"""Top-level fields folded into `llm_config`."""


class ParsedCreateAgent(BaseModel):
    request: AgentCreate
    ignored: list[str]
    """Fields accepted but not used, by their dotted names."""

    def warning(self) -> str | None:
        if not self.ignored:
            return None
        return f"ignored fields Perdure does not use: {', '.join(self.ignored)}"


def parse_create_agent(payload: dict[str, Any]) -> ParsedCreateAgent:
    """Split a Letta create-agent payload into what Perdure uses and what it ignores; refuse
    what it cannot honour (InvalidRequestError, one line)."""
    refused = [name for name in REFUSED_WHEN_SET if payload.get(name)]
    if refused:
        reasons = "; ".join(f"{name}: {REFUSED_WHEN_SET[name]}" for name in refused)
        raise InvalidRequestError(f"unsupported create-agent field(s): {reasons}")
    known = set(AgentCreate.model_fields)
    given = {key: value for key, value in payload.items() if _given(value)}
    fields = {key: value for key, value in given.items() if key in known}
    ignored = sorted(key for key in given if key not in known | set(REFUSED_WHEN_SET) | MAPPED)
    if _given(payload.get("secrets")) and "tool_exec_environment_variables" not in fields:
        fields["tool_exec_environment_variables"] = payload["secrets"]  # Letta's newer name for them
    llm = dict(fields.get("llm_config") or {})
    if isinstance(payload.get("max_tokens"), int):
        llm.setdefault("max_tokens", payload["max_tokens"])
    settings = payload.get("model_settings") or {}
    if isinstance(settings, dict):
        if settings.get("response_format"):
            raise InvalidRequestError("unsupported create-agent field: model_settings.response_format")
        for source, target in MODEL_SETTINGS_MAP.items():
            if settings.get(source) is not None:
                llm.setdefault(target, settings[source])
        ignored += sorted(
            f"model_settings.{key}"
            for key, value in settings.items()
            if key not in MODEL_SETTINGS_MAP and _given(value)
        )
    if llm:
        usable = set(LLMConfig.model_fields) | LETTA_LLM_CONFIG_KEYS
        ignored += sorted(f"llm_config.{key}" for key, value in llm.items() if key not in usable and _given(value))
        fields["llm_config"] = {key: value for key, value in llm.items() if key in usable and value is not None}
    compaction = payload.get("compaction_settings")
    if isinstance(compaction, dict):
        ignored += sorted(
            f"compaction_settings.{key}" for key, value in compaction.items() if key != "model" and _given(value)
        )
        fields["compaction_settings"] = {"model": compaction.get("model")}
    return ParsedCreateAgent(request=AgentCreate.model_validate(fields), ignored=ignored)


def _given(value: Any) -> bool:
    """Letta's SDK and agent files send unset fields as null or empty: those ask for nothing."""
    return value is not None and value != [] and value != {}
