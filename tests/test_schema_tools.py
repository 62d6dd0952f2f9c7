"""Schema-constrained tool calling: the response_format, the rewritten history, and decoding
whole or streamed answers (split at every position, so escapes and keys straddle chunks)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from perdure.providers.base import StreamPiece
from perdure.providers.schema_answers import (
    StructuredAnswer,
    StructuredStreamDecoder,
    StructuredToolCall,
    decode_structured,
)
from perdure.providers.schema_tools import (
    encode_response,
    encode_tool_call,
    response_format_for,
    structured_messages,
    tool_instructions,
)

APPEND: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "core_memory_append",
        "description": "Append content to a memory block.",
        "parameters": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "description": "Label of the memory block."},
                "content": {"type": "string", "description": "Text to append."},
            },
            "required": ["label", "content"],
        },
    },
}
SEARCH: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "conversation_search",
        "description": "Search earlier messages.",
        "parameters": {"type": "object", "properties": {"query": {"type": ["string", "null"]}}, "required": []},
    },
}
TOOLS = [APPEND, SEARCH]


def schema_of(response_format: dict[str, Any] | None) -> dict[str, Any]:
    assert response_format is not None
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    schema: dict[str, Any] = response_format["json_schema"]["schema"]
    return schema


def branches(response_format: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each branch keyed by the tool it calls, or "response"."""
    schema = schema_of(response_format)
    out = {}
    for branch in schema.get("anyOf", [schema]):
        assert branch["additionalProperties"] is False
        if "tool_call" in branch["properties"]:
            call = branch["properties"]["tool_call"]
            assert call["required"] == ["name", "arguments"]
            assert list(call["properties"]) == ["name", "arguments"]
            out[call["properties"]["name"]["const"]] = call["properties"]["arguments"]
        else:
            assert branch["properties"] == {"response": {"type": "string"}}
            out["response"] = branch
    return out


# --------------------------------------------------------------------------- response_format


def test_no_tools_needs_no_response_format() -> None:
    assert response_format_for([], "auto") is None
    assert response_format_for(None, None) is None


@pytest.mark.parametrize("choice", ["auto", None])
def test_auto_allows_every_tool_and_an_answer(choice: str | None) -> None:
    found = branches(response_format_for(TOOLS, choice))
    assert list(found) == ["core_memory_append", "conversation_search", "response"]
    assert found["core_memory_append"]["properties"] == APPEND["function"]["parameters"]["properties"]
    assert found["core_memory_append"]["required"] == ["label", "content"]


def test_arguments_are_closed_without_touching_the_tool() -> None:
    before = copy.deepcopy(TOOLS)
    found = branches(response_format_for(TOOLS, "auto"))
    assert found["core_memory_append"]["additionalProperties"] is False
    assert before == TOOLS
    open_tool = copy.deepcopy(SEARCH)
    open_tool["function"]["parameters"]["additionalProperties"] = True
    assert branches(response_format_for([open_tool], "auto"))["conversation_search"]["additionalProperties"] is True


def test_a_tool_without_parameters_takes_an_empty_object() -> None:
    bare = {"type": "function", "function": {"name": "ping"}}
    assert branches(response_format_for([bare], "required"))["ping"] == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }


def test_required_forbids_the_answer() -> None:
    assert list(branches(response_format_for(TOOLS, "required"))) == ["core_memory_append", "conversation_search"]


def test_a_named_choice_allows_only_that_tool() -> None:
    response_format = response_format_for(TOOLS, {"type": "function", "function": {"name": "conversation_search"}})
    assert "anyOf" not in schema_of(response_format)
    assert list(branches(response_format)) == ["conversation_search"]


def test_none_allows_only_the_answer() -> None:
    assert list(branches(response_format_for(TOOLS, "none"))) == ["response"]


