"""The pure parts of streaming: reading SSE lines, assembling an answer, merging pieces for
publishing, and the events a run publishes in Letta's shapes.

No server is needed: these functions take values and return values. The workflow-side ones
(`step_events`, `outcome_events`, `stream_tokens_now`) run inside the workflow sandbox in the
real loop, and are imported here outside it, as any pure module can be.
"""

from __future__ import annotations

import io
import json
import typing
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from activities.token_stream import merge_pieces
from perdure.providers.base import (
    ContextWindowExceededError,
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMError,
    LLMInvalidResponseError,
    LLMRateLimitError,
    LLMServerError,
)
from perdure.providers.openai import classify_error
from perdure.providers.openai_stream import (
    DONE,
    StreamAssembler,
    StreamPiece,
    decode_event,
    error_from_event,
    read_usage,
)
from perdure.schemas.approvals import ApprovalAnswer, ClientToolReturn, PendingCall
from perdure.schemas.letta import (
    ApprovalRequestMessage,
    ApprovalResponseMessage,
    ApprovalReturn,
    AssistantMessage,
    EventMessage,
    HiddenReasoningMessage,
    LettaStopReason,
    LettaToolCall,
    LettaToolReturn,
    LettaUsageStatistics,
    ReasoningMessage,
    StopReasonType,
    SummaryMessage,
    SystemMessage,
    ToolCallMessage,
    ToolReturnMessage,
    UserMessage,
)
from perdure.schemas.messages import Message, TextContent, ToolCall, ToolReturn
from perdure.schemas.run import LLMStepOutput, StepRecord
from perdure.schemas.stream import (
    ERROR_MESSAGE,
    STREAM_EVENT,
    AttemptStarted,
    LettaErrorMessage,
    StreamEvent,
    error_event,
)
from perdure.tools.returns import package_function_response
from workflows.drafts import approval_request, approval_response, assistant_message, keep_going_message, tool_message
from starter.stream import StreamItem
from starter.stream_render import StreamPrinter
from workflows.stream_events import TOKEN_STREAM_HISTORY_LIMIT, outcome_events, step_events, stream_tokens_now

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def content(text: str) -> StreamPiece:
    return StreamPiece(kind="content", text=text)


def reasoning(text: str) -> StreamPiece:
    return StreamPiece(kind="reasoning", text=text)


def call_piece(index: int, text: str, *, name: str = "", tool_call_id: str = "") -> StreamPiece:
    return StreamPiece(kind="tool_call", text=text, index=index, name=name, tool_call_id=tool_call_id)


def raise_error(error: Any) -> LLMError:
    """`feed`'s error mapping as the provider wires it, with the real classifier."""
    return error_from_event(error, lambda status, text: classify_error(status, f"in-stream: {text}", text))


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, **top: Any) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}], **top}


def call_delta(index: int, *, id: str | None = None, name: str | None = None, arguments: Any = None) -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, "function": {}}
    if id is not None:
        fragment["id"] = id
    if name is not None:
        fragment["function"]["name"] = name
    if arguments is not None:
        fragment["function"]["arguments"] = arguments
    return {"tool_calls": [fragment]}


# --------------------------------------------------------------------------- merge_pieces


def test_merge_nothing() -> None:
    assert merge_pieces([]) == []


def test_neighbouring_pieces_of_one_kind_merge() -> None:
    assert merge_pieces([content("Hel"), content("lo"), content(", world")]) == [content("Hello, world")]
    assert merge_pieces([reasoning("a"), reasoning("b")]) == [reasoning("ab")]


def test_kinds_stay_apart_and_in_order() -> None:
    pieces = [reasoning("think "), reasoning("hard"), content("Hi"), content("!"), reasoning("again"), content(" bye")]
    assert merge_pieces(pieces) == [reasoning("think hard"), content("Hi!"), reasoning("again"), content(" bye")]


