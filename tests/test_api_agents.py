"""The HTTP API's agents and memory blocks, through the official letta-client, and `perdure
serve` as a user starts it (its API key, its refusal to serve a network without one)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

import httpx
import letta_client
import pytest
from letta_client import AsyncLetta

from perdure.scripted.server import ScriptedLLMServer
from tests.conftest import API_KEY, eventually
from tests.helpers import PERDURE, call, text
from tests.letta_helpers import body, letta_llm_config, parts
from tests.ports import free_port

pytestmark = pytest.mark.usefixtures("worker")


def letta_payload(llm: ScriptedLLMServer, model_name: str, **fields: Any) -> dict[str, Any]:
    """An agent as a Letta program creates it: Letta's llm_config form, and fields Perdure has
    no use for (tags, embedding, metadata)."""
    return {
        "name": "letta-shaped",
        "memory_blocks": [{"label": "human", "value": "", "limit": 500}, {"label": "persona", "value": "I am terse."}],
        "tools": ["core_memory_append"],
        "llm_config": letta_llm_config(model_name, llm.base_url),
        "embedding": "openai/text-embedding-3-small",
        "tags": ["test"],
        "metadata": {"team": "perdure"},
        **fields,
    }


async def test_create_a_letta_shaped_agent_and_talk_to_it(
    letta: AsyncLetta, llm: ScriptedLLMServer, model_name: str
) -> None:
    raw = await letta.agents.with_raw_response.create(**letta_payload(llm, model_name), extra_body={"名前": 1})
    agent = await raw.parse()
    warning = raw.headers["warning"]
    assert "embedding" in warning and "tags" in warning and "\\u540d\\u524d" in warning, "ignored fields are named"
    assert agent.id.startswith("agent-")
    assert agent.llm_config.model == model_name
    assert agent.llm_config.api_model_endpoint == llm.base_url, "model_endpoint is honoured, never dropped"
    assert agent.llm_config.context_window == 16_000
    assert agent.model == f"openai/{model_name}"
    assert [b.label for b in agent.blocks] == ["human", "persona"] and agent.blocks[1].value == "I am terse."
    assert "core_memory_append" in [t.name for t in agent.tools]

    llm.script(model_name, [call("core_memory_append", label="human", content="Name: Ada"), text("Hello Ada.")])
    response = await letta.agents.messages.create(agent.id, input="I am Ada.")
    assert response.stop_reason.stop_reason == "end_turn"
    assert [m.message_type for m in response.messages] == [
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert parts(response)[-1].content == "Hello Ada."
    assert response.usage.step_count == 2
    for message in response.messages:
        assert message.date is not None and message.run_id and message.step_id and message.otid
    assert llm.requests(model_name), "the requests went to the agent's model_endpoint"
    block = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
    assert block.value == "Name: Ada"


async def test_list_get_and_delete_agents(letta: AsyncLetta, llm: ScriptedLLMServer, model_name: str) -> None:
    agent = await letta.agents.create(**letta_payload(llm, model_name, name="to-delete"))
    listed = [a async for a in letta.agents.list(name="to-delete")]
    assert agent.id in [a.id for a in listed]
    assert (await letta.agents.retrieve(agent.id)).name == "to-delete"
    await letta.agents.delete(agent.id)
    with pytest.raises(letta_client.NotFoundError, match="not found"):
        await letta.agents.retrieve(agent.id)
    with pytest.raises(letta_client.NotFoundError):
        await letta.agents.delete(agent.id)


async def test_fields_that_would_change_behaviour_are_refused(
    letta: AsyncLetta, llm: ScriptedLLMServer, model_name: str
) -> None:
    with pytest.raises(letta_client.UnprocessableEntityError) as refused:
        await letta.agents.create(**letta_payload(llm, model_name, tool_ids=["tool-123"]))
    assert "tool_ids" in body(refused.value)["detail"]
    with pytest.raises(letta_client.UnprocessableEntityError) as unknown:
        await letta.agents.create(
            **letta_payload(
                llm,
                model_name,
                llm_config={"model": "claude", "model_endpoint_type": "bedrock", "context_window": 9000},
            )
        )
    assert "unknown model provider 'bedrock'" in body(unknown.value)["detail"]
    with pytest.raises(letta_client.UnprocessableEntityError) as bad_block:
        await letta.agents.create(
            **letta_payload(llm, model_name, memory_blocks=[{"label": "no spaces allowed", "value": ""}])
        )
    assert body(bad_block.value)["detail"].startswith("invalid memory_blocks.0.label")
    with pytest.raises(letta_client.UnprocessableEntityError, match="unknown tool"):
        await letta.agents.create(**letta_payload(llm, model_name, tools=["no_such_tool"]))


async def test_health(letta: AsyncLetta) -> None:
    assert (await letta.health()).status == "ok"


async def test_wrong_or_missing_api_key_is_401(api_url: str) -> None:
    for key in ("wrong-key", None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(base_url=api_url, headers=headers) as http:
            answer = await http.get("/v1/agents/")
        assert answer.status_code == 401
        assert "PERDURE_API_KEY" in answer.json()["detail"]
    async with AsyncLetta(base_url=api_url, api_key="wrong-key") as wrong:
        with pytest.raises(letta_client.AuthenticationError):
            await wrong.agents.retrieve("agent-x")


async def test_reading_and_changing_a_block(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": "unknown", "limit": 40}])
    block = await letta.agents.blocks.update("human", agent_id=agent.id, value="Name: Grace")
    assert block.value == "Name: Grace"
    assert (await letta.agents.blocks.retrieve("human", agent_id=agent.id)).value == "Name: Grace"
    llm.script(model_name, [text("Hi Grace.")])
    await letta.agents.messages.create(agent.id, input="Who am I?")
    assert "Name: Grace" in llm.requests(model_name)[-1]["messages"][0]["content"], (
        "the next request sees the new value"
    )

    with pytest.raises(letta_client.NotFoundError, match="no block 'persona'"):
        await letta.agents.blocks.retrieve("persona", agent_id=agent.id)
    with pytest.raises(letta_client.UnprocessableEntityError, match="over block 'human''s limit of 40"):
        await letta.agents.blocks.update("human", agent_id=agent.id, value="x" * 41)
    with pytest.raises(letta_client.UnprocessableEntityError, match="only a block's value"):
        await letta.agents.blocks.update("human", agent_id=agent.id, limit=100)


async def test_a_block_change_while_a_run_waits_is_refused(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": "before"}],
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
    )
    llm.script(model_name, [call("core_memory_append", label="human", content="x")])
    paused = await letta.agents.messages.create(agent.id, input="remember x")
    assert paused.stop_reason.stop_reason == "requires_approval"
    with pytest.raises(letta_client.ConflictError, match="has a live run"):
        await letta.agents.blocks.update("human", agent_id=agent.id, value="after")
    waiting = await letta.agents.retrieve(agent.id, include=["agent.pending_approval"])
    assert waiting.pending_approval is not None and waiting.pending_approval.id == parts(paused)[0].id
    assert waiting.last_stop_reason == "requires_approval"
    assert (await letta.agents.retrieve(agent.id)).pending_approval is None, "only when asked for"
    assert (await letta.agents.blocks.retrieve("human", agent_id=agent.id)).value == "before", "nothing changed"
    with pytest.raises(letta_client.ConflictError, match="cancel it first"):
        await letta.agents.delete(agent.id)
    await letta.agents.messages.cancel(agent.id)
    await letta.agents.delete(agent.id)


def test_serve_refuses_a_network_bind_without_a_key(cli_env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(PERDURE), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "perdure: error: refusing to serve on 0.0.0.0 without PERDURE_API_KEY: set it, or bind 127.0.0.1"
    ]


async def test_perdure_serve_with_a_key(cli_env: dict[str, str]) -> None:
    port = free_port()
    env = {**cli_env, "PERDURE_API_KEY": API_KEY}
    process = subprocess.Popen(
        [str(PERDURE), "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"

        async def serving() -> bool:
            assert process.poll() is None, process.communicate()
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{base}/v1/agents/")).status_code == 401
            except httpx.ConnectError:
                return False

        await eventually(serving, timeout=60)
        async with AsyncLetta(base_url=base, api_key=API_KEY) as letta:
            page = await letta.agents.list()
        assert isinstance(page.items, list)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(process.communicate, timeout=30)
    assert f"Perdure API at {base}" in out
    assert API_KEY not in out + err, "the key is never printed"