@pytest.mark.parametrize("choice", [{"type": "function", "function": {"name": "nope"}}, "sometimes"])
def test_an_impossible_choice_is_refused(choice: Any) -> None:
    with pytest.raises(ValueError, match="tool_choice"):
        response_format_for(TOOLS, choice)


# --------------------------------------------------------------------------- messages


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_the_system_message_gets_the_tool_instructions() -> None:
    out = structured_messages([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}], TOOLS)
    system = out[0]["content"]
    assert system.startswith("Be kind.\n\n")
    assert (
        "- core_memory_append: Append content to a memory block. Arguments: label: Label of the memory block; content: Text to append."
        in system
    )
    assert "- conversation_search: Search earlier messages. Arguments: query (optional)." in system
    assert '"response"' in system and '"tool_call"' in system and '"Tool result"' in system
    assert out[1] == {"role": "user", "content": "hi"}


def test_a_system_message_is_added_when_there_is_none() -> None:
    out = structured_messages([{"role": "user", "content": "hi"}], TOOLS)
    assert out[0] == {"role": "system", "content": tool_instructions(TOOLS)}
    assert out[1] == {"role": "user", "content": "hi"}


def test_instructions_follow_tool_choice() -> None:
    required = tool_instructions(TOOLS, "required")
    assert '"response"' not in required and "call the next tool" in required
    named = tool_instructions(TOOLS, {"type": "function", "function": {"name": "core_memory_append"}})
    assert "conversation_search" not in named
    none = tool_instructions(TOOLS, "none")
    assert "tool_call" not in none and "core_memory_append" not in none


def test_calls_become_json_turns_each_followed_by_its_result() -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "remember and search"},
        {
            "role": "assistant",
            "content": "thinking aloud",
            "tool_calls": [
                call("c1", "core_memory_append", '{"label": "human", "content": "Ada"}'),
                call("c2", "conversation_search", "{}"),
            ],
        },
        {"role": "tool", "tool_call_id": "c2", "content": "no results"},
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "OK"}'},
        {"role": "assistant", "content": "Done, Ada."},
    ]
    out = structured_messages(history, TOOLS)[1:]
    assert out == [
        {"role": "user", "content": "remember and search"},
        {
            "role": "assistant",
            "content": '{"tool_call": {"name": "core_memory_append", "arguments": {"label": "human", "content": "Ada"}}}',
        },
        {"role": "user", "content": 'Tool result (core_memory_append): {"status": "OK"}'},
        {"role": "assistant", "content": '{"tool_call": {"name": "conversation_search", "arguments": {}}}'},
        {"role": "user", "content": "Tool result (conversation_search): no results"},
        {"role": "assistant", "content": '{"response": "Done, Ada."}'},
    ]


def test_history_uses_the_shape_the_model_answers_in() -> None:
    """What the model sees of its earlier turns decodes as its own answers do."""
    assert decode_structured(encode_response('Hi "Ada" ✓')) == StructuredAnswer(content='Hi "Ada" ✓')
    decoded = decode_structured(encode_tool_call("core_memory_append", '{"label": "human", "content": "é"}'))
    assert decoded.tool_call is not None and json.loads(decoded.tool_call.arguments) == {
        "label": "human",
        "content": "é",
    }


def test_malformed_arguments_in_history_are_kept_as_text() -> None:
    assert json.loads(encode_tool_call("f", "{not json"))["tool_call"]["arguments"] == "{not json"
    assert json.loads(encode_tool_call("f", None))["tool_call"]["arguments"] == {}


def test_without_tools_answers_stay_plain_and_calls_stay_readable() -> None:
    history: list[dict[str, Any]] = [
        {"role": "system", "content": "Be kind."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("c1", "core_memory_append", '{"label": "human", "content": "Ada"}')],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "OK"},
        {"role": "assistant", "content": [{"type": "text", "text": "Saved"}, {"type": "text", "text": "."}]},
    ]
    assert structured_messages(history, []) == [
        {"role": "system", "content": "Be kind."},
        {
            "role": "assistant",
            "content": '{"tool_call": {"name": "core_memory_append", "arguments": {"label": "human", "content": "Ada"}}}',
        },
        {"role": "user", "content": "Tool result (core_memory_append): OK"},
        {"role": "assistant", "content": "Saved."},
    ]


