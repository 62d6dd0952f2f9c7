"""The loop's pure decisions, as plain functions."""

from __future__ import annotations


from perdure.schemas.letta import StopReasonType
from perdure.schemas.messages import ToolCall
from workflows.decisions import (
    precheck_tool_call,
    stop_reason_for_llm_error,
    stop_reason_without_tool_call,
)


def test_llm_error_types_map_to_lettas_stop_reasons() -> None:
    assert stop_reason_for_llm_error("LLMServerError") is StopReasonType.llm_api_error
    assert stop_reason_for_llm_error("LLMBadRequestError") is StopReasonType.llm_api_error
    assert stop_reason_for_llm_error("LLMInvalidResponseError") is StopReasonType.invalid_llm_response
    assert stop_reason_for_llm_error("ContextWindowExceededError") is StopReasonType.error
    assert stop_reason_for_llm_error(None) is StopReasonType.error


def test_text_answer_stop_reasons() -> None:
    assert stop_reason_without_tool_call("stop") is StopReasonType.end_turn
    assert stop_reason_without_tool_call(None) is StopReasonType.end_turn
    assert stop_reason_without_tool_call("length") is StopReasonType.max_tokens_exceeded


def test_precheck() -> None:
    assert precheck_tool_call(ToolCall(id="1", name="a", arguments='{"x": 1}'), ["a"]) is None
    assert precheck_tool_call(ToolCall(id="1", name="zz", arguments="{}"), ["a", "b"]) == (
        "[ToolConstraintError] Cannot call zz, valid tools include: ['a', 'b']."
    )
    assert "not valid JSON" in (precheck_tool_call(ToolCall(id="1", name="a", arguments='{"x":'), ["a"]) or "")
    assert "must be a JSON object" in (precheck_tool_call(ToolCall(id="1", name="a", arguments="[1]"), ["a"]) or "")
