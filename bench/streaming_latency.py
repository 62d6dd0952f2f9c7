"""First-token and per-token latency of `send --stream`, as a client sees it.

The model stand-in runs in the reader's process, so the time it wrote each token is known
(`ScriptedLLMServer.stream_events_sent`). A token's latency is from the model writing it to
the reader holding it; the first token's is from the send, with a model that answers at once.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from typing import Any

from perdure.agents import create_agent
from perdure.schemas.agent import AgentCreate
from perdure.schemas.letta import AssistantMessage
from perdure.scripted.replies import token_pieces
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from starter.client import PerdureClient
from starter.updates import message_request

WORDS = "the durable agent keeps its memory in a database and streams each token to its readers".split()


def answer_of(tokens: int) -> str:
    words: list[str] = []
    while len(token_pieces(" ".join(words))) < tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    return " ".join(words)


def sent_tokens(server: ScriptedLLMServer, model: str) -> list[tuple[float, int]]:
    """(time written, text length so far) of each content token the model wrote."""
    sent, length = [], 0
    for at, event in server.stream_events_sent(model):
        line = event.decode().strip()
        if not line.startswith("data: {"):
            continue
        choices = json.loads(line.removeprefix("data: ")).get("choices") or [{}]
        content = (choices[0].get("delta") or {}).get("content")
        if content:
            length += len(content)
            sent.append((at, length))
    return sent


async def one_stream(client: PerdureClient, server: ScriptedLLMServer, text: str, gap_s: float) -> dict[str, Any]:
    model = f"bench-{uuid.uuid4().hex[:8]}"
    agent = create_agent(
        client.db,
        AgentCreate.model_validate(
            {"name": "bench-stream", "llm_config": {"model": f"scripted/{model}", "endpoint": server.base_url}}
        ),
    )
    server.script(model, [ScriptedReply(content=text, chunk_delay_s=gap_s)])
    seen: list[tuple[float, int]] = []
    length = 0
    started = time.time()
    async for item in client.stream_message(agent.id, message_request("go", stream_tokens=True)):
        if isinstance(item.event, AssistantMessage):
            length += len(item.event.content)
            seen.append((time.time(), length))
    sent = sent_tokens(server, model)
    latencies = [next(at for at, upto in seen if upto >= end) - written for written, end in sent]
    return {"first_token_ms": (seen[0][0] - started) * 1000, "token_ms": [s * 1000 for s in latencies[1:]]}


async def stream_latency(
    client: PerdureClient, server: ScriptedLLMServer, streams: int, tokens: int, gap_s: float
) -> dict[str, Any]:
    text = answer_of(tokens)
    await one_stream(client, server, text, gap_s)  # warm-up
    runs = [await one_stream(client, server, text, gap_s) for _ in range(streams)]
    firsts = [r["first_token_ms"] for r in runs]
    later = sorted(ms for r in runs for ms in r["token_ms"])
    return {
        "streams": streams,
        "tokens_per_answer": len(token_pieces(text)),
        "model_ms_between_tokens": gap_s * 1000,
        "first_token_after_send_ms": {"median": round(statistics.median(firsts), 1), "max": round(max(firsts), 1)},
        "later_token_after_model_sent_ms": {
            "median": round(statistics.median(later), 1),
            "p95": round(later[int(len(later) * 0.95)], 1),
            "max": round(max(later), 1),
        },
    }