def test_a_result_without_its_call_still_reaches_the_model() -> None:
    out = structured_messages([{"role": "tool", "tool_call_id": "gone", "content": "42"}], TOOLS)
    assert out[-1] == {"role": "user", "content": "Tool result (a tool): 42"}


# --------------------------------------------------------------------------- decoding


def test_decodes_a_response() -> None:
    assert decode_structured('{"response": "Hello, Ada."}') == StructuredAnswer(content="Hello, Ada.")
    assert decode_structured('{"response": ""}') == StructuredAnswer(content="")


def test_decodes_a_tool_call_keeping_the_arguments_text() -> None:
    text = '{\n  "tool_call": {\n    "name": "core_memory_append",\n    "arguments": {\n      "label": "human", "content": "Ada"\n    }\n  }\n}'
    answer = decode_structured(text, {"core_memory_append"})
    assert answer == StructuredAnswer(
        tool_call=StructuredToolCall(
            name="core_memory_append", arguments='{\n      "label": "human", "content": "Ada"\n    }'
        )
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Sure, I will remember that.", "not one JSON object: Expecting value"),
        ('{"response": "Hello, I am', "cut off by max_tokens"),
        ('{"tool_call": {"name": "core_memory_append", "arguments": {"label": "hu', "cut off by max_tokens"),
        ('{"response": "a"} trailing', "Extra data"),
        ('{"response": "a", "response": "b"}', "ambiguous"),
        ('{"response": 7}', "matches neither"),
        ('{"reply": "hi"}', "matches neither"),
        ('["response", "hi"]', "matches neither"),
        ('{"response": "hi", "tool_call": {"name": "f", "arguments": {}}}', "matches neither"),
        ('{"tool_call": {"name": "f", "arguments": "{}"}}', "matches neither"),
        ('{"tool_call": {"name": "f", "arguments": {}, "id": "x"}}', "matches neither"),
        ('{"tool_call": {"name": 3, "arguments": {}}}', "matches neither"),
    ],
)
def test_refuses_what_matches_neither_branch(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_structured(text)


def test_refuses_a_tool_that_is_not_allowed() -> None:
    text = '{"tool_call": {"name": "delete_everything", "arguments": {}}}'
    with pytest.raises(ValueError, match="'delete_everything', which is not among the allowed tools"):
        decode_structured(text, {"core_memory_append"})
    assert decode_structured(text).tool_call == StructuredToolCall(name="delete_everything", arguments="{}")


# --------------------------------------------------------------------------- streaming

STREAMED = [
    '{"response": "Hello, Ada."}',
    '{ "response" : "quote \\" backslash \\\\ slash \\/ controls \\b\\f\\n\\r\\t é ✓" }',
    '{"response": "escapes \\u00e9\\u2713 pair \\ud83d\\ude00 end"}',
    '{"response": "lone \\ud83d then \\u0041 and \\ud83d\\ud83d\\ude00"}',
    '{"response": ""}',
    '{\n  "tool_call": {\n    "name": "core_memory_append",\n    "arguments": {\n      "label": "human",\n      "content": "Ada }{ \\"quoted\\" \\u00e9"\n    }\n  }\n}',
    '{"tool_call": {"name": "f", "arguments": {"n": -1.5e3, "ok": true, "none": null, "list": [1, [], {}, "]"], "obj": {"a": {}}}}}',
    '{"tool_call": {"name": "ping", "arguments": {}}}',
    '{"tool_call": {"arguments": {"query": "late name"}, "name": "conversation_search"}}',
]


def run_stream(chunks: list[str]) -> tuple[list[StreamPiece], StructuredAnswer]:
    """Feed chunks, checking after each that the content so far never has to be taken back."""
    decoder = StructuredStreamDecoder()
    pieces: list[StreamPiece] = []
    expected = decode_structured("".join(chunks))
    for chunk in chunks:
        pieces += decoder.feed(chunk)
        so_far = "".join(p.text for p in pieces if p.kind == "content")
        assert (expected.content or "").startswith(so_far)
    return pieces, decoder.finish()


def check_pieces(pieces: list[StreamPiece], answer: StructuredAnswer) -> None:
    content = [p for p in pieces if p.kind == "content"]
    calls = [p for p in pieces if p.kind == "tool_call"]
    if answer.tool_call is None:
        assert not calls
        assert "".join(p.text for p in content) == answer.content
        return
    assert not content
    assert calls[0] == StreamPiece(kind="tool_call", name=answer.tool_call.name)
    assert all(p.name == answer.tool_call.name and p.text for p in calls[1:])
    assert "".join(p.text for p in calls) == answer.tool_call.arguments
    assert isinstance(json.loads(answer.tool_call.arguments), dict)


@pytest.mark.parametrize("text", STREAMED)
def test_streaming_matches_whole_decoding_at_every_split(text: str) -> None:
    whole = decode_structured(text)
    for cut in range(len(text) + 1):
        pieces, answer = run_stream([text[:cut], text[cut:]])
        assert answer == whole, cut
        check_pieces(pieces, answer)
    pieces, answer = run_stream(list(text))
    assert answer == whole
    check_pieces(pieces, answer)


def test_streaming_at_every_pair_of_splits() -> None:
    """Three chunks, so an escape can be cut twice (`\\u` | `00` | `e9`)."""
    text = '{"response": "a\\u00e9\\ud83d\\ude00\\n"}'
    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1):
            pieces, answer = run_stream([text[:first], text[first:second], text[second:]])
            assert answer == StructuredAnswer(content="aé😀\n")
            check_pieces(pieces, answer)