def test_tool_call_pieces_merge_per_call_keeping_name_and_id() -> None:
    pieces = [
        call_piece(0, "", name="get_weather", tool_call_id="call_a"),
        call_piece(0, '{"city"', name="get_weather", tool_call_id="call_a"),
        call_piece(0, ': "Oslo"}', name="get_weather", tool_call_id="call_a"),
        call_piece(1, "", name="ping", tool_call_id="call_b"),
        call_piece(1, "{}", name="ping", tool_call_id="call_b"),
    ]
    assert merge_pieces(pieces) == [
        call_piece(0, '{"city": "Oslo"}', name="get_weather", tool_call_id="call_a"),
        call_piece(1, "{}", name="ping", tool_call_id="call_b"),
    ]


def test_different_tool_call_index_does_not_merge() -> None:
    pieces = [call_piece(0, "a", name="f"), call_piece(1, "b", name="g"), call_piece(0, "c", name="f")]
    assert merge_pieces(pieces) == pieces


def test_a_later_name_or_id_fills_in_and_an_empty_one_keeps_the_earlier() -> None:
    merged = merge_pieces(
        [call_piece(0, "x"), call_piece(0, "y", name="late", tool_call_id="call_late"), call_piece(0, "z")]
    )
    assert merged == [call_piece(0, "xyz", name="late", tool_call_id="call_late")]


def test_content_and_first_tool_call_do_not_merge() -> None:
    """Both have index 0; the kind keeps them apart."""
    assert merge_pieces([content("text"), call_piece(0, "{}", name="f")]) == [
        content("text"),
        call_piece(0, "{}", name="f"),
    ]


def test_merging_leaves_the_input_unchanged() -> None:
    pieces = [content("a"), content("b")]
    merge_pieces(pieces)
    assert pieces == [content("a"), content("b")]


# --------------------------------------------------------------------------- decode_event


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('data: {"a": 1}', {"a": 1}),
        ('data:{"a": 1}', {"a": 1}),
        ('data:   {"a": [1, "ü"]}  ', {"a": [1, "ü"]}),
        ("data: [DONE]", DONE),
        ("data:[DONE]", DONE),
        ("data: [DONE]  ", DONE),
        ('data: "just a string"', "just a string"),
        ("data: 42", 42),
    ],
)
def test_data_lines(line: str, expected: Any) -> None:
    assert decode_event(line) == expected


@pytest.mark.parametrize(
    "line", ["", ": keep-alive", ":", "event: message", "id: 7", "retry: 1000", ' data: {"a": 1}', "DATA: {}", "[DONE]"]
)
def test_comments_and_other_fields_are_not_data(line: str) -> None:
    assert decode_event(line) is None


@pytest.mark.parametrize("line", ["data: {not json", "data: ", "data: {'single': 'quotes'}", "data: [DONE"])
def test_bad_json_is_invalid_response(line: str) -> None:
    with pytest.raises(LLMInvalidResponseError) as raised:
        decode_event(line)
    assert not raised.value.retryable
    assert line[5:].strip() in raised.value.message


def test_bad_json_in_the_message_is_clipped() -> None:
    with pytest.raises(LLMInvalidResponseError) as raised:
        decode_event("data: {" + "x" * 5000)
    assert raised.value.message.endswith("…")
    assert len(raised.value.message) < 400


# --------------------------------------------------------------------------- StreamAssembler


def test_assembles_content_reasoning_and_model() -> None:
    assembler = StreamAssembler()
    pieces = []
    for event in [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "hmm "}),
        chunk({"reasoning": "ok"}),
        chunk({"content": "Hi"}),
        chunk({"content": " there"}),
        chunk({}, "stop"),
    ]:
        pieces += assembler.feed(event, raise_error)

    assert pieces == [reasoning("hmm "), reasoning("ok"), content("Hi"), content(" there")]
    response = assembler.finish()
    assert (response.content, response.reasoning, response.finish_reason, response.model, response.tool_calls) == (
        "Hi there",
        "hmm ok",
        "stop",
        "m",
        [],
    )


