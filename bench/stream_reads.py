"""What stream readers cost the database, and how soon they see tokens, printed as JSON.

`--readers` clients each send a message with `--stream` at once, as `perdure send --stream`
does, to an agent whose model is quiet for `--quiet-s` seconds (a slow first token, a long
tool call) and then writes `--tokens` tokens `--token-ms` apart. The worker runs as `perdure
worker` in a process of its own; the readers and the model stand-in run here, so the reads
are this process's (counted by statement) and the time the model wrote each token is known.
Figures: reads per reader per second while the model is quiet and over the whole run, each
token's latency from the model writing it to its reader holding it, and CPU per streamed token
of the worker and of this process (the readers and the model stand-in). On PostgreSQL a write
notifies its run's readers; on SQLite they read every 10 ms.

    python bench/stream_reads.py [--store postgresql] [--readers 10] [--quiet-s 3] [--tokens 40] [--token-ms 25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import event  # noqa: E402

from harness import dev_server  # noqa: E402
from streaming_latency import answer_of, sent_tokens  # noqa: E402
from throughput import cpu_seconds, database, worker_process_env, workers  # noqa: E402

from perdure.agents import create_agent  # noqa: E402
from perdure.schemas.agent import AgentCreate  # noqa: E402
from perdure.schemas.letta import AssistantMessage  # noqa: E402
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply  # noqa: E402
from perdure.store.db import get_database  # noqa: E402
from starter.client import PerdureClient  # noqa: E402
from starter.updates import message_request  # noqa: E402


async def one_reader(client: PerdureClient, model_server: ScriptedLLMServer, reply: ScriptedReply) -> dict[str, Any]:
    """One streamed run: when it was sent, and (time held, text length) of each token read."""
    model = f"bench-{uuid.uuid4().hex[:8]}"
    agent = create_agent(
        client.db,
        AgentCreate.model_validate(
            {"name": "bench-reads", "llm_config": {"model": f"scripted/{model}", "endpoint": model_server.base_url}}
        ),
    )
    model_server.script(model, [reply])
    seen: list[tuple[float, int]] = []
    length, sent_at = 0, time.time()
    async for item in client.stream_message(agent.id, message_request("go", stream_tokens=True)):
        if isinstance(item.event, AssistantMessage):
            length += len(item.event.content)
            seen.append((time.time(), length))
    latencies = [
        next(at for at, upto in seen if upto >= end) - written for written, end in sent_tokens(model_server, model)
    ]
    return {"sent_at": sent_at, "token_ms": [s * 1000 for s in latencies]}


async def main(options: argparse.Namespace) -> dict[str, Any]:
    reads: list[float] = []

    def counted(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("SELECT") and "stream_chunks.final" in statement:
            reads.append(time.time())

    text = answer_of(options.tokens)
    reply = ScriptedReply(content=text, delay_s=options.quiet_s, chunk_delay_s=options.token_ms / 1000)
    with (
        tempfile.TemporaryDirectory() as tmp,
        ScriptedLLMServer() as model_server,
        database(options.store, Path(tmp)) as db_url,
    ):
        async with dev_server() as env:
            queue = f"reads-{uuid.uuid4().hex[:8]}"
            address = env.client.service_client.config.target_host
            worker_env = worker_process_env(address, db_url, queue, model_server.base_url)
            db = get_database(db_url)
            client = PerdureClient(env.client, db, queue)
            with workers(1, worker_env, Path(tmp) / "worker.log") as [worker_pid]:
                await one_reader(client, model_server, reply.model_copy(update={"delay_s": 0}))  # warm-up
                event.listen(db.engine, "before_cursor_execute", counted)
                started, worker_cpu, own_cpu = time.time(), cpu_seconds(worker_pid), _own_cpu()
                runs = await asyncio.gather(*(one_reader(client, model_server, reply) for _ in range(options.readers)))
                elapsed = time.time() - started
                worker_cpu, own_cpu = cpu_seconds(worker_pid) - worker_cpu, _own_cpu() - own_cpu
                event.remove(db.engine, "before_cursor_execute", counted)
    quiet_from, quiet_to = max(r["sent_at"] for r in runs) + 0.5, started + options.quiet_s - 0.1
    quiet_reads = [at for at in reads if quiet_from <= at <= quiet_to]
    tokens = sorted(ms for r in runs for ms in r["token_ms"])
    return {
        "benchmark": "stream_reads",
        "store": options.store,
        "readers": options.readers,
        "quiet_s": options.quiet_s,
        "tokens": options.tokens,
        "reads_per_reader_per_second": {
            "while_quiet": round(len(quiet_reads) / (quiet_to - quiet_from) / options.readers, 1),
            "whole_run": round(len(reads) / elapsed / options.readers, 1),
        },
        "token_after_model_sent_ms": {
            "median": round(statistics.median(tokens), 1),
            "p95": round(tokens[int(len(tokens) * 0.95)], 1),
            "max": round(max(tokens), 1),
        },
        "cpu_ms_per_token": {
            "worker": round(worker_cpu * 1000 / (options.readers * options.tokens), 2),
            "readers_and_model": round(own_cpu * 1000 / (options.readers * options.tokens), 2),
        },
        "seconds": round(elapsed, 2),
    }


def _own_cpu() -> float:
    """This process's user and system CPU seconds: the readers', and the model stand-in's."""
    times = os.times()
    return times.user + times.system


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--quiet-s", type=float, default=3.0)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--token-ms", type=float, default=25.0)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
