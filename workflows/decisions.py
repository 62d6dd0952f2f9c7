"""The loop's pure decisions: which calls run, what an error means, when the run stops.

Kept apart from the workflow class so they can be read (and unit-tested) as plain functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from perdure.schemas.letta import StopReasonType
    from perdure.schemas.messages import ToolCall
    from perdure.tools.arguments import decode_arguments

LLM_API_ERROR_TYPES = frozenset(
    {
        "LLMRateLimitError",
        "LLMServerError",
        "LLMConnectionError",
        "LLMTimeoutError",
        "LLMBadRequestError",
        "LLMAuthenticationError",
        "LLMNotFoundError",
        "LLMError",
    }
)
INVALID_RESPONSE_ERROR_TYPES = frozenset({"LLMInvalidResponseError"})


def stop_reason_for_llm_error(error_type: str | None) -> StopReasonType:
    """Letta's mapping: provider errors are `llm_api_error`, unusable answers `invalid_llm_response`."""
    if error_type in INVALID_RESPONSE_ERROR_TYPES:
        return StopReasonType.invalid_llm_response
    if error_type in LLM_API_ERROR_TYPES:
        return StopReasonType.llm_api_error
    return StopReasonType.error


def stop_reason_without_tool_call(finish_reason: str | None) -> StopReasonType:
    """A text-only answer ends the turn, unless the model ran out of tokens mid-answer."""
    if finish_reason == "length":
        return StopReasonType.max_tokens_exceeded
    return StopReasonType.end_turn


def precheck_tool_call(call: ToolCall, available: Sequence[str]) -> str | None:
    """Reasons a call must not run at all; the model gets the text back as an error tool return."""
    if call.name not in available:
        return f"[ToolConstraintError] Cannot call {call.name}, valid tools include: {list(available)}."
    return decode_arguments(call.name, call.arguments)[1]


REQUIRED_BEFORE_EXIT = "[This is an automated system message hidden from the user] ToolRuleViolated: You must call {tools} at least once to exit the loop."


def after_text_answer(
    finish_reason: str | None, uncalled_required: Sequence[str]
) -> tuple[StopReasonType | None, str | None]:
    """A response without tool calls ends the turn, unless required tools are still uncalled:
    then the loop goes on with Letta's ToolRuleViolated heartbeat. Returns (stop, heartbeat)."""
    if uncalled_required:
        return None, REQUIRED_BEFORE_EXIT.format(tools=", ".join(uncalled_required))
    return stop_reason_without_tool_call(finish_reason), None


def after_tool_calls(
    *, blocked: bool, terminal_ran: bool, uncalled_required: Sequence[str], answered_by_people: bool = False
) -> StopReasonType | None:
    """After calls ran: a blocked prefill stops the run; a terminal tool ends it (`tool_rule`)
    unless required tools are uncalled, or people's denials or client results must reach the
    model first (Letta's approval continuation always goes on for those)."""
    if blocked:
        return StopReasonType.invalid_tool_call
    if terminal_ran and not uncalled_required and not answered_by_people:
        return StopReasonType.tool_rule
    return None