def test_tool_call_fragments_by_index_out_of_order() -> None:
    assembler = StreamAssembler()
    pieces = []
    for event in [
        chunk(call_delta(2, id="call_c", name="third", arguments="")),
        chunk(call_delta(0, id="call_a", name="first", arguments='{"a"')),
        chunk(call_delta(2, arguments='{"c": 3}')),
        chunk(call_delta(1, id="call_b", name="second")),
        chunk(call_delta(0, arguments=": 1}")),
        chunk({}, "tool_calls"),
    ]:
        pieces += assembler.feed(event, raise_error)

    response = assembler.finish()
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_a", "first", '{"a": 1}'),
        ("call_b", "second", "{}"),
        ("call_c", "third", '{"c": 3}'),
    ]
    assert [(p.index, p.text, p.name, p.tool_call_id) for p in pieces] == [
        (2, "", "third", "call_c"),
        (0, '{"a"', "first", "call_a"),
        (2, '{"c": 3}', "third", "call_c"),
        (1, "", "second", "call_b"),
        (0, ": 1}", "first", "call_a"),
    ]
    assert response.content is None


def test_several_fragments_in_one_delta() -> None:
    assembler = StreamAssembler()
    delta = {
        "tool_calls": [
            {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}},
            {"index": 1, "id": "b", "function": {"name": "g", "arguments": "[]"}},
        ]
    }
    pieces = assembler.feed(chunk(delta, "tool_calls"), raise_error)
    assert [(p.index, p.text) for p in pieces] == [(0, "{}"), (1, "[]")]
    assert [(c.id, c.name, c.arguments) for c in assembler.finish().tool_calls] == [("a", "f", "{}"), ("b", "g", "[]")]


def test_arguments_as_an_object_are_kept_as_json() -> None:
    assembler = StreamAssembler()
    (piece,) = assembler.feed(
        chunk(call_delta(0, id="c", name="f", arguments={"k": "ü", "n": [1]}), "tool_calls"), raise_error
    )
    (call,) = assembler.finish().tool_calls
    assert json.loads(call.arguments) == {"k": "ü", "n": [1]}
    assert piece.text == call.arguments


def test_finished() -> None:
    by_finish = StreamAssembler()
    assert not by_finish.finished
    by_finish.feed(chunk({"content": "x"}), raise_error)
    assert not by_finish.finished
    by_finish.feed(chunk({}, "length"), raise_error)
    assert by_finish.finished
    by_finish.feed(chunk({"content": "y"}), raise_error)
    assert by_finish.finished, "a finish reason is not forgotten by a later chunk without one"
    assert by_finish.finish().finish_reason == "length"

    by_done = StreamAssembler()
    by_done.feed(chunk({"content": "x"}), raise_error)
    by_done.done = True
    assert by_done.finished
    assert by_done.finish().finish_reason is None


def test_usage_only_chunk() -> None:
    """OpenAI sends usage last, in a chunk with no choices; `"usage": null` before it changes nothing."""
    assembler = StreamAssembler()
    assembler.feed(chunk({"content": "x"}, usage=None), raise_error)
    assert (
        assembler.feed(
            {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}, raise_error
        )
        == []
    )
    assembler.feed(chunk({}, "stop", usage=None), raise_error)

    usage = assembler.finish().usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_input_tokens, usage.reasoning_tokens) == (
        11,
        3,
        None,
        None,
    )


def test_no_usage_at_all() -> None:
    assembler = StreamAssembler()
    assembler.feed(chunk({"content": "x"}, "stop"), raise_error)
    assert assembler.finish().usage is None


def test_other_choices_are_ignored() -> None:
    assembler = StreamAssembler()
    assert (
        assembler.feed(
            {"choices": [{"index": 1, "delta": {"content": "other"}, "finish_reason": "stop"}, "junk"]}, raise_error
        )
        == []
    )
    assert not assembler.finished
    assembler.feed(chunk({"content": "mine"}, "stop"), raise_error)
    assert assembler.finish().content == "mine"


@pytest.mark.parametrize("event", [["a", "list"], "text", 3, None])
def test_an_event_that_is_not_an_object_is_invalid(event: Any) -> None:
    with pytest.raises(LLMInvalidResponseError, match="not a JSON object"):
        StreamAssembler().feed(event, raise_error)


def test_a_fragment_without_an_integer_index_is_invalid() -> None:
    with pytest.raises(LLMInvalidResponseError, match="integer index"):
        StreamAssembler().feed(chunk({"tool_calls": [{"index": "0", "function": {"name": "f"}}]}), raise_error)


