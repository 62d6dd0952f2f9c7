"""What token streaming adds to a run's history, per 1,000 streamed tokens, printed as JSON.

One answer of about `--tokens` tokens is asked for twice with the same script, once with token
streaming and a reader on the stream (as `perdure send --stream`), once without; the history
difference is the streaming cost. The model writes at `--tokens-per-second`, as a real
provider would. A run with a 50x larger memory block shows that the cost does not grow with
the context. The stream itself is rows of the database's `stream_chunks` table, one per event;
the events the reader received are counted too.

    python bench/stream_cost.py [--tokens 1000] [--tokens-per-second 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

from harness import bench_setup

from perdure.agents import create_agent
from perdure.schemas.agent import AgentCreate
from perdure.scripted.replies import token_pieces
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from starter.client import PerdureClient
from starter.updates import message_request
from perdure.names import workflow_id

WORDS = "the durable agent keeps its memory in a database and streams each token to its readers as it writes ".split()


def answer_text(tokens: int) -> str:
    words: list[str] = []
    while len(token_pieces(" ".join(words))) < tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    return " ".join(words)


async def one_run(
    client: PerdureClient, llm: ScriptedLLMServer, text: str, delay: float, stream: bool, block: int
) -> tuple[int, int, int]:
    """(history events, history bytes as stored (protobuf), stream events read) of one run."""
    model = f"bench-{uuid.uuid4().hex[:8]}"
    agent = create_agent(
        client.db,
        AgentCreate.model_validate(
            {
                "name": "bench",
                "memory_blocks": [{"label": "human", "value": "x" * block, "limit": block}],
                "llm_config": {"model": f"scripted/{model}", "endpoint": llm.base_url},
            }
        ),
    )
    llm.script(model, [ScriptedReply(content=text, chunk_delay_s=delay)])
    read = [item async for item in client.stream_message(agent.id, message_request("go", stream_tokens=stream))]
    handle = client.temporal.get_workflow_handle(workflow_id(agent.id))
    await handle.result()
    history = await handle.fetch_history()
    return len(history.events), sum(event.ByteSize() for event in history.events), len(read)


async def main(tokens: int, rate: float) -> dict[str, object]:
    text = answer_text(tokens)
    streamed_tokens = len(token_pieces(text))
    delay = 1 / rate
    async with bench_setup() as (client, llm):
        await one_run(client, llm, "warm up", 0, True, 1_000)
        plain = await one_run(client, llm, text, delay, False, 1_000)
        streamed = await one_run(client, llm, text, delay, True, 1_000)
        big_context = await one_run(client, llm, text, delay, True, 50_000)
    per_1k = 1_000 / streamed_tokens
    return {
        "streamed_tokens": streamed_tokens,
        "tokens_per_second": rate,
        "history_events": {
            "without_streaming": plain[0],
            "with_streaming": streamed[0],
            "with_streaming_50x_context": big_context[0],
        },
        "history_bytes": {
            "without_streaming": plain[1],
            "with_streaming": streamed[1],
            "with_streaming_50x_context": big_context[1],
        },
        "stream_events_read": streamed[2],
        "added_events_per_1000_tokens": round((streamed[0] - plain[0]) * per_1k, 1),
        "added_bytes_per_1000_tokens": round((streamed[1] - plain[1]) * per_1k),
        "added_bytes_per_streamed_text_byte": round((streamed[1] - plain[1]) / len(text.encode()), 2),
    }


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000)
    parser.add_argument("--tokens-per-second", type=float, default=100.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.tokens, args.tokens_per_second)), indent=2))
