"""Timeouts and retry policies of the run's activities, in one place to read and tune.

The LLM policy: the provider clients never retry themselves, Temporal does, with backoff 1 s x 2
up to 30 s and bounded attempts, so every attempt shows in the UI and survives a worker crash.
Errors the provider marks non-retryable (400/401/403/404, malformed answers) stop at once, and a
Retry-After from the provider overrides the backoff through `next_retry_delay`.
"""

from datetime import timedelta

from temporalio.common import RetryPolicy

LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
"""No attempt limit here: a worker lost mid-call must not use up the provider's attempts. The
activity counts the provider's failures itself and makes the last one final; `LLM_DEADLINE`
bounds the call as a whole."""
LLM_DEADLINE = timedelta(hours=1)
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10), maximum_attempts=20
)
LLM_TIMEOUT = timedelta(minutes=10)
LLM_HEARTBEAT = timedelta(seconds=15)
DB_TIMEOUT = timedelta(seconds=30)
TOOL_TIMEOUT = timedelta(minutes=2)
FIRST_MESSAGE_TIMEOUT = timedelta(minutes=5)
MCP_TIMEOUT = timedelta(minutes=65)
"""Longer than the longest per-server timeout (an hour): the activity answers a slow server itself."""
MCP_HEARTBEAT = timedelta(seconds=30)
MCP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10
)
"""Servers' failures are results, not errors: only a lost worker or the database makes an attempt fail."""
CUSTOM_TOOL_HEARTBEAT = timedelta(seconds=10)
CUSTOM_TOOL_MARGIN = timedelta(seconds=15)
"""The sandbox stops a tool at its own timeout and answers with an error return; the activity's
start-to-close timeout leaves this much more, so it only fires for a lost worker."""
CUSTOM_TOOL_INSTALL = timedelta(minutes=10)
"""Added for a tool with pip requirements: its first call may wait for their venv."""
CUSTOM_TOOL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
"""The tool's own failures are returns, not activity failures: a retry means a lost worker."""