@pytest.mark.parametrize(
    ("error", "error_class"),
    [
        ({"message": "slow down", "type": "rate_limit_error"}, LLMRateLimitError),
        ({"message": "bad", "type": "invalid_request_error"}, LLMBadRequestError),
        (
            {"message": "maximum context length is 8192 tokens", "code": "context_length_exceeded"},
            ContextWindowExceededError,
        ),
        ({"message": "no key", "type": "authentication_error"}, LLMAuthenticationError),
        ({"message": "boom", "type": "server_error"}, LLMServerError),
        ("bare text", LLMServerError),
    ],
)
def test_an_error_event_raises_the_typed_error(error: Any, error_class: type[LLMError]) -> None:
    assembler = StreamAssembler()
    assembler.feed(chunk({"content": "partial"}), raise_error)
    with pytest.raises(LLMError) as raised:
        assembler.feed({"error": error}, raise_error)
    assert type(raised.value) is error_class
    assert (error["message"] if isinstance(error, dict) else error) in raised.value.message


def test_nothing_said_is_invalid() -> None:
    assembler = StreamAssembler()
    assembler.feed(chunk({"role": "assistant", "content": ""}), raise_error)
    assembler.feed(chunk({"reasoning_content": "only thoughts"}, "stop"), raise_error)
    with pytest.raises(LLMInvalidResponseError, match="neither text nor a tool call"):
        assembler.finish()


def test_a_call_without_a_name_is_invalid() -> None:
    assembler = StreamAssembler()
    assembler.feed(chunk(call_delta(0, id="c", arguments="{}"), "tool_calls"), raise_error)
    with pytest.raises(LLMInvalidResponseError, match="without a name"):
        assembler.finish()


def test_read_usage() -> None:
    assert read_usage(None) is None
    assert read_usage("12") is None
    usage = read_usage(
        {
            "prompt_tokens": 9,
            "completion_tokens_details": {"reasoning_tokens": 4},
            "prompt_tokens_details": {"cached_tokens": 0},
        }
    )
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_input_tokens, usage.reasoning_tokens) == (
        9,
        0,
        0,
        4,
    )


# --------------------------------------------------------------------------- step_events

STEP = StepRecord(id="step-1", run_id="run-1", agent_id="agent-1", step_number=1)
CALLS = [
    ToolCall(id="call_a", name="get_weather", arguments='{"city": "Oslo"}'),
    ToolCall(id="call_b", name="ping", arguments="{}"),
]


def ids() -> Any:
    counter = iter(range(100))
    return lambda: f"message-{next(counter)}"


def user(text: str, new_id: Any) -> Message:
    return Message(
        id=new_id(),
        agent_id=STEP.agent_id,
        role="user",
        content=[TextContent(text=text)],
        run_id=STEP.run_id,
        step_id=STEP.id,
    )


def answer_with_calls() -> Message:
    output = LLMStepOutput(
        content="Checking the weather.", reasoning="The user wants weather.", tool_calls=CALLS, model="gpt-x"
    )
    return assistant_message(output, CALLS, STEP, "answer-1")


def returns() -> dict[str, ToolReturn]:
    return {
        "call_a": ToolReturn(
            tool_call_id="call_a", status="success", func_response=package_function_response(True, "Sunny, 21 °C", NOW)
        ),
        "call_b": ToolReturn(
            tool_call_id="call_b",
            status="error",
            func_response=package_function_response(False, "no route", NOW),
            stderr=["timeout"],
        ),
    }


def common(message_id: str) -> dict[str, Any]:
    return {"id": message_id, "run_id": STEP.run_id, "step_id": STEP.id}


WEATHER = {"name": "get_weather", "arguments": '{"city": "Oslo"}', "tool_call_id": "call_a"}
PING = {"name": "ping", "arguments": "{}", "tool_call_id": "call_b"}


def expected_tool_return(message_id: str) -> dict[str, Any]:
    return {
        "message_type": "tool_return_message",
        **common(message_id),
        "tool_return": "Sunny, 21 °C",
        "status": "success",
        "tool_call_id": "call_a",
        "tool_returns": [
            {"type": "tool", "tool_call_id": "call_a", "status": "success", "tool_return": "Sunny, 21 °C"},
            {
                "type": "tool",
                "tool_call_id": "call_b",
                "status": "error",
                "tool_return": "no route",
                "stderr": ["timeout"],
            },
        ],
    }


