"""The Temporal floor: a workflow of Perdure's activity shape whose activities do nothing.

A turn starts by update-with-start and the update returns when the loop ends, as `send`
does; each step is one regular activity (the LLM request), one local activity per tool call
and one local activity (the checkpoint); a run begins and ends with a local activity. Payloads
are pydantic models through the same data converter, and workflows run on the same workflow
runner as Perdure's worker (`workflows/runner.py`), or with `sdk-default` in the SDK's
default sandbox, as Perdure ran before. What a Perdure step costs above the first is Perdure's own.

    python bench/floor.py ADDRESS TASK_QUEUE [perdure|sdk-default]     (a floor worker, until SIGTERM)
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

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


def perdure_runner() -> WorkflowRunner:
    """Perdure's runner, imported only here: the sandboxed floor imports this module again inside
    the SDK's sandbox, where the path lookup that finds the repository is refused."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from workflows.runner import workflow_runner

    return workflow_runner()


async def serve(address: str, task_queue: str, runner: str) -> None:
    """`runner` is `perdure` (Perdure's workflow runner) or `sdk-default` (the SDK's sandbox)."""
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[FloorWorkflow],
        activities=[noop_regular, noop_local],
        workflow_runner=perdure_runner() if runner == "perdure" else SandboxedWorkflowRunner(),
    )
    async with worker:
        print("floor worker started", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "perdure"))
