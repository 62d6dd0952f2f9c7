"""A run's MCP tools: listed once when the run begins, recorded in its history by the listing
activity's result, so a replay offers the tools the run had even if a server's list changed."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from perdure.schemas.mcp import McpListInput
    from perdure.schemas.run import BeginRunOutput

from workflows import activity_calls

MCP_TOOLS_PATCH = "mcp-tools"


async def with_mcp_tools(begun: BeginRunOutput, run_id: str) -> BeginRunOutput:
    """`begun` with the agent's MCP tools listed and added to its tools (by function name)."""
    agent = begun.agent
    if not agent.mcp_attachments or not workflow.patched(MCP_TOOLS_PATCH):
        return begun
    listed = await activity_calls.list_mcp_tools(
        McpListInput(agent_id=agent.agent_id, run_id=run_id, attachments=agent.mcp_attachments, taken=agent.tools)
    )
    snapshot = agent.model_copy(
        update={"tools": [*agent.tools, *(t.function for t in listed.tools)], "mcp_tools": listed.tools}
    )
    return begun.model_copy(update={"agent": snapshot})
