"""The approval round trip: from the answer to the finished run, printed as JSON.

Each round: a message makes the scripted model call a tool that needs approval; the run
pauses; the clock starts when the approval is sent (the `answer` update) and stops when the
update returns the finished run (the approved tool ran, then the model answered). The model
answers at once, so what is measured is Perdure plus Temporal.

    python bench/approval.py [--rounds 20]
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
from perdure.schemas.approvals import ApprovalAnswer
from perdure.scripted.server import ScriptedReply, ScriptedToolCall


async def main(rounds: int) -> dict[str, object]:
    async with bench_setup() as (client, llm):
        model = f"bench-{uuid.uuid4().hex[:8]}"
        agent = create_agent(
            client.db,
            AgentCreate.model_validate(
                {
                    "name": "bench-approval",
                    "memory_blocks": [{"label": "human", "value": ""}],
                    "tools": ["core_memory_append"],
                    "tool_rules": [{"type": "requires_approval", "tool_name": "core_memory_append"}],
                    "llm_config": {"model": f"scripted/{model}", "endpoint": llm.base_url},
                }
            ),
        )
        timings = []
        for index in range(rounds + 1):
            call_id = f"call_{index}"
            llm.script(
                model,
                [
                    ScriptedReply(
                        tool_calls=[
                            ScriptedToolCall(
                                name="core_memory_append",
                                arguments={"label": "human", "content": f"fact {index}"},
                                id=call_id,
                            )
                        ]
                    ),
                    ScriptedReply(content="saved"),
                ],
            )
            paused = await client.send_message(agent.id, f"remember fact {index}")
            assert paused.stop_reason.stop_reason.value == "requires_approval"
            started = time.perf_counter()
            finished = await client.answer(agent.id, [ApprovalAnswer(tool_call_id=call_id, approve=True)])
            elapsed_ms = (time.perf_counter() - started) * 1000
            assert finished.stop_reason.stop_reason.value == "end_turn"
            if index:  # the first round warms the worker's caches
                timings.append(elapsed_ms)
    return {
        "benchmark": "approval_round_trip",
        "rounds": rounds,
        "answer_to_finished_run_ms": {
            "median": round(statistics.median(timings), 2),
            "min": round(min(timings), 2),
            "max": round(max(timings), 2),
        },
        "letta_0_16_8_ms_reference": [620, 870],
    }


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.rounds)), indent=2))