def test_a_step_without_token_streaming_publishes_the_answer_and_the_returns() -> None:
    new_id = ids()
    messages = [user("weather?", new_id), answer_with_calls(), tool_message(CALLS, returns(), STEP, new_id)]
    tool_id = messages[2].id

    events = step_events(messages, tokens_streamed=False)

    assert events == [
        {
            "message_type": "reasoning_message",
            **common("answer-1"),
            "source": "reasoner_model",
            "reasoning": "The user wants weather.",
        },
        {"message_type": "assistant_message", **common("answer-1"), "content": "Checking the weather."},
        {
            "message_type": "tool_call_message",
            **common("answer-1"),
            "tool_call": WEATHER,
            "tool_calls": [WEATHER, PING],
        },
        expected_tool_return(tool_id),
    ]
    json.dumps(events)  # ready for the wire as they are


def test_with_token_streaming_the_answer_is_not_published_again() -> None:
    """Its chunks already went out under the same id; only what followed it is published."""
    new_id = ids()
    messages = [user("weather?", new_id), answer_with_calls(), tool_message(CALLS, returns(), STEP, new_id)]

    events = step_events(messages, tokens_streamed=True)

    assert events == [expected_tool_return(messages[2].id)]


@pytest.mark.parametrize("tokens_streamed", [False, True])
def test_user_messages_are_never_published(tokens_streamed: bool) -> None:
    new_id = ids()
    messages = [
        user("first", new_id),
        user("second", new_id),
        keep_going_message("a required tool was not called", STEP, new_id, NOW),
    ]

    assert step_events(messages, tokens_streamed=tokens_streamed) == []


def test_a_text_only_answer_and_its_heartbeat() -> None:
    new_id = ids()
    answer = assistant_message(LLMStepOutput(content="Done.", model="gpt-x"), [], STEP, "answer-2")
    messages = [answer, keep_going_message("continue", STEP, new_id, NOW)]

    assert step_events(messages, tokens_streamed=False) == [
        {"message_type": "assistant_message", **common("answer-2"), "content": "Done."}
    ]
    assert step_events(messages, tokens_streamed=True) == []


@pytest.mark.parametrize("tokens_streamed", [False, True])
def test_approval_request_and_response_are_kept(tokens_streamed: bool) -> None:
    """The answers are not model tokens: they are published either way; the request holding
    the model's calls is, when tokens are streamed."""
    new_id = ids()
    request = approval_request(CALLS, ["call_b"], STEP, new_id())
    pending = [
        PendingCall(
            tool_call_id="call_a",
            name="get_weather",
            arguments=CALLS[0].arguments,
            kind="approval",
            answer=ApprovalAnswer(tool_call_id="call_a", approve=False, reason="not now"),
        ),
        PendingCall(
            tool_call_id="call_b",
            name="ping",
            arguments="{}",
            kind="client_tool",
            answer=ClientToolReturn(tool_call_id="call_b", tool_return="pong", stdout=["ok"]),
        ),
    ]
    response = approval_response(pending, STEP, new_id)

    events = step_events([answer_with_calls(), request, response], tokens_streamed=tokens_streamed)

    published = [
        {
            "message_type": "approval_request_message",
            **common(request.id),
            "tool_call": WEATHER,
            "tool_calls": [WEATHER, PING],
        },
        {
            "message_type": "approval_response_message",
            **common(response.id),
            "approvals": [
                {"type": "approval", "tool_call_id": "call_a", "approve": False, "reason": "not now"},
                {
                    "type": "tool",
                    "tool_call_id": "call_b",
                    "status": "success",
                    "tool_return": "pong",
                    "stdout": ["ok"],
                },
            ],
        },
    ]
    if tokens_streamed:  # the held calls went out as approval request chunks from the LLM activity
        assert events == published[1:]
    else:
        assert events[-2:] == published and len(events) == 5
    assert all(STREAM_EVENT.validate_python(event).message_type == event["message_type"] for event in events)


# --------------------------------------------------------------------------- outcome_events


