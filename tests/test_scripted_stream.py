"""The scripted server's streaming answers, read with a real httpx client over a real socket.

The provider's SSE parser is only as trustworthy as the stand-in it is tested against, so the
wire format is pinned here on its own: OpenAI's chunk objects, token-sized pieces, tool-call
fragments, the usage chunk, and the failures a real stream can have (a drop, an error event).
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from perdure.scripted.replies import token_pieces
from perdure.scripted.server import DEMO_MODEL, ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.tokens import count_message, count_request

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
CONTENT = "Streaming answers arrive one token at a time, naïvely 🎉 or not."
WITH_USAGE: dict[str, Any] = {"stream_options": {"include_usage": True}}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(10.0)) as client:
        yield client


def post(http: httpx.Client, llm: ScriptedLLMServer, model: str, **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "stream": True, **fields}
    return http.post(f"{llm.base_url}/chat/completions", json=body)


def events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of a complete SSE body, checking each event ends with a blank line."""
    text = response.text
    assert text.endswith("\n\n")
    blocks = text.split("\n\n")[:-1]
    assert all(block.startswith("data: ") and "\n" not in block for block in blocks)
    return [block.removeprefix("data: ") for block in blocks]


def chunks(payloads: list[str]) -> list[dict[str, Any]]:
    """The JSON chunks before `[DONE]`, which must be the last event."""
    assert payloads[-1] == "[DONE]"
    assert "[DONE]" not in payloads[:-1]
    return [json.loads(payload) for payload in payloads[:-1]]


def deltas(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk["choices"][0]["delta"] for chunk in stream if chunk["choices"]]


