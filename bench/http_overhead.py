"""What the HTTP API adds per message over the in-process Python client, printed as JSON.

Sends the same one-step turn (the scripted model answers at once) through `PerdureClient`
(the floor: a Temporal update plus the store read) and through the official letta-client
against `perdure serve`'s app in uvicorn on loopback, alternating, against a real dev server
and SQLite file. The difference is the HTTP layer: the SDK, httpx, uvicorn, FastAPI and the
Letta shapes. A turn varies by tens of milliseconds with Temporal's scheduling, so the same
comparison is also made on a read that involves no Temporal at all (an agent).

    python bench/http_overhead.py [--messages 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable
from typing import Any

from harness import bench_setup
from letta_client import AsyncLetta

from perdure.agents import create_agent
from perdure.schemas.agent import AgentCreate, LLMConfig
from perdure.store import agents
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from starter.api.serve import api_server, bind, url
from starter.client import PerdureClient

API_KEY = "bench-key"


def new_agent(client: PerdureClient, llm: ScriptedLLMServer) -> tuple[str, str]:
    model = f"bench-{uuid.uuid4().hex[:8]}"
    config = LLMConfig(model=f"scripted/{model}", endpoint=llm.base_url)
    agent = create_agent(client.db, AgentCreate(name="bench", llm_config=config))
    return agent.id, model


async def timed(send: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await send
    return (time.perf_counter() - started) * 1000


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 2),
        "min": round(min(samples), 2),
        "max": round(max(samples), 2),
    }


async def messages(client: PerdureClient, llm: ScriptedLLMServer, letta: AsyncLetta, count: int) -> dict[str, object]:
    """One-step turns, alternating the Python client and the letta-client over HTTP."""
    direct_agent, direct_model = new_agent(client, llm)
    http_agent, http_model = new_agent(client, llm)
    llm.script(direct_model, [ScriptedReply(content="ok")] * (count + 1))
    llm.script(http_model, [ScriptedReply(content="ok")] * (count + 1))
    await client.send_message(direct_agent, "warm up")
    await letta.agents.messages.create(http_agent, input="warm up")
    direct, http = [], []
    for turn in range(count):
        direct.append(await timed(client.send_message(direct_agent, f"message {turn}")))
        http.append(await timed(letta.agents.messages.create(http_agent, input=f"message {turn}")))
    return {
        "python_client_ms_per_message": summary(direct),
        "letta_client_over_http_ms_per_message": summary(http),
        "http_overhead_ms_per_message": summary([h - d for h, d in zip(http, direct, strict=True)]),
        "ratio_http_to_python_client": round(statistics.median(http) / statistics.median(direct), 3),
    }


async def reads(client: PerdureClient, llm: ScriptedLLMServer, letta: AsyncLetta, count: int) -> dict[str, object]:
    """Reading an agent: the store read alone against the same read over HTTP. No Temporal
    round trip is involved, so the difference is the HTTP layer alone."""
    agent_id, _ = new_agent(client, llm)

    async def from_store() -> None:
        with client.db.transaction(read_only=True) as session:
            agents.get_agent(session, agent_id)

    direct, http = [], []
    for _ in range(count):
        direct.append(await timed(from_store()))
        http.append(await timed(letta.agents.retrieve(agent_id)))
    return {
        "store_read_ms": summary(direct),
        "letta_client_over_http_ms": summary(http),
        "http_layer_ms_per_request": round(statistics.median(http) - statistics.median(direct), 2),
    }


async def main(count: int) -> dict[str, object]:
    async with bench_setup() as (client, llm):
        listening = bind("127.0.0.1", 0)
        port = listening.getsockname()[1]
        server = api_server(client, "127.0.0.1", port, API_KEY, embedded=True)
        serving = asyncio.create_task(server.serve(sockets=[listening]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            async with AsyncLetta(base_url=url("127.0.0.1", port), api_key=API_KEY) as letta:
                sent = await messages(client, llm, letta, count)
                read = await reads(client, llm, letta, count)
        finally:
            server.should_exit = True
            await serving
    return {"benchmark": "http_overhead", "messages": count, **sent, "read_agent": read, "aim_overhead_ms": 10}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="What the HTTP API adds per message over the Python client.")
    parser.add_argument("--messages", type=int, default=30)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.messages)), indent=2))