def usage() -> LettaUsageStatistics:
    stats = LettaUsageStatistics()
    stats.add(100, 20, cached=64)
    stats.add(150, 30)
    return stats


def test_end_turn_ends_with_stop_reason_then_usage() -> None:
    events = outcome_events("run-1", StopReasonType.end_turn, usage(), failure=None, failure_type=None)

    assert events == [
        {"message_type": "stop_reason", "stop_reason": "end_turn"},
        {
            "message_type": "usage_statistics",
            "completion_tokens": 50,
            "prompt_tokens": 250,
            "total_tokens": 300,
            "step_count": 2,
            "run_ids": ["run-1"],
            "cached_input_tokens": 64,
        },
    ]


@pytest.mark.parametrize("stop", [StopReasonType.requires_approval, StopReasonType.max_steps, StopReasonType.cancelled])
def test_other_stops_without_failure_also_report_usage(stop: StopReasonType) -> None:
    events = outcome_events("run-1", stop, usage(), failure=None, failure_type=None)
    assert [e["message_type"] for e in events] == ["stop_reason", "usage_statistics"]
    assert events[0]["stop_reason"] == stop.value


@pytest.mark.parametrize(
    ("failure_type", "error_type"),
    [
        ("LLMTimeoutError", "llm_timeout"),
        ("TimeoutError", "llm_timeout"),
        ("LLMRateLimitError", "llm_rate_limit"),
        ("LLMAuthenticationError", "llm_authentication"),
        ("LLMServerError", "llm_error"),
        ("LLMConnectionError", "llm_error"),
        ("LLMBadRequestError", "llm_error"),
        ("LLMInvalidResponseError", "llm_error"),
        (None, "internal_error"),
        ("ActivityError", "internal_error"),
    ],
)
def test_a_failure_ends_with_stop_reason_then_the_error(failure_type: str | None, error_type: str) -> None:
    events = outcome_events(
        "run-9",
        StopReasonType.llm_api_error,
        usage(),
        failure="429 from http://x: slow down",
        failure_type=failure_type,
    )

    assert events == [
        {"message_type": "stop_reason", "stop_reason": "llm_api_error"},
        {
            "message_type": "error_message",
            "run_id": "run-9",
            "error_type": error_type,
            "message": "An error occurred during agent execution.",
            "detail": "429 from http://x: slow down",
        },
    ]


@pytest.mark.parametrize("failure_type", ["ContextWindowExceededError", "LLMRateLimitError", None])
def test_overflow_stop_is_named_as_such(failure_type: str | None) -> None:
    events = outcome_events(
        "run-2",
        StopReasonType.context_window_overflow_in_system_prompt,
        usage(),
        failure="the system prompt alone is 9000 tokens",
        failure_type=failure_type,
    )

    assert events == [
        {"message_type": "stop_reason", "stop_reason": "context_window_overflow_in_system_prompt"},
        {
            "message_type": "error_message",
            "run_id": "run-2",
            "error_type": "context_window_overflow_in_system_prompt",
            "message": ERROR_MESSAGE,
            "detail": "the system prompt alone is 9000 tokens",
        },
    ]


def test_error_event_without_detail() -> None:
    event = error_event("run-3", None, None, False)
    assert event == LettaErrorMessage(run_id="run-3", error_type="internal_error", message=ERROR_MESSAGE)
    assert event.model_dump(mode="json", exclude_none=True) == {
        "message_type": "error_message",
        "run_id": "run-3",
        "error_type": "internal_error",
        "message": ERROR_MESSAGE,
    }


# --------------------------------------------------------------------------- stream_tokens_now


@pytest.mark.parametrize(
    ("requested", "history_length", "expected"),
    [
        (True, 0, True),
        (True, 1, True),
        (True, TOKEN_STREAM_HISTORY_LIMIT - 1, True),
        (True, TOKEN_STREAM_HISTORY_LIMIT, False),
        (True, TOKEN_STREAM_HISTORY_LIMIT + 1, False),
        (True, 51_200, False),
        (False, 0, False),
        (False, TOKEN_STREAM_HISTORY_LIMIT - 1, False),
    ],
)
def test_stream_tokens_now(requested: bool, history_length: int, expected: bool) -> None:
    assert stream_tokens_now(requested, history_length) is expected


