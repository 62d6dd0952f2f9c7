"""What a run paused for approval holds in a worker's memory, split by where it lives, printed as JSON.

`bench/cached_runs.py` gives the total (the worker's RSS); this says what it is made of. The
worker runs in this process so it can look inside: `--runs` agents each pause for approval, and
before and after, it reads the Python heap (tracemalloc: the lines that allocated what is still
held), the native heap (glibc's `mallinfo2`: the SDK's Rust core, protobuf arenas, SQLite) and
the objects by type (`gc`). The same is measured for the SDK's floor: a no-op workflow of the
same pause shape (a local activity, an activity, two local activities, then a wait), so what a
paused run costs above it is Perdure's own. The client runs in this process too, so the
figures are a little above a worker's alone.

    python bench/run_memory.py [--runs 300] [--top 15]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import json
import sys
import tempfile
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydantic import BaseModel  # noqa: E402
from temporalio import activity, workflow  # noqa: E402
from temporalio.client import Client, WithStartWorkflowOperation  # noqa: E402
from temporalio.common import WorkflowIDConflictPolicy  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import UnsandboxedWorkflowRunner, Worker  # noqa: E402

from harness import dev_server  # noqa: E402
from model_process import ModelProcess, model_process  # noqa: E402
from speed import pause_for_approval  # noqa: E402

from perdure.settings import Settings  # noqa: E402
from perdure.store.db import get_database, upgrade_database  # noqa: E402
from starter.client import PerdureClient  # noqa: E402
from worker import perdure_worker  # noqa: E402

BATCH = 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


class Reading:
    """The process's memory at one moment."""

    def __init__(self) -> None:
        gc.collect()
        info = _libc.mallinfo2()
        self.native = info.uordblks + info.hblkhd
        self.python = tracemalloc.get_traced_memory()[0]
        self.rss = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))
        self.snapshot = tracemalloc.take_snapshot()
        self.types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())

    def per_run(self, before: Reading, runs: int, top: int) -> dict[str, object]:
        lines = self.snapshot.compare_to(before.snapshot, "lineno")[:top]
        types = sorted(((name, n - before.types[name]) for name, n in self.types.items()), key=lambda t: -t[1])
        return {
            "rss_kib": round((self.rss - before.rss) / runs / 1024, 1),
            "native_heap_kib": round((self.native - before.native) / runs / 1024, 1),
            "python_heap_kib": round((self.python - before.python) / runs / 1024, 1),
            "python_lines_bytes": [
                (f"{Path(s.traceback[0].filename).name}:{s.traceback[0].lineno}", round(s.size_diff / runs))
                for s in lines
            ],
            "objects_by_type": [(name, round(n / runs, 1)) for name, n in types[:top]],
        }


async def paused_runs(runs: int, start_one: Callable[[], Awaitable[None]], top: int) -> dict[str, object]:
    """Warm up with two batches, then measure `runs` more paused runs."""
    for _ in range(2):
        await asyncio.gather(*(start_one() for _ in range(BATCH)))
    before = Reading()
    for _ in range(runs // BATCH):
        await asyncio.gather(*(start_one() for _ in range(BATCH)))
    return Reading().per_run(before, runs // BATCH * BATCH, top)


async def perdure(env: WorkflowEnvironment, model: ModelProcess, tmp: str, runs: int, top: int) -> dict[str, object]:
    db_url = f"sqlite:///{tmp}/memory.db"
    upgrade_database(db_url)
    queue = f"memory-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=db_url,
        temporal_address=env.client.service_client.config.target_host,
        temporal_namespace=env.client.namespace,
        task_queue=queue,
        openai_base_url=None,
        scripted_base_url=model.base_url,
    )
    client = PerdureClient(env.client, get_database(db_url), queue)

    async def pause() -> None:
        await pause_for_approval(client, model)

    async with perdure_worker(env.client, settings) as worker, worker:
        return await paused_runs(runs, pause, top)


class FloorStep(BaseModel):
    step_id: str


@activity.defn(name="memory_floor_noop")
async def noop(step: FloorStep) -> FloorStep:
    return step


@workflow.defn(name="memory-floor-pause")
class FloorPause:
    """Perdure's pause shape with no-op activities: begin, LLM request, checkpoint, stream, wait."""

    def __init__(self) -> None:
        self._sent = self._paused = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._sent)
        step, timeout = FloorStep(step_id=str(workflow.uuid4())), timedelta(seconds=30)
        await workflow.execute_local_activity(noop, step, start_to_close_timeout=timeout)
        await workflow.execute_activity(noop, step, start_to_close_timeout=timeout)
        await workflow.execute_local_activity(noop, step, start_to_close_timeout=timeout)
        await workflow.execute_local_activity(noop, step, start_to_close_timeout=timeout)
        self._paused = True
        await workflow.wait_condition(lambda: False, timeout=timedelta(days=7))

    @workflow.update(name="send")
    async def send(self, step: FloorStep) -> None:
        self._sent = True
        await workflow.wait_condition(lambda: self._paused)


async def pause_floor_run(client: Client, queue: str) -> None:
    """A run of the floor's pause shape, started and sent its message: it stays paused."""
    start = WithStartWorkflowOperation(
        FloorPause.run, id=f"floor-{uuid.uuid4()}", task_queue=queue, id_conflict_policy=WorkflowIDConflictPolicy.FAIL
    )
    await client.execute_update_with_start_workflow(
        FloorPause.send, FloorStep(step_id="send"), start_workflow_operation=start
    )


async def floor(perdure_client: Client, runs: int, top: int) -> dict[str, object]:
    queue = f"memory-floor-{uuid.uuid4().hex[:8]}"
    # A client of its own, without Perdure's plugin (which would register Perdure's workflow).
    client = Client(
        perdure_client.service_client, namespace=perdure_client.namespace, data_converter=pydantic_data_converter
    )

    async def pause() -> None:
        await pause_floor_run(client, queue)

    # Without the sandbox, as Perdure's worker runs its workflow (`workflows/runner.py`).
    runner = UnsandboxedWorkflowRunner()
    async with Worker(client, task_queue=queue, workflows=[FloorPause], activities=[noop], workflow_runner=runner):
        return await paused_runs(runs, pause, top)


async def main(runs: int, top: int) -> dict[str, object]:
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp, model_process() as model:
        async with dev_server() as env:
            floor_figures = await floor(env.client, runs, top)
            perdure_figures = await perdure(env, model, tmp, runs, top)
    return {"benchmark": "run_memory", "paused_runs": runs, "floor": floor_figures, "perdure": perdure_figures}


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--top", type=int, default=15)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.runs, options.top)), indent=1))
