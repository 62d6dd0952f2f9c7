"""Search attributes the Temporal UI filters runs by (registered by `perdure dev` and the worker)."""

from temporalio.common import SearchAttributeKey

AGENT_ID = SearchAttributeKey.for_keyword("AgentId")
RUN_STATUS = SearchAttributeKey.for_keyword("RunStatus")
STOP_REASON = SearchAttributeKey.for_keyword("StopReason")
PERDURE_RUN_ID = SearchAttributeKey.for_keyword("PerdureRunId")
"""The run's Letta-style id (`run-…`), so the UI and `perdure follow --run` find its execution."""

ALL = (AGENT_ID, RUN_STATUS, STOP_REASON, PERDURE_RUN_ID)
