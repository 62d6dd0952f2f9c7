"""Typed calls of the run's activities: name, timeouts, retry policy and the Temporal UI summary
in one place, so the workflow reads as the loop it is.

The LLM request is a regular activity (slow, heartbeating, retried on its own); database work
and built-in tools are local activities (a few ms instead of a round trip through the server).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from perdure.schemas.run import (
        AppendStreamInput,
        BeginRunInput,
        CompactInput,
        CompactOutput,
        BeginRunOutput,
        CustomToolStepInput,
        CheckpointInput,
        FinishRunInput,
        LLMStepInput,
        LLMStepOutput,
        ToolStepInput,
        ToolStepOutput,
    )
    from perdure.schemas.mcp import McpListInput, McpListOutput, McpToolStepInput
    from perdure.schemas.tools import CustomToolRef

from perdure import names
from workflows.policies import MCP_HEARTBEAT, MCP_RETRY, MCP_TIMEOUT
from workflows.summaries import tool_summary
from workflows.policies import DB_RETRY, DB_TIMEOUT, LLM_DEADLINE, LLM_HEARTBEAT, LLM_RETRY, LLM_TIMEOUT, TOOL_TIMEOUT
from workflows.policies import CUSTOM_TOOL_HEARTBEAT, CUSTOM_TOOL_INSTALL, CUSTOM_TOOL_MARGIN, CUSTOM_TOOL_RETRY


async def begin_run(input: BeginRunInput) -> BeginRunOutput:
    return await workflow.execute_local_activity(
        names.BEGIN_RUN,
        input,
        result_type=BeginRunOutput,
        start_to_close_timeout=DB_TIMEOUT,
        retry_policy=DB_RETRY,
        summary="begin run",
    )


async def llm_step(input: LLMStepInput, model_name: str) -> LLMStepOutput:
    return await workflow.execute_activity(
        names.LLM_STEP,
        input,
        result_type=LLMStepOutput,
        start_to_close_timeout=LLM_TIMEOUT,
        schedule_to_close_timeout=LLM_DEADLINE,
        heartbeat_timeout=LLM_HEARTBEAT,
        retry_policy=LLM_RETRY,
        summary=f"llm {model_name} step {input.step_number}",
    )


async def execute_tool(input: ToolStepInput) -> ToolStepOutput:
    return await workflow.execute_local_activity(
        names.EXECUTE_TOOL,
        input,
        result_type=ToolStepOutput,
        start_to_close_timeout=TOOL_TIMEOUT,
        retry_policy=DB_RETRY,
        summary=tool_summary(input.tool_call),
    )


async def execute_custom_tool(input: CustomToolStepInput, tool: CustomToolRef) -> ToolStepOutput:
    """A custom Python tool: a regular activity (it may be slow) that heartbeats, so cancelling
    the run kills the tool's process; the run waits until it has."""
    timeout = timedelta(seconds=tool.timeout_seconds) + CUSTOM_TOOL_MARGIN
    return await workflow.execute_activity(
        names.EXECUTE_CUSTOM_TOOL,
        input,
        result_type=ToolStepOutput,
        start_to_close_timeout=timeout + CUSTOM_TOOL_INSTALL if tool.installs else timeout,
        heartbeat_timeout=CUSTOM_TOOL_HEARTBEAT,
        retry_policy=CUSTOM_TOOL_RETRY,
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        summary=f"{tool_summary(input.tool_call)} (custom)",
    )


async def checkpoint_step(input: CheckpointInput, summary: str | None = None) -> None:
    """`summary` says what the step decided (see workflows.summaries); by default only its number."""
    await workflow.execute_local_activity(
        names.CHECKPOINT_STEP,
        input,
        start_to_close_timeout=DB_TIMEOUT,
        retry_policy=DB_RETRY,
        summary=summary or f"checkpoint step {input.step.step_number}",
    )


async def finish_run(input: FinishRunInput) -> None:
    await workflow.execute_local_activity(
        names.FINISH_RUN,
        input,
        start_to_close_timeout=DB_TIMEOUT,
        retry_policy=DB_RETRY,
        summary=f"finish run: {input.stop_reason.value}",
    )


async def append_stream(input: AppendStreamInput) -> None:
    await workflow.execute_local_activity(
        names.APPEND_STREAM,
        input,
        start_to_close_timeout=DB_TIMEOUT,
        retry_policy=DB_RETRY,
        summary="stream: outcome",
    )


async def compact(input: CompactInput) -> CompactOutput:
    return await workflow.execute_activity(
        names.COMPACT,
        input,
        result_type=CompactOutput,
        start_to_close_timeout=LLM_TIMEOUT,
        schedule_to_close_timeout=LLM_DEADLINE,
        heartbeat_timeout=LLM_HEARTBEAT,
        retry_policy=LLM_RETRY,
        summary=f"compact {input.mode}",
    )


async def list_mcp_tools(input: McpListInput) -> McpListOutput:
    return await workflow.execute_activity(
        names.LIST_MCP_TOOLS,
        input,
        result_type=McpListOutput,
        start_to_close_timeout=MCP_TIMEOUT,
        heartbeat_timeout=MCP_HEARTBEAT,
        retry_policy=MCP_RETRY,
        summary="list mcp tools: " + ", ".join(input.attachments),
    )


async def call_mcp_tool(input: McpToolStepInput) -> ToolStepOutput:
    return await workflow.execute_activity(
        names.CALL_MCP_TOOL,
        input,
        result_type=ToolStepOutput,
        start_to_close_timeout=MCP_TIMEOUT,
        heartbeat_timeout=MCP_HEARTBEAT,
        retry_policy=MCP_RETRY,
        summary=f"{tool_summary(input.tool_call)} via mcp {input.server}",
    )
