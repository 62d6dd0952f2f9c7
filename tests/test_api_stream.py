"""Streaming over HTTP as Letta streams, read with the official letta-client: token chunks,
the finish (`stop_reason`, `usage_statistics`, `[DONE]`), `event: error` for a failed run,
pings, and a run's stream again from any `seq_id`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import letta_client
import pytest
from letta_client import AsyncLetta

from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from starter.client import PerdureClient
from tests.conftest import API_KEY, eventually, serving_api
from tests.helpers import call, text
from tests.letta_helpers import approve, body, extra

pytestmark = pytest.mark.usefixtures("worker")

STORY = "Once upon a time, a durable agent kept every word."


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def kinds(chunks: list[Any]) -> list[str]:
    """Message types in order, runs of the same type collapsed (token chunks)."""
    out: list[str] = []
    for chunk in chunks:
        if not out or out[-1] != chunk.message_type:
            out.append(chunk.message_type)
    return out


@pytest.mark.filterwarnings(
    "ignore:deprecated:DeprecationWarning"
)  # the SDK prefers `streaming=True`; Letta programs still call /stream
async def test_stream_tokens_then_the_finish(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(model_name, [call("memory_insert", label="human", new_str="a story"), text(STORY, chunk_delay_s=0.02)])
    chunks = await collect(
        await letta.agents.messages.stream(agent.id, input="Tell me a story.", stream_tokens=True, include_pings=False)
    )

    assert kinds(chunks) == [
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    answer = [c for c in chunks if c.message_type == "assistant_message"]
    assert "".join(c.content for c in answer) == STORY
    assert len({c.id for c in answer}) == 1, "token chunks share their message's id"
    for chunk in chunks[:-2]:
        assert chunk.run_id and chunk.step_id and chunk.otid and chunk.date is not None
    seq_ids = [c.seq_id for c in chunks]
    assert seq_ids == sorted(seq_ids) and seq_ids[0] >= 1
    assert chunks[-2].stop_reason == "end_turn" and chunks[-1].step_count == 2
    stored = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    assert stored[-1].id == answer[0].id and stored[-1].otid == answer[0].otid, (
        "a streamed part matches its stored self"
    )


async def test_streaming_true_on_messages_streams_too(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(model_name, [call("memory_insert", label="human", new_str="x"), text("Hello.")])
    only: Any = ["assistant_message"]
    stream = await letta.agents.messages.create(
        agent.id, input="Hi", streaming=True, include_pings=False, include_return_message_types=only
    )
    chunks = await collect(stream)
    assert kinds(chunks) == ["assistant_message", "stop_reason", "usage_statistics"], "the types asked for, and the end"


async def test_raw_sse_framing_ends_with_done(
    api_url: str, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent()
    llm.script(model_name, [text("Hello.")])
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        answer = await http.post(f"/v1/agents/{agent.id}/messages/stream", json={"input": "Hi", "include_pings": False})
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = answer.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])


async def test_a_pause_and_its_answer_stream(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent(tools=["core_memory_append"], memory_blocks=[{"label": "human", "value": ""}],
                       tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}])  # fmt: skip
    llm.script(model_name, [call("core_memory_append", label="human", content="tea")])
    paused = await collect(
        await letta.agents.messages.create(agent.id, streaming=True, input="I like tea", include_pings=False)
    )
    assert kinds(paused) == ["approval_request_message", "stop_reason", "usage_statistics"]
    assert paused[1].stop_reason == "requires_approval"

    with pytest.raises(letta_client.ConflictError) as refused:
        await letta.agents.messages.create(agent.id, streaming=True, input="hello?")
    assert body(refused.value)["detail"]["code"] == "PENDING_APPROVAL", "a refusal is a status, before anything streams"

    llm.script(model_name, [text("Noted.")])
    call_id = paused[0].tool_call.tool_call_id
    approval = approve(call_id)
    resumed = await collect(
        await letta.agents.messages.create(agent.id, streaming=True, messages=[approval], include_pings=False)
    )
    assert kinds(resumed) == ["tool_return_message", "assistant_message", "stop_reason", "usage_statistics"]
    assert resumed[0].tool_call_id == call_id


async def test_a_failed_run_streams_an_error_event(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(status=401, error={"error": {"message": "Incorrect API key provided"}})])
    stream = await letta.agents.messages.create(agent.id, streaming=True, input="Hi", include_pings=False)
    seen: list[Any] = []
    with pytest.raises(letta_client.APIStatusError) as failed:
        async for chunk in stream:
            seen.append(chunk)
    assert [c.message_type for c in seen] == ["stop_reason"] and seen[0].stop_reason == "llm_api_error"
    assert body(failed.value)["message_type"] == "error_message"
    assert body(failed.value)["error_type"] == "llm_authentication"
    assert "Incorrect API key provided" in body(failed.value)["detail"]

    llm.script(model_name, [ScriptedReply(status=401, error={"error": {"message": "Incorrect API key provided"}})])
    whole = await letta.agents.messages.create(agent.id, input="Hi again")
    assert whole.stop_reason.stop_reason == "llm_api_error"
    assert extra(whole, "error")["error_type"] == "llm_authentication"


async def test_pings_keep_a_quiet_stream_alive(
    client: PerdureClient, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent()
    async with serving_api(client, ping_interval=0.05) as url, AsyncLetta(base_url=url, api_key=API_KEY) as letta:
        llm.script(model_name, [ScriptedReply(content="Slow hello.", delay_s=1.0)])
        pinged = await collect(await letta.agents.messages.create(agent.id, streaming=True, input="Hi"))
        llm.script(model_name, [ScriptedReply(content="Slow again.", delay_s=1.0)])
        quiet = await collect(
            await letta.agents.messages.create(agent.id, streaming=True, input="Hi", include_pings=False)
        )
    pings = [c for c in pinged if c.message_type == "ping"]
    assert pings and all(p.id.startswith("ping-") for p in pings)
    assert [c.message_type for c in pinged if c.message_type != "ping"] == [
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    assert "ping" not in [c.message_type for c in quiet]


async def test_a_run_and_its_stream_again_from_a_seq_id(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(model_name, [call("memory_insert", label="human", new_str="x"), text("Done.")])
    first = await collect(await letta.agents.messages.create(agent.id, streaming=True, input="go", include_pings=False))
    run_id = first[0].run_id

    run = await letta.runs.retrieve(run_id)
    assert (run.id, run.agent_id, run.status, run.stop_reason) == (run_id, agent.id, "completed", "end_turn")
    replay = await collect(await letta.runs.messages.stream(run_id, include_pings=False))
    assert [(c.message_type, c.seq_id) for c in replay] == [(c.message_type, c.seq_id) for c in first]
    cut = first[1].seq_id
    tail = await collect(await letta.runs.messages.stream(run_id, starting_after=cut, include_pings=False))
    assert [c.seq_id for c in tail] == [c.seq_id for c in first if c.seq_id > cut]

    with pytest.raises(letta_client.NotFoundError, match="run 'run-missing' not found"):
        await letta.runs.retrieve("run-missing")
    with pytest.raises(letta_client.NotFoundError):
        await letta.runs.messages.stream("run-missing")


async def test_a_dropped_stream_resumes_on_another_server(
    client: PerdureClient, letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    """A client that drops does not stop the run, and any server (they hold no run state)
    serves the rest of its stream from the last `seq_id` seen, each event once."""
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}])
    llm.script(
        model_name,
        [call("memory_insert", label="human", new_str="x"), ScriptedReply(content="Finally done.", delay_s=1.0)],
    )
    stream = await letta.agents.messages.create(agent.id, streaming=True, input="go", include_pings=False)
    first: Any = await anext(aiter(stream))
    await stream.close()
    async with serving_api(client) as url, AsyncLetta(base_url=url, api_key=API_KEY) as other:
        rest = await collect(await other.runs.messages.stream(first.run_id, starting_after=first.seq_id))
    assert [c.seq_id for c in rest] == list(range(first.seq_id + 1, first.seq_id + 1 + len(rest)))
    assert kinds([first, *rest]) == [
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    assert (await letta.runs.retrieve(first.run_id)).status == "completed"


async def test_cancel_ends_a_stream_with_stop_reason_cancelled(
    letta: AsyncLetta, make_agent: Any, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content="too late", delay_s=30)])
    stream = await letta.agents.messages.create(agent.id, streaming=True, input="a slow question", include_pings=False)
    reading = asyncio.create_task(collect(stream))
    await eventually(lambda: llm.in_flight(model_name) == 1, timeout=30)
    await letta.agents.messages.cancel(agent.id)
    chunks = await asyncio.wait_for(reading, timeout=30)
    assert kinds(chunks) == ["stop_reason", "usage_statistics"]
    assert chunks[0].stop_reason == "cancelled"