def stream_lines(http: httpx.Client, llm: ScriptedLLMServer, model: str, **fields: Any) -> Iterator[tuple[float, str]]:
    """Each non-blank SSE line with the monotonic time it was read, as the client gets it."""
    body = {"model": model, "messages": MESSAGES, "stream": True, **fields}
    with http.stream("POST", f"{llm.base_url}/chat/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                yield time.monotonic(), line


def test_chunk_format_and_order(llm: ScriptedLLMServer, http: httpx.Client, model_name: str) -> None:
    llm.script(model_name, [ScriptedReply(content=CONTENT, reasoning="Say how streaming works.")])
    response = post(http, llm, model_name)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    stream = chunks(events(response))
    assert len({chunk["id"] for chunk in stream}) == 1
    assert stream[0]["id"].startswith("chatcmpl-")
    for chunk in stream:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == model_name
        assert isinstance(chunk["created"], int)
        assert "usage" not in chunk
        [choice] = chunk["choices"]
        assert choice["index"] == 0
    assert stream[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert stream[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in stream[:-1])
    kinds = [next(iter(delta)) for delta in deltas(stream)[1:-1]]
    assert kinds == sorted(kinds, key=["reasoning_content", "content"].index), "reasoning streams before content"


def test_content_and_reasoning_come_a_token_per_chunk(
    llm: ScriptedLLMServer, http: httpx.Client, model_name: str
) -> None:
    reasoning = "Think first, then answer."
    llm.script(model_name, [ScriptedReply(content=CONTENT, reasoning=reasoning)])
    pieces = deltas(chunks(events(post(http, llm, model_name))))[1:-1]
    content = [d["content"] for d in pieces if "content" in d]
    thought = [d["reasoning_content"] for d in pieces if "reasoning_content" in d]
    assert all(len(d) == 1 for d in pieces)
    assert "".join(content) == CONTENT
    assert "".join(thought) == reasoning
    assert content == token_pieces(CONTENT)
    # One piece per token, except that the emoji's bytes span several tokens and stay whole.
    assert len(content) > 10
    assert len(content) <= len(token_pieces(CONTENT.replace("🎉", "x"))) + 1
    assert all(piece for piece in content + thought)


def test_token_pieces_keep_split_characters_whole() -> None:
    text = "日本語のテキスト 🎉🎉 done"
    pieces = token_pieces(text)
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    assert token_pieces("") == [] and token_pieces(None) == []


def test_tool_call_deltas_reassemble(llm: ScriptedLLMServer, http: httpx.Client, model_name: str) -> None:
    calls = [
        ScriptedToolCall(name="get_weather", arguments={"city": "Paris", "unit": "celsius"}, id="call_one"),
        ScriptedToolCall(name="send_message", arguments='{"message": "It is sunny in Paris."}', id="call_two"),
        ScriptedToolCall(name="no_args", arguments="", id="call_three"),
    ]
    llm.script(model_name, [ScriptedReply(content="Checking.", tool_calls=calls)])
    stream = chunks(events(post(http, llm, model_name)))
    assert stream[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assembled: dict[int, dict[str, Any]] = {}
    for delta in deltas(stream):
        for fragment in delta.get("tool_calls", []):
            assert set(delta) == {"tool_calls"} and len(delta["tool_calls"]) == 1
            index = fragment["index"]
            if index not in assembled:
                assert fragment["type"] == "function" and fragment["function"]["arguments"] == ""
                assembled[index] = {"id": fragment["id"], "name": fragment["function"]["name"], "arguments": ""}
            else:
                assert set(fragment) == {"index", "function"} and set(fragment["function"]) == {"arguments"}
                assert fragment["function"]["arguments"]
                assembled[index]["arguments"] += fragment["function"]["arguments"]
    assert [assembled[i] for i in sorted(assembled)] == [
        {"id": call.id, "name": call.name, "arguments": call.wire()["function"]["arguments"]} for call in calls
    ]
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas(stream) if "tool_calls" in d]
    assert fragments.count("") == 3, "only the opening delta of each call has empty arguments"
    assert len(fragments) == 3 + len(token_pieces(json.dumps(calls[0].arguments))) + len(
        token_pieces(str(calls[1].arguments))
    )


def test_tool_call_without_id_and_explicit_finish_reason(
    llm: ScriptedLLMServer, http: httpx.Client, model_name: str
) -> None:
    llm.script(model_name, [ScriptedReply(tool_calls=[ScriptedToolCall(name="ping", id="")], finish_reason="length")])
    stream = chunks(events(post(http, llm, model_name)))
    assert stream[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    opening = stream[1]["choices"][0]["delta"]["tool_calls"][0]
    assert "id" not in opening and opening["function"]["name"] == "ping"
    assert stream[-1]["choices"][0]["finish_reason"] == "length"


def test_usage_chunk_only_with_include_usage(llm: ScriptedLLMServer, http: httpx.Client, model_name: str) -> None:
    reply = ScriptedReply(content=CONTENT, tool_calls=[ScriptedToolCall(name="f", arguments={"x": 1})])
    llm.script(model_name, [reply, reply, reply.model_copy(update={"report_usage": False})])
    plain = json.loads(
        http.post(f"{llm.base_url}/chat/completions", json={"model": model_name, "messages": MESSAGES}).text
    )

    with_usage = chunks(events(post(http, llm, model_name, **WITH_USAGE)))
    last = with_usage[-1]
    assert last["choices"] == [] and last["object"] == "chat.completion.chunk"
    assert last["usage"] == plain["usage"]
    message = plain["choices"][0]["message"]
    prompt = count_request(MESSAGES)
    assert last["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": count_message(message),
        "total_tokens": prompt + count_message(message),
    }
    assert all(chunk["usage"] is None for chunk in with_usage[:-1])
    assert with_usage[-2]["choices"][0]["finish_reason"] == "tool_calls"

    unreported = chunks(events(post(http, llm, model_name, **WITH_USAGE)))
    assert all(chunk["choices"] and "usage" not in chunk for chunk in unreported)
    assert unreported[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_without_stream_the_reply_is_one_json_completion(
    llm: ScriptedLLMServer, http: httpx.Client, model_name: str
) -> None:
    llm.script(model_name, [ScriptedReply(content=CONTENT, chunk_delay_s=5, drop_after_chunks=1)])
    response = post(http, llm, model_name, stream=False)
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json()["choices"][0]["message"]["content"] == CONTENT


@pytest.mark.parametrize("status", [400, 429, 503])
def test_error_status_stays_json_when_streaming(
    llm: ScriptedLLMServer, http: httpx.Client, model_name: str, status: int
) -> None:
    error = {"error": {"message": "nope", "type": "invalid_request_error", "code": "bad"}}
    llm.script(model_name, [ScriptedReply(status=status, error=error, headers={"Retry-After": "3"})])
    response = post(http, llm, model_name, **WITH_USAGE)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "3"
    assert response.json() == error


def test_raw_body_is_sent_as_is_as_an_event_stream(llm: ScriptedLLMServer, http: httpx.Client, model_name: str) -> None:
    malformed = 'data: {"choices": [{"delta": {"content": "half\n\ndata: not json\n\n'
    llm.script(model_name, [ScriptedReply(raw_body=malformed), ScriptedReply(raw_body="")])
    response = post(http, llm, model_name)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text == malformed
    empty = post(http, llm, model_name)
    assert empty.status_code == 200 and empty.text == ""


@pytest.mark.parametrize("after", [0, 3])
def test_drop_after_chunks_cuts_the_connection(
    llm: ScriptedLLMServer, http: httpx.Client, model_name: str, after: int
) -> None:
    llm.script(model_name, [ScriptedReply(content=CONTENT, drop_after_chunks=after), ScriptedReply(content="next")])
    received: list[str] = []
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        for _, line in stream_lines(http, llm, model_name, **WITH_USAGE):
            received.append(line)
    payloads = [line.removeprefix("data: ") for line in received]
    assert "[DONE]" not in payloads
    stream = [json.loads(payload) for payload in payloads]
    assert len(stream) == 1 + after
    assert "".join(d.get("content", "") for d in deltas(stream)) == "".join(token_pieces(CONTENT)[:after])
    assert llm.in_flight(model_name) == 0
    assert chunks(events(post(http, llm, model_name)))[1]["choices"][0]["delta"] == {"content": "next"}, (
        "the server keeps serving"
    )


def test_drop_after_more_chunks_than_there_are_still_drops(
    llm: ScriptedLLMServer, http: httpx.Client, model_name: str
) -> None:
    llm.script(model_name, [ScriptedReply(content="short", drop_after_chunks=1000)])
    received: list[str] = []
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        for _, line in stream_lines(http, llm, model_name):
            received.append(line)
    finishes = [json.loads(line.removeprefix("data: "))["choices"][0]["finish_reason"] for line in received]
    assert finishes == [None] * (1 + len(token_pieces("short")))


def test_error_after_chunks_sends_an_error_event(llm: ScriptedLLMServer, http: httpx.Client, model_name: str) -> None:
    custom = {"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}}
    llm.script(
        model_name,
        [
            ScriptedReply(content=CONTENT, error_after_chunks=2),
            ScriptedReply(content=CONTENT, error_after_chunks=4, error=custom),
            ScriptedReply(content=CONTENT, error_after_chunks=1, error=custom["error"]),
        ],
    )
    for after, expected in [
        (2, {"error": {"message": "scripted mid-stream error", "type": "server_error"}}),
        (4, custom),
        (1, custom),
    ]:
        response = post(http, llm, model_name, **WITH_USAGE)
        assert response.status_code == 200
        payloads = events(response)
        assert "[DONE]" not in payloads
        *stream, last = [json.loads(payload) for payload in payloads]
        assert last == expected
        assert len(stream) == 1 + after
        assert all(chunk["choices"][0]["finish_reason"] is None for chunk in stream)


def test_drop_wins_over_a_later_error(llm: ScriptedLLMServer, http: httpx.Client, model_name: str) -> None:
    llm.script(model_name, [ScriptedReply(content=CONTENT, drop_after_chunks=2, error_after_chunks=5)])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        for _, line in stream_lines(http, llm, model_name):
            assert "error" not in json.loads(line.removeprefix("data: "))


def test_chunk_delay_spreads_chunks_in_time(llm: ScriptedLLMServer, http: httpx.Client, model_name: str) -> None:
    content = "one two three"
    assert len(token_pieces(content)) == 3
    llm.script(model_name, [ScriptedReply(content=content, chunk_delay_s=0.05)])
    started = time.monotonic()
    arrivals = [at for at, _ in stream_lines(http, llm, model_name)]
    # role, 3 pieces, finish, [DONE]: six events, five gaps.
    assert len(arrivals) == 6
    assert arrivals[-1] - started >= 0.2
    assert arrivals[-1] - arrivals[0] >= 0.2
    assert sum(1 for a, b in itertools.pairwise(arrivals) if b - a >= 0.03) >= 4, "chunks arrive apart, not at once"


def test_in_flight_covers_delay_and_the_whole_stream(
    llm: ScriptedLLMServer, http: httpx.Client, model_name: str
) -> None:
    llm.script(model_name, [ScriptedReply(content="one two three", delay_s=0.3, chunk_delay_s=0.1)])
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(events(post(http, llm, model_name))))
    started = time.monotonic()
    reader.start()
    while llm.in_flight(model_name) == 0 and time.monotonic() - started < 5:
        time.sleep(0.01)
    assert llm.in_flight(model_name) == 1
    time.sleep(0.5)
    assert llm.in_flight(model_name) == 1, "still streaming after the first-byte delay"
    reader.join(timeout=5)
    assert seen[-1] == "[DONE]" and llm.in_flight(model_name) == 0
    assert time.monotonic() - started >= 0.3 + 5 * 0.1


def test_first_byte_waits_for_delay(llm: ScriptedLLMServer, http: httpx.Client, model_name: str) -> None:
    llm.script(model_name, [ScriptedReply(content="hi", delay_s=0.3)])
    started = time.monotonic()
    first, _ = next(iter(stream_lines(http, llm, model_name)))
    assert first - started >= 0.3


def test_demo_model_streams(llm: ScriptedLLMServer, http: httpx.Client) -> None:
    said = {"role": "user", "content": "My name is Ada and I love tea."}
    memory_tool = {"type": "function", "function": {"name": "memory_insert", "parameters": {"type": "object"}}}
    stream = chunks(events(post(http, llm, DEMO_MODEL, messages=[said], tools=[memory_tool], **WITH_USAGE)))
    assert stream[-1]["usage"]["completion_tokens"] > 0
    assert stream[-2]["choices"][0]["finish_reason"] == "tool_calls"
    fragments = [d["tool_calls"][0]["function"] for d in deltas(stream) if "tool_calls" in d]
    assert fragments[0]["name"] == "memory_insert"
    assert json.loads("".join(f["arguments"] for f in fragments)) == {
        "label": "human",
        "new_string": "The user's name is Ada. They love tea.",
    }
    assert "".join(d.get("reasoning_content", "") for d in deltas(stream))


def test_a_client_that_resets_its_connection_is_not_reported_as_a_server_error(
    llm: ScriptedLLMServer, http: httpx.Client, model_name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    host, port = llm.base_url.removeprefix("http://").split("/")[0].split(":")
    for _ in range(5):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/chat")  # half a request line, then a reset (RST, not FIN)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    llm.script(model_name, [ScriptedReply(content="still serving")])
    assert post(http, llm, model_name, stream=False).json()["choices"][0]["message"]["content"] == "still serving"
    time.sleep(0.2)  # the server threads that saw the resets have finished

    assert "ConnectionResetError" not in capfd.readouterr().err
