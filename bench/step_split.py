"""Where a step's worker CPU above the Temporal floor goes: Perdure's workflow code, or the work
its activities do. Printed as JSON.

Three workers serve turns of `--tool-calls` memory edits and an answer, in one run, turn for
turn in rotation so the machine's load falls on all alike; each is a process of its own and its
CPU (user+system, from /proc) is summed over its own turns:

- the floor (`bench/floor.py`, on Perdure's workflow runner): the activity shape, no-op activities;
- hollow: Perdure's run workflow with activities that do nothing but return what Perdure's
  would (the same tool calls, tool returns and agent), so the payloads are alike;
- Perdure: the `perdure worker` process, its activities asking the model stand-in (a process
  of its own) and writing the SQLite file.

hollow − floor is Perdure's workflow code and its payloads; Perdure − hollow is what its
activities do (the LLM request over HTTP, the tool's and the checkpoint's database work).

    python bench/step_split.py [--rounds 20] [--tool-calls 10]
    python bench/step_split.py --serve ADDRESS QUEUE TOOL_CALLS      (a hollow worker, until SIGTERM)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from temporalio import activity  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from harness import bench_rig, started_process  # noqa: E402
from speed import floor_turn, floor_worker, perdure_turn, turn_for_turn  # noqa: E402
from throughput import worker_process_env, workers  # noqa: E402

from activities.tools import preview  # noqa: E402
from perdure import names  # noqa: E402
from perdure.schemas.agent import BASE_TOOLS, LLMConfig  # noqa: E402
from perdure.schemas.messages import ToolCall, ToolReturn  # noqa: E402
from perdure.schemas.run import (  # noqa: E402
    AgentSnapshot,
    BeginRunInput,
    BeginRunOutput,
    CheckpointInput,
    FinishRunInput,
    LLMStepInput,
    LLMStepOutput,
    TokenUsage,
    ToolStepInput,
    ToolStepOutput,
)
from perdure.store.db import get_database  # noqa: E402
from perdure.tools.returns import package_function_response  # noqa: E402
from perdure.tools.builtin import EDIT_SUCCESS  # noqa: E402
from starter.client import PerdureClient  # noqa: E402
from workflows.run_workflow import AgentRunWorkflow  # noqa: E402
from workflows.runner import workflow_runner  # noqa: E402

READY = "hollow worker started"


class HollowActivities:
    """Perdure's activity names and payloads, with nothing done: the agent, the model's answers
    and the tool returns are what Perdure's activities return for `bench/speed.py`'s agent."""

    def __init__(self, tool_calls: int) -> None:
        self._tool_calls = tool_calls

    @activity.defn(name=names.BEGIN_RUN)
    async def begin_run(self, input: BeginRunInput) -> BeginRunOutput:
        config = LLMConfig.model_validate({"model": "scripted/hollow", "endpoint": "http://127.0.0.1:9"})
        snapshot = AgentSnapshot(
            agent_id=input.agent_id, name="bench", tools=list(BASE_TOOLS), tool_rules=[], llm_config=config
        )
        return BeginRunOutput(agent=snapshot)

    @activity.defn(name=names.LLM_STEP)
    async def llm_step(self, input: LLMStepInput) -> LLMStepOutput:
        usage = TokenUsage(prompt_tokens=600 + 60 * input.step_number, completion_tokens=20)
        if input.step_number > self._tool_calls:
            return LLMStepOutput(content="done", finish_reason="stop", usage=usage, model="hollow", response_tokens=3)
        arguments = json.dumps({"label": "human", "new_string": f"fact {input.step_number}"})
        call = ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name="memory_insert", arguments=arguments)
        return LLMStepOutput(
            tool_calls=[call], finish_reason="tool_calls", usage=usage, model="hollow", response_tokens=30
        )

    @activity.defn(name=names.EXECUTE_TOOL)
    async def execute_tool(self, input: ToolStepInput) -> ToolStepOutput:
        text = package_function_response(True, EDIT_SUCCESS.format(label="human"), activity.info().started_time)
        full = ToolReturn(tool_call_id=input.tool_call.id, status="success", func_response=text)
        return ToolStepOutput(tool_call=input.tool_call, tool_return=preview(full), duration_ns=1, tokens=60)

    @activity.defn(name=names.CHECKPOINT_STEP)
    async def checkpoint_step(self, input: CheckpointInput) -> None:
        return None

    @activity.defn(name=names.FINISH_RUN)
    async def finish_run(self, input: FinishRunInput) -> None:
        return None


async def serve(address: str, queue: str, tool_calls: int) -> None:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    hollow = HollowActivities(tool_calls)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[AgentRunWorkflow],
        activities=[hollow.begin_run, hollow.llm_step, hollow.execute_tool, hollow.checkpoint_step, hollow.finish_run],
        workflow_runner=workflow_runner(),
    )
    async with worker:
        print(READY, flush=True)
        await stop.wait()


async def main(rounds: int, tool_calls: int) -> dict[str, object]:
    kinds = ["floor", "hollow", "perdure"]
    async with bench_rig() as (tmp, db_url, model, env):
        address = env.client.service_client.config.target_host
        queues = {kind: f"{kind}-{uuid.uuid4().hex[:8]}" for kind in kinds}
        clients = {kind: PerdureClient(env.client, get_database(db_url), queues[kind]) for kind in kinds[1:]}
        floor_client = await Client.connect(address, data_converter=pydantic_data_converter)
        hollow_command = [sys.executable, __file__, "--serve", address, queues["hollow"], str(tool_calls)]
        perdure_env = worker_process_env(address, db_url, queues["perdure"], model.base_url)
        with (
            floor_worker(address, queues["floor"], tmp / "floor.log") as floor_pid,
            started_process(hollow_command, READY, tmp / "hollow.log") as hollow_pid,
            workers(1, perdure_env, tmp / "perdure.log") as [perdure_pid],
        ):
            pids = {"floor": floor_pid, "hollow": hollow_pid, "perdure": perdure_pid}
            turns = {
                "floor": partial(floor_turn, floor_client, queues["floor"], tool_calls),
                "hollow": partial(perdure_turn, clients["hollow"], model, tool_calls),
                "perdure": partial(perdure_turn, clients["perdure"], model, tool_calls),
            }
            samples = await turn_for_turn(pids, turns, rounds)
    per_step = {kind: round(samples[kind].cpu_ms_per_step(), 2) for kind in kinds}
    return {
        "benchmark": "step_split",
        "steps_each": samples["perdure"].steps,
        "worker_cpu_ms_per_step": per_step,
        "workflow_code_ms": round(per_step["hollow"] - per_step["floor"], 2),
        "activities_work_ms": round(per_step["perdure"] - per_step["hollow"], 2),
        "hollow_to_floor": round(per_step["hollow"] / per_step["floor"], 2),
        "perdure_to_floor": round(per_step["perdure"] / per_step["floor"], 2),
    }


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--rounds", type=int, default=20)
        parser.add_argument("--tool-calls", type=int, default=10)
        options = parser.parse_args()
        print(json.dumps(asyncio.run(main(options.rounds, options.tool_calls)), indent=1))
