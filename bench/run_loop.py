"""Orchestration overhead per step and history bytes per step, printed as JSON.

Runs against a real dev server (started here with Perdure's dev flags), a real SQLite file and
the scripted model answering at once, so what is measured is Perdure plus Temporal.

    python bench/run_loop.py [--runs 5] [--tool-calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

from harness import bench_setup

from perdure.agents import create_agent
from perdure.schemas.agent import AgentCreate
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from starter.client import PerdureClient
from perdure.names import workflow_id


def tool_calls(count: int) -> list[ScriptedReply]:
    calls = [
        ScriptedReply(
            tool_calls=[ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": f"fact {i}"})]
        )
        for i in range(count)
    ]
    return [*calls, ScriptedReply(content="done")]


async def one_run(client: PerdureClient, llm: ScriptedLLMServer, block_size: int, count: int) -> tuple[float, int, int]:
    """Returns (seconds, steps, history bytes) for one run of `count` tool calls and an answer."""
    model = f"bench-{uuid.uuid4().hex[:8]}"
    agent = create_agent(
        client.db,
        AgentCreate.model_validate(
            {
                "name": "bench",
                "memory_blocks": [{"label": "human", "value": "x" * block_size, "limit": block_size}],
                "llm_config": {"model": f"scripted/{model}", "endpoint": llm.base_url},
            }
        ),
    )
    llm.script(model, tool_calls(count))
    started = time.perf_counter()
    response = await client.send_message(agent.id, "go")
    elapsed = time.perf_counter() - started
    history = await client.temporal.get_workflow_handle(workflow_id(agent.id)).fetch_history()
    return elapsed, response.usage.step_count, len(history.to_json())


async def main(runs: int, count: int) -> dict[str, object]:
    async with bench_setup() as (client, llm):
        await one_run(client, llm, 1_000, 2)
        per_step_ms = []
        for _ in range(runs):
            seconds, steps, _ = await one_run(client, llm, 1_000, count)
            per_step_ms.append(seconds * 1000 / steps)
        _, steps_small, small = await one_run(client, llm, 1_000, count)
        _, steps_large, large = await one_run(client, llm, 100_000, count)
    return {
        "benchmark": "run_loop",
        "tool_calls_per_run": count,
        "runs": runs,
        "orchestration_ms_per_step": {
            "median": round(statistics.median(per_step_ms), 2),
            "min": round(min(per_step_ms), 2),
            "max": round(max(per_step_ms), 2),
        },
        "history_bytes_per_step": {
            "block_1kb": round(small / steps_small),
            "block_100kb": round(large / steps_large),
            "ratio_100kb_to_1kb": round(large / small, 3),
        },
        "letta_0_16_8_ms_per_step_reference": 320,
    }


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tool-calls", type=int, default=10)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.runs, options.tool_calls)), indent=2))
