"""Which tools exist: the built-ins are written to the tools table so agents can name them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from perdure.schemas.agent import RequiresApprovalToolRule, ToolRule
from perdure.schemas.tools import CustomToolRef, ToolDef
from perdure.store import tools as tool_store
from perdure.tools.arguments import check_arguments
from perdure.tools.schemas import BUILTIN_TOOL_DEFS


def ensure_builtin_tools(session: Session) -> None:
    """Write the built-in definitions (idempotent; a newer release's schemas replace older ones)."""
    tool_store.upsert_tools(session, BUILTIN_TOOL_DEFS.values())


def known_tool_names(session: Session) -> set[str]:
    return tool_store.tool_names(session)


def get_tool_defs(session: Session, names: Iterable[str]) -> dict[str, ToolDef]:
    return tool_store.get_tools(session, names)


def custom_tool_refs(definitions: Mapping[str, ToolDef]) -> dict[str, CustomToolRef]:
    """The versions of the custom tools among `definitions` a run starting now calls."""
    return {
        name: CustomToolRef(
            version=tool.version, timeout_seconds=tool.timeout_seconds, installs=bool(tool.pip_requirements)
        )
        for name, tool in definitions.items()
        if tool.is_custom
    }


def with_default_approvals(rules: list[ToolRule], definitions: Mapping[str, ToolDef]) -> list[ToolRule]:
    """`rules` plus a requires_approval rule for each custom tool made `default_requires_approval`
    after the agent was created (those named at creation got their rule then)."""
    ruled = {rule.tool_name for rule in rules if rule.type == "requires_approval"}
    added = [
        RequiresApprovalToolRule(tool_name=name)
        for name, tool in definitions.items()
        if tool.is_custom and tool.default_requires_approval and name not in ruled
    ]
    return [*rules, *added]


def validate_arguments(tool: ToolDef, arguments: Mapping[str, Any]) -> str | None:
    return check_arguments(tool.name, tool.json_schema, arguments)
