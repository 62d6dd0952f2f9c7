"""Stable names shared by the workflow, its activities and its clients.

Renaming any of these breaks running histories and deployed clients, so they live in one
module that imports nothing: the workflow, the activities, the worker and the clients all
read them from here.
"""

WORKFLOW = "AgentRun"

SEND_MESSAGE = "send_message"
ANSWER = "answer"
COMPACT_UPDATE = "compact"
STATE_QUERY = "state"
APPROVE_SIGNAL = "approve"
DENY_SIGNAL = "deny"
CLIENT_TOOL_RETURN_SIGNAL = "client_tool_return"

BEGIN_RUN = "begin_run"
LLM_STEP = "llm_step"
EXECUTE_TOOL = "execute_tool"
EXECUTE_CUSTOM_TOOL = "execute_custom_tool"
CHECKPOINT_STEP = "checkpoint_step"
FINISH_RUN = "finish_run"
APPEND_STREAM = "append_stream"
COMPACT = "compact_context"

CUSTOM_TOOLS_PATCH = "custom-python-tools"
"""Runs that call custom tools (a regular activity in a sandbox) mark their histories with it."""

AGENT_ID_ATTRIBUTE = "AgentId"
RUN_STATUS_ATTRIBUTE = "RunStatus"
STOP_REASON_ATTRIBUTE = "StopReason"
PERDURE_RUN_ID_ATTRIBUTE = "PerdureRunId"
"""The run's Letta-style id (`run-…`), so the UI and `perdure follow --run` find its execution."""
AGENT_NAME_ATTRIBUTE = "AgentName"
"""The agent's name, so the UI's list says whose run each row is."""
SEARCH_ATTRIBUTES = (
    AGENT_ID_ATTRIBUTE,
    RUN_STATUS_ATTRIBUTE,
    STOP_REASON_ATTRIBUTE,
    PERDURE_RUN_ID_ATTRIBUTE,
    AGENT_NAME_ATTRIBUTE,
)
"""Keyword search attributes the Temporal UI filters runs by; the worker registers missing ones."""

REQUEST_REJECTED = "RequestRejected"
"""Error type of a request the begin activity refuses (nothing written); the update fails with it."""
ALREADY_SENT = "AlreadySent"
"""Error type of a request whose turn an earlier run took (a client's retry); its one detail is
that run's id, whose outcome the client returns instead."""


def workflow_id(agent_id: str) -> str:
    """One id per agent, so Temporal itself guarantees one live run per agent.

    Agent ids already read `agent-<uuid>` (Letta's form), so the workflow id is the agent id
    itself: `temporal workflow signal -w AGENT_ID` works with the id the CLI prints.
    """
    return f"agent-{agent_id.removeprefix('agent-')}"


LIST_MCP_TOOLS = "list_mcp_tools"
CALL_MCP_TOOL = "call_mcp_tool"