def test_streamed_content_is_decoded_as_json_loads_does() -> None:
    for text in STREAMED[:5]:
        _, answer = run_stream(list(text))
        assert answer.content == json.loads(text)["response"]


def test_the_name_comes_first_and_once_even_when_the_arguments_precede_it() -> None:
    pieces, answer = run_stream(list(STREAMED[-1]))
    assert pieces[0] == StreamPiece(kind="tool_call", name="conversation_search")
    assert sum(1 for p in pieces if not p.text) == 1
    assert answer.tool_call == StructuredToolCall(name="conversation_search", arguments='{"query": "late name"}')


def test_pieces_of_one_feed_are_merged() -> None:
    decoder = StructuredStreamDecoder()
    assert decoder.feed('{"tool_call": {"name": "f", "arguments": {"a": 1}}}') == [
        StreamPiece(kind="tool_call", name="f"),
        StreamPiece(kind="tool_call", text='{"a": 1}', name="f"),
    ]


def test_a_broken_stream_stops_yielding_and_finish_raises() -> None:
    decoder = StructuredStreamDecoder()
    assert decoder.feed('{"response": "ok') == [StreamPiece(kind="content", text="ok")]
    assert decoder.feed('" x "more": "text"}') == []
    with pytest.raises(ValueError, match="not one JSON object"):
        decoder.finish()


def test_a_stream_cut_short_says_so() -> None:
    decoder = StructuredStreamDecoder()
    decoder.feed('{"response": "Hello')
    with pytest.raises(ValueError, match="cut off by max_tokens"):
        decoder.finish()


def test_the_stream_refuses_a_tool_that_is_not_allowed() -> None:
    decoder = StructuredStreamDecoder({"core_memory_append"})
    decoder.feed('{"tool_call": {"name": "other", "arguments": {}}}')
    with pytest.raises(ValueError, match="not among the allowed tools"):
        decoder.finish()
