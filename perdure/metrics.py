"""Perdure's own metrics: names, descriptions and label values, shared by workflow and activity code.

They are recorded through the Temporal SDK's metric meters (replay-safe in workflows), so they
appear on a worker's Prometheus endpoint beside the SDK's `temporal_*` metrics, with the SDK's
labels (`namespace`, `task_queue`, `workflow_type` or `activity_type`) added. Counters end in
`_total`; latencies are in milliseconds, like the SDK's. Labels stay few-valued: no agent or run
ids (those belong to traces).
"""

from __future__ import annotations

from typing import Final

STEPS: Final = "perdure_steps_total"
STEPS_HELP: Final = "Agent steps taken (one LLM request and its tool calls), by model"

TOOL_CALLS: Final = "perdure_tool_calls_total"
TOOL_CALLS_HELP: Final = "Tool calls run by a worker, by tool and status (success or error)"

LLM_TOKENS: Final = "perdure_llm_tokens_total"
LLM_TOKENS_HELP: Final = "Tokens of LLM requests, by kind (prompt or completion), provider and model"

LLM_LATENCY: Final = "perdure_llm_request_latency"
LLM_LATENCY_HELP: Final = "Time an LLM request took, from sending it to the whole answer, in milliseconds"

WAITS_STARTED: Final = "perdure_person_waits_started_total"
WAITS_STARTED_HELP: Final = "Runs that began waiting for a person (an approval or a client-side tool's result)"

WAITS_ENDED: Final = "perdure_person_waits_ended_total"
WAITS_ENDED_HELP: Final = "Runs that stopped waiting for a person, by outcome (answered, timed_out or cancelled)"

RUNS_FINISHED: Final = "perdure_runs_finished_total"
RUNS_FINISHED_HELP: Final = "Runs that ended, by stop reason"
