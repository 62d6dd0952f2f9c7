"""Creating agents: validation that the store alone cannot do (tool names, rule references)."""

from __future__ import annotations

import uuid

from perdure.mcp.agents import check_attachments
from perdure.mcp.attachments import is_attachment
from perdure.schemas.agent import AgentCreate, AgentState, RequiresApprovalToolRule
from perdure.store import agents as agent_store
from perdure.store.db import Database
from perdure.store.errors import InvalidRequestError
from perdure.store.tool_variables import add_tool_variables
from perdure.tool_rules import check_rules
from perdure.tools.registry import ensure_builtin_tools, get_tool_defs, known_tool_names


def create_agent(db: Database, request: AgentCreate) -> AgentState:
    """Validate and store a new agent with its system message as message 0 of its context."""
    with db.transaction() as session:
        ensure_builtin_tools(session)
        known = known_tool_names(session)
        tools = request.resolved_tools()
        mcp_functions = check_attachments(session, tools, known)
        unknown = [name for name in tools if name not in known and not is_attachment(name)]
        if unknown:
            raise InvalidRequestError(
                f"unknown tool(s): {', '.join(unknown)}; available tools: {', '.join(sorted(known))}"
            )
        ruled_tools = [*tools, *mcp_functions]  # rules name an MCP tool by the function name the model calls
        unknown_in_rules = sorted({rule.tool_name for rule in request.tool_rules if rule.tool_name not in ruled_tools})
        if unknown_in_rules:
            raise InvalidRequestError(f"tool rules name tool(s) the agent does not have: {', '.join(unknown_in_rules)}")
        problem = check_rules(request.tool_rules, ruled_tools)
        if problem is not None:
            raise InvalidRequestError(problem)
        rules = list(request.tool_rules)
        ruled = {r.tool_name for r in rules if r.type == "requires_approval"}
        for name, tool in get_tool_defs(session, tools).items():
            if tool.default_requires_approval and name not in ruled:
                rules.append(RequiresApprovalToolRule(tool_name=name))
        agent_id = f"agent-{uuid.uuid4()}"
        state = agent_store.insert_agent(
            session,
            agent_id=agent_id,
            name=request.name,
            system=request.system,
            description=request.description,
            blocks=request.memory_blocks,
            tools=tools,
            tool_rules=rules,
            llm_config=request.resolved_llm_config(),
            system_message_id=f"message-{uuid.uuid4()}",
            approval_timeout_seconds=request.approval_timeout_seconds,
        )
        add_tool_variables(session, agent_id, request.tool_exec_environment_variables)
        return state