# --------------------------------------------------------------------------- STREAM_EVENT


def _tool_call() -> LettaToolCall:
    return LettaToolCall(name="get_weather", arguments='{"city": "Oslo"}', tool_call_id="call_a")


EVERY_EVENT: list[StreamEvent] = [
    SystemMessage(id="m0", content="You are helpful."),
    UserMessage(id="m1", content="hi 👋", otid="o1", date=NOW),
    AssistantMessage(id="m2", content="Hello", run_id="r", step_id="s"),
    ReasoningMessage(id="m2", reasoning="think", signature="sig"),
    HiddenReasoningMessage(id="m2", state="redacted", hidden_reasoning="opaque"),
    ToolCallMessage(id="m2", tool_call=_tool_call(), tool_calls=[_tool_call()]),
    ToolReturnMessage(
        id="m3",
        tool_return="Sunny",
        status="success",
        tool_call_id="call_a",
        stdout=["out"],
        tool_returns=[LettaToolReturn(tool_call_id="call_a", status="success", tool_return="Sunny", stdout=["out"])],
    ),
    ApprovalRequestMessage(id="m4", tool_call=_tool_call(), tool_calls=[_tool_call()]),
    ApprovalResponseMessage(
        id="m5",
        approvals=[
            ApprovalReturn(tool_call_id="call_a", approve=True),
            LettaToolReturn(tool_call_id="call_b", status="error", tool_return="no", stderr=["e"]),
        ],
    ),
    SummaryMessage(id="m6", summary="Earlier: greetings.", compaction_stats={"evicted": 4}),
    EventMessage(id="m7", event_data={"before": 9000, "after": 2000}),
    LettaStopReason(stop_reason=StopReasonType.requires_approval),
    LettaUsageStatistics(
        completion_tokens=5, prompt_tokens=7, total_tokens=12, step_count=1, run_ids=["r"], reasoning_tokens=2
    ),
    LettaErrorMessage(run_id="r", error_type="llm_timeout", message=ERROR_MESSAGE, detail="timed out"),
    AttemptStarted(run_id="r", step_id="s", attempt=2),
]


def test_every_event_type_is_covered() -> None:
    (union, _field) = typing.get_args(StreamEvent)
    assert {type(event) for event in EVERY_EVENT} == set(typing.get_args(union))


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: e.message_type)  # type: ignore[attr-defined]
def test_stream_event_round_trips(event: StreamEvent) -> None:
    """What the workflow publishes (JSON, nulls left out) reads back as the same event."""
    wire = event.model_dump(mode="json", exclude_none=True)

    assert STREAM_EVENT.validate_python(wire) == event
    assert STREAM_EVENT.validate_json(json.dumps(wire)) == event
    assert type(STREAM_EVENT.validate_python(wire)) is type(event)
    assert STREAM_EVENT.dump_python(event, mode="json", exclude_none=True) == wire


def test_unknown_or_missing_message_type_is_rejected() -> None:
    with pytest.raises(ValidationError):
        STREAM_EVENT.validate_python({"message_type": "telepathy", "id": "x"})
    with pytest.raises(ValidationError):
        STREAM_EVENT.validate_python({"run_id": "r", "step_id": "s", "attempt": 2})


@pytest.mark.parametrize(
    ("attempt", "request_number", "said"),
    [
        (2, 1, "is tried again (attempt 2)"),
        (1, 2, "is asked again after compacting the context (request 2)"),
        (3, 2, "is tried again (attempt 3)"),
    ],
)
def test_the_printer_says_why_a_partial_answer_is_void(attempt: int, request_number: int, said: str) -> None:
    out = io.StringIO()
    printer = StreamPrinter(out)
    printer.show(StreamItem(offset=0, event=AssistantMessage(id="message-1", content="Half an ans")))
    printer.show(
        StreamItem(
            offset=1, event=AttemptStarted(run_id="run-1", step_id="step-1", attempt=attempt, request=request_number)
        )
    )
    printer.finish()

    lines = out.getvalue().splitlines()
    assert lines[-1] == f"-- the LLM request of step step-1 {said}; the partial answer above is void"
    assert "Half an ans" in lines[0], "the partial answer was shown on its own line first"
