"""Worker memory per run waiting for a person, and the time of a new run's first workflow task,
printed as JSON.

`--runs` agents each send a message whose tool call needs approval, so each run stays paused
in the worker's workflow cache. The worker (`perdure worker`, a process of its own, the model
stand-in in another) is measured by its resident set size (VmRSS) before and after; the first
workflow task of each run is read from its history (started to completed).

    python bench/cached_runs.py [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from temporalio.api.enums.v1 import EventType  # noqa: E402

from harness import bench_rig  # noqa: E402
from speed import pause_for_approval  # noqa: E402
from throughput import cpu_seconds, worker_process_env, workers  # noqa: E402

from perdure.names import workflow_id  # noqa: E402
from perdure.store.db import get_database  # noqa: E402
from starter.client import PerdureClient  # noqa: E402

BATCH = 20


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def first_task_ms(client: PerdureClient, agent_id: str) -> float:
    history = await client.temporal.get_workflow_handle(workflow_id(agent_id)).fetch_history()
    started = next(e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    completed = next(e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    return (completed.event_time.ToDatetime() - started.event_time.ToDatetime()).total_seconds() * 1000


async def main(runs: int) -> dict[str, object]:
    async with bench_rig() as (tmp, db_url, model_server, env):
        queue = f"cached-{uuid.uuid4().hex[:8]}"
        worker_env = worker_process_env(
            env.client.service_client.config.target_host, db_url, queue, model_server.base_url
        )
        client = PerdureClient(env.client, get_database(db_url), queue)

        async def pause() -> str:
            return await pause_for_approval(client, model_server)

        with workers(1, worker_env, tmp / "worker.log") as [pid]:
            await asyncio.gather(*(pause() for _ in range(BATCH)))  # warm up: imports, caches, pools
            before, cpu_before = rss_kib(pid), cpu_seconds(pid)
            paused: list[str] = []
            while len(paused) < runs:
                paused += await asyncio.gather(*(pause() for _ in range(min(BATCH, runs - len(paused)))))
            after, cpu = rss_kib(pid), cpu_seconds(pid) - cpu_before
            firsts = [await first_task_ms(client, agent_id) for agent_id in paused[-BATCH:]]
    return {
        "benchmark": "cached_runs",
        "paused_runs": runs,
        "worker_rss_mib": {"before": round(before / 1024, 1), "after": round(after / 1024, 1)},
        "kib_per_cached_run": round((after - before) / runs, 1),
        "worker_cpu_ms_per_paused_run": round(cpu * 1000 / runs, 1),
        "first_workflow_task_ms": {"median": round(statistics.median(firsts), 1), "max": round(max(firsts), 1)},
    }


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    print(json.dumps(asyncio.run(main(parser.parse_args().runs)), indent=2))
