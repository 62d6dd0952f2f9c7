"""Worker CPU per step with the SDK's workflow sandbox and without it, printed as JSON.

Two worker processes serve the same database on task queues of their own: one runs the run
workflow in the sandbox as Perdure did before (`perdure` and `workflows` passed through), the
other without it, as the worker does now (`workflows/runner.py`). Turns of `--tool-calls` tool
steps and an answer go to one and the other in turn, the order swapped every round, so the
machine's load falls on both alike; each process's CPU (user+system, from /proc) is summed over
its own turns. The model stand-in runs in a process of its own.

    python bench/runner_ab.py [--rounds 30] [--tool-calls 10]
    python bench/runner_ab.py --serve sandboxed|unsandboxed ADDRESS QUEUE DB_URL MODEL_URL   (one worker, until SIGTERM)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from functools import partial
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner  # noqa: E402
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions  # noqa: E402

from harness import bench_rig, started_process  # noqa: E402
from speed import perdure_turn, turn_for_turn  # noqa: E402

from perdure.settings import Settings  # noqa: E402
from perdure.store.db import get_database  # noqa: E402
from starter.client import PerdureClient  # noqa: E402
from worker import ACTIVITY_THREADS, HEARTBEAT_THROTTLE, perdure_activities  # noqa: E402
from workflows.run_workflow import AgentRunWorkflow  # noqa: E402

RUNNERS: dict[str, WorkflowRunner] = {
    "sandboxed": SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("perdure", "workflows")
    ),
    "unsandboxed": UnsandboxedWorkflowRunner(),
}
READY = "runner worker started"


async def serve(runner: str, address: str, queue: str, db_url: str, model_url: str) -> None:
    """Perdure's worker with the given runner: the same activities, payloads and thread pool."""
    settings = Settings(
        database_url=db_url,
        temporal_address=address,
        temporal_namespace="default",
        task_queue=queue,
        openai_base_url=None,
        scripted_base_url=model_url,
    )
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        async with httpx.AsyncClient(timeout=600.0) as http:
            worker = Worker(
                client,
                task_queue=queue,
                workflows=[AgentRunWorkflow],
                activities=perdure_activities(get_database(db_url), settings, http),
                activity_executor=executor,
                workflow_runner=RUNNERS[runner],
                max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            )
            async with worker:
                print(READY, flush=True)
                await stop.wait()


def runner_worker(
    runner: str, address: str, queue: str, db_url: str, model_url: str, log: Path
) -> AbstractContextManager[int]:
    command = [sys.executable, __file__, "--serve", runner, address, queue, db_url, model_url]
    return started_process(command, READY, log)


async def main(rounds: int, tool_calls: int) -> dict[str, object]:
    async with bench_rig() as (tmp, db_url, model, env):
        address = env.client.service_client.config.target_host
        queues = {runner: f"{runner}-{uuid.uuid4().hex[:8]}" for runner in RUNNERS}
        clients = {runner: PerdureClient(env.client, get_database(db_url), queue) for runner, queue in queues.items()}
        with (
            runner_worker("sandboxed", address, queues["sandboxed"], db_url, model.base_url, tmp / "a.log") as a,
            runner_worker("unsandboxed", address, queues["unsandboxed"], db_url, model.base_url, tmp / "b.log") as b,
        ):
            pids = {"sandboxed": a, "unsandboxed": b}
            turns = {runner: partial(perdure_turn, clients[runner], model, tool_calls) for runner in RUNNERS}
            samples = await turn_for_turn(pids, turns, rounds)
    per_step = {runner: round(samples[runner].cpu_ms_per_step(), 2) for runner in RUNNERS}
    return {
        "benchmark": "runner_ab",
        "steps_each": samples["sandboxed"].steps,
        "worker_cpu_ms_per_step": per_step,
        "unsandboxed_to_sandboxed": round(per_step["unsandboxed"] / per_step["sandboxed"], 3),
    }


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(serve(*sys.argv[2:7]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--rounds", type=int, default=30)
        parser.add_argument("--tool-calls", type=int, default=10)
        options = parser.parse_args()
        print(json.dumps(asyncio.run(main(options.rounds, options.tool_calls)), indent=1))
