"""`perdure agent create|list|show|delete` and `perdure messages`: the store alone, no Temporal."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from perdure.agents import create_agent
from perdure.convert import to_letta_messages
from perdure.schemas.agent import BlockCreate
from perdure.schemas.letta_create import parse_create_agent
from perdure.settings import default_model
from perdure.store import agents, messages
from starter.cli_common import UsageError, open_db, out, print_json, read_json
from starter.render import agent_text, message_lines


def create(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {}
    if args.file is not None:
        fields = read_json(args.file, "agent file", dict, "a JSON object")
    overrides = {
        "name": args.name,
        "system": args.system,
        "model": args.model,
        "context_window_limit": args.context_window,
        "parallel_tool_calls": args.parallel_tool_calls,
        "approval_timeout_seconds": args.approval_timeout,
    }
    fields.update({key: value for key, value in overrides.items() if value is not None})
    if args.block:
        fields["memory_blocks"] = [*fields.get("memory_blocks", []), *(_block(b).model_dump() for b in args.block)]
    if args.tool:
        fields["tools"] = [*fields.get("tools", []), *args.tool]
    if args.tool_env:
        given = fields.get("tool_exec_environment_variables") or {}
        fields["tool_exec_environment_variables"] = {**_variables(given), **dict(_variable(v) for v in args.tool_env)}
    llm_config = fields.get("llm_config") or {}
    if not isinstance(llm_config, dict):
        raise UsageError(f"llm_config must be a JSON object, got {type(llm_config).__name__}")
    if args.endpoint:
        kept = {key: value for key, value in llm_config.items() if key != "model_endpoint"}
        fields["llm_config"] = llm_config = {**kept, "endpoint": args.endpoint}
    if not fields.get("model") and not llm_config.get("model"):
        fields["model"] = default_model()
    parsed = parse_create_agent(fields)
    warning = parsed.warning()
    if warning:
        print(f"perdure: warning: {warning}", file=sys.stderr)
    agent = create_agent(open_db(), parsed.request)
    return out(args, agent, agent_text(agent))


def _block(spec: str) -> BlockCreate:
    label, sep, value = spec.partition("=")
    if not sep:
        raise UsageError(f"--block takes LABEL=VALUE, got {spec!r}")
    return BlockCreate(label=label, value=value)


def _variable(spec: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise UsageError(f"--tool-env takes KEY=VALUE, got {spec.partition('=')[0]!r} without a value")
    return key, value


def _variables(given: Any) -> dict[Any, Any]:
    """The agent file's tool variables as a dict (Letta's files list `{key, value}` objects)."""
    if isinstance(given, list):
        return {item.get("key"): item.get("value") for item in given if isinstance(item, dict)}
    if not isinstance(given, dict):
        raise UsageError("tool_exec_environment_variables must be a JSON object of strings")
    return given


def list_agents(args: argparse.Namespace) -> int:
    with open_db().transaction(read_only=True) as session:
        found = agents.list_agents(session)
    if args.json:
        return print_json([a.model_dump(mode="json") for a in found])
    print("\n".join(agent_text(a, blocks=False) for a in found) or "no agents yet: `perdure agent create`")
    return 0


def show(args: argparse.Namespace) -> int:
    with open_db().transaction(read_only=True) as session:
        agent = agents.get_agent(session, args.agent_id)
    return out(args, agent, agent_text(agent))


def delete(args: argparse.Namespace) -> int:
    with open_db().transaction() as session:
        agents.delete_agent(session, args.agent_id)
    if args.json:
        return print_json({"id": args.agent_id, "deleted": True})
    print(f"deleted {args.agent_id}")
    return 0


def history(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with open_db().transaction(read_only=True) as session:
        agents.get_agent(session, args.agent_id)
        stored = messages.list_messages(session, args.agent_id, limit=args.limit)
    letta = to_letta_messages(stored)
    if args.json:
        return print_json([m.model_dump(mode="json", exclude_none=True) for m in letta])
    print("\n".join(message_lines(letta)) or "no messages yet")
    return 0
