"""The Temporal floor: a workflow of Perdure's activity shape whose activities do nothing.

A turn starts by update-with-start and the update returns when the loop ends, as `send`
does; each step is one regular activity (the LLM request), one local activity per tool call
and one local activity (the checkpoint); a run begins and ends with a local activity. Payloads
are pydantic models through the same data converter, and workflows run on the same workflow
runner as Perdure's worker (`workflows/runner.py`). What a Perdure step costs above this is
Perdure's own.

    python bench/floor.py ADDRESS TASK_QUEUE     (a floor worker, until SIGTERM)
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import BaseModel  # noqa: E402
from temporalio import activity, workflow  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from workflows.runner import workflow_runner  # noqa: E402

FLOOR_WORKFLOW = "bench-floor"
SEND = "send"
SHORT = timedelta(seconds=30)


class FloorTurn(BaseModel):
    tool_steps: int
    """Steps with one tool call each, before the answering step."""


class FloorStep(BaseModel):
    step_id: str
    number: int


@activity.defn(name="floor_noop_regular")
async def noop_regular(step: FloorStep) -> FloorStep:
    return step


@activity.defn(name="floor_noop_local")
async def noop_local(step: FloorStep) -> FloorStep:
    return step


@workflow.defn(name=FLOOR_WORKFLOW)
class FloorWorkflow:
    def __init__(self) -> None:
        self._turn: FloorTurn | None = None
        self._done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._turn is not None)
        assert self._turn is not None
        await self._local(FloorStep(step_id="begin", number=0))
        for number in range(self._turn.tool_steps + 1):
            step = FloorStep(step_id=str(workflow.uuid4()), number=number)
            await workflow.execute_activity(noop_regular, step, start_to_close_timeout=SHORT)
            if number < self._turn.tool_steps:
                await self._local(step)  # the tool call
            await self._local(step)  # the checkpoint
        await self._local(FloorStep(step_id="finish", number=0))
        self._done = True

    @workflow.update(name=SEND)
    async def send(self, turn: FloorTurn) -> int:
        self._turn = turn
        await workflow.wait_condition(lambda: self._done)
        return turn.tool_steps + 1

    async def _local(self, step: FloorStep) -> FloorStep:
        return await workflow.execute_local_activity(noop_local, step, start_to_close_timeout=SHORT)


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[FloorWorkflow],
        activities=[noop_regular, noop_local],
        workflow_runner=workflow_runner(),
    )
    async with worker:
        print("floor worker started", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
