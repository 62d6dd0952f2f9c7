"""Who holds the native memory of a run paused for approval, printed as JSON (memray, not a
dependency: `pip install memray`).

`bench/run_memory.py` finds most of a paused run's memory on the native heap, out of Python's
sight. This tracks every native allocation (memray, with native stacks) while `--runs` runs
pause, and sorts what is still held at the end by the library that allocated it, for the SDK's
floor (a no-op workflow of Perdure's pause shape, from `bench/run_memory.py`) and for Perdure,
in one process and one run. The worker and the client run here, as in `bench/run_memory.py`.

    python bench/run_memory_native.py [--runs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import memray  # noqa: E402  # pyright: ignore[reportMissingImports]  (optional: pip install memray)
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.worker import UnsandboxedWorkflowRunner, Worker  # noqa: E402

from harness import bench_setup  # noqa: E402
from run_memory import BATCH, FloorPause, noop, pause_floor_run  # noqa: E402
from speed import pause_for_approval  # noqa: E402


OWNERS = (
    ("sdk core: the history of the cached run", ("history_update", "HistoryPaginator")),
    ("sdk core: workflow state machines and commands", ("workflow_machines", "machines8Machines")),
    ("sdk core and bridge: other", ("temporalio_sdk_core", "temporal_sdk_bridge", "temporalio_client", "prost")),
    ("protobuf objects in Python (upb)", ("upb",)),
    ("SQLite", ("sqlite3",)),
    ("Python objects", ("obmalloc", "PyObject_", "PyMem_", "unicodeobject", "dictobject", "listobject")),
)


def owner_of(frames: list[str]) -> str:
    """The first owner, in the order of `OWNERS`, whose marks appear anywhere in the allocation's
    native stack (the innermost frames are the allocator's, shared by all)."""
    for owner, marks in OWNERS:
        if any(mark in frame for frame in frames for mark in marks):
            return owner
    return "other"


def held_per_run(capture: Path, runs: int) -> dict[str, float]:
    """KiB per run still allocated when tracking stopped, by owner."""
    held: collections.Counter[str] = collections.Counter()
    for record in memray.FileReader(capture).get_leaked_allocation_records(merge_threads=True):
        frames = [symbol for symbol, _, _ in record.native_stack_trace(max_stacks=40)]
        held[owner_of(frames)] += record.size
    figures = {owner: round(size / runs / 1024, 1) for owner, size in held.most_common()}
    return {"total": round(sum(held.values()) / runs / 1024, 1), **figures}


async def tracked(runs: int, start_one: Callable[[], Awaitable[None]], capture: Path) -> dict[str, float]:
    """Warm up with two batches, then track the native heap while `runs` more runs pause."""
    for _ in range(2):
        await asyncio.gather(*(start_one() for _ in range(BATCH)))
    batches = max(runs // BATCH, 1)
    with memray.Tracker(capture, native_traces=True):
        for _ in range(batches):
            await asyncio.gather(*(start_one() for _ in range(BATCH)))
    return held_per_run(capture, batches * BATCH)


async def main(runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        async with bench_setup() as (client, llm):
            floor_client = Client(
                client.temporal.service_client,
                namespace=client.temporal.namespace,
                data_converter=pydantic_data_converter,
            )
            floor_queue = f"memory-floor-{uuid.uuid4().hex[:8]}"

            async def floor_pause() -> None:
                await pause_floor_run(floor_client, floor_queue)

            async def perdure_pause() -> None:
                await pause_for_approval(client, llm)

            runner = UnsandboxedWorkflowRunner()
            async with Worker(
                floor_client, task_queue=floor_queue, workflows=[FloorPause], activities=[noop], workflow_runner=runner
            ):
                floor = await tracked(runs, floor_pause, Path(tmp) / "floor.bin")
            perdure = await tracked(runs, perdure_pause, Path(tmp) / "perdure.bin")
    return {"benchmark": "run_memory_native", "paused_runs": runs, "kib_per_run": {"floor": floor, "perdure": perdure}}


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.runs)), indent=1))
