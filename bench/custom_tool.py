"""Cost of a trivial custom Python tool per call inside a run, against the built-in tool's floor,
printed as JSON.

Runs against a real dev server, a SQLite file, a worker with its tool sandbox (bubblewrap's
namespaces where they work) and the scripted model answering at once. Each run is `--calls`
steps calling one tool, then an answer. The call's cost is read from the run's history: from
the custom tool activity's scheduling to its completion, so it holds the Temporal round trip,
the store reads and the sandboxed process. The floor is the same run with a built-in tool
(a local activity, no sandbox), measured in the same process.

    python bench/custom_tool.py [--runs 5] [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Sequence

from harness import bench_setup
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

from perdure import names
from perdure.agents import create_agent
from perdure.sandbox.isolation import choose_config
from perdure.schemas.agent import AgentCreate
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.settings import home_dir
from perdure.tools.catalog import create_custom_tool
from perdure.tools.custom import CustomToolCreate
from starter.client import PerdureClient

TRIVIAL_TOOL = '''
def add_{suffix}(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b
'''


async def one_run(client: PerdureClient, llm: ScriptedLLMServer, tool: str, calls: int) -> tuple[float, list[float]]:
    """(milliseconds per step, milliseconds per custom tool activity) of one run of `calls` calls."""
    model = f"bench-{uuid.uuid4().hex[:8]}"
    agent = create_agent(
        client.db,
        AgentCreate.model_validate(
            {
                "name": "bench",
                "tools": [tool],
                "memory_blocks": [{"label": "human", "value": ""}],
                "llm_config": {"model": f"scripted/{model}", "endpoint": llm.base_url},
            }
        ),
    )
    arguments = {"a": 2, "b": 3} if tool.startswith("add_") else {"label": "human", "new_string": "x"}
    replies = [ScriptedReply(tool_calls=[ScriptedToolCall(name=tool, arguments=arguments)]) for _ in range(calls)]
    llm.script(model, [*replies, ScriptedReply(content="done")])
    started = time.perf_counter()
    response = await client.send_message(agent.id, "go")
    elapsed_ms = (time.perf_counter() - started) * 1000
    history = await client.temporal.get_workflow_handle(names.workflow_id(agent.id)).fetch_history()
    return elapsed_ms / response.usage.step_count, _custom_tool_activity_ms(history.events)


def _custom_tool_activity_ms(events: Sequence[HistoryEvent]) -> list[float]:
    """Scheduled-to-completed time of each custom tool activity in a history."""
    scheduled = {
        e.event_id: e.event_time.ToDatetime()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == names.EXECUTE_CUSTOM_TOOL
    }
    return [
        (
            e.event_time.ToDatetime() - scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
        ).total_seconds()
        * 1000
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
    ]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


async def main(runs: int, calls: int) -> dict[str, object]:
    async with bench_setup() as (client, llm):
        tool = create_custom_tool(
            client.db, CustomToolCreate(source_code=TRIVIAL_TOOL.format(suffix=uuid.uuid4().hex[:8]))
        ).name
        await one_run(client, llm, tool, 2)
        await one_run(client, llm, "memory_insert", 2)
        custom_steps, builtin_steps, call_ms = [], [], []
        for _ in range(runs):
            step_ms, activity_ms = await one_run(client, llm, tool, calls)
            custom_steps.append(step_ms)
            call_ms += activity_ms
            builtin_steps.append((await one_run(client, llm, "memory_insert", calls))[0])
    custom, builtin = statistics.median(custom_steps), statistics.median(builtin_steps)
    return {
        "benchmark": "custom_tool",
        "sandbox": choose_config(home_dir() / "venvs", "sqlite://").isolation.value,
        "calls_per_run": calls,
        "runs": runs,
        "custom_tool_ms_per_call": _summary(call_ms),
        "ms_per_step": {
            "custom_tool": _summary(custom_steps),
            "builtin_tool_floor": _summary(builtin_steps),
            "custom_minus_builtin": round(custom - builtin, 2),
            "ratio_custom_to_builtin": round(custom / builtin, 3),
        },
        "letta_0_16_8_ms_per_call_reference": 3400,
    }


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.runs, options.calls)), indent=2))
