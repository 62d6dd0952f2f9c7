"""Worker memory per run waiting for a person, the time of a new run's first workflow task, and
what answering a paused run costs, printed as JSON.

`--runs` agents each send a message whose tool call needs approval, so each run stays paused
in the worker's workflow cache. The worker (`perdure worker`, a process of its own, the model
stand-in in another) is measured by its resident set size (VmRSS) before and after; the first
workflow task of each run is read from its history (started to completed). Then the
`--resumes` runs that paused first are approved one at a time: the time from the answer to the
finished run, and the worker's CPU for it. With `--max-cached-runs` below `--runs` (the worker's
`PERDURE_MAX_CACHED_RUNS`), those runs were evicted from the cache and are replayed from their
history when the answer comes.

    python bench/cached_runs.py [--runs 300] [--max-cached-runs N] [--resumes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from temporalio.api.enums.v1 import EventType  # noqa: E402

from harness import bench_rig  # noqa: E402
from speed import PAUSED_CALL_ID, pause_for_approval  # noqa: E402
from throughput import cpu_seconds, worker_process_env, workers  # noqa: E402

from perdure.names import workflow_id  # noqa: E402
from perdure.schemas.approvals import ApprovalAnswer  # noqa: E402
from perdure.settings import MAX_CACHED_RUNS_ENV  # noqa: E402
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


async def resume(client: PerdureClient, agent_id: str, pid: int) -> tuple[float, float]:
    """Approve the paused call; (seconds from the answer to the finished run, worker CPU seconds)."""
    cpu_before, started = cpu_seconds(pid), time.perf_counter()
    finished = await client.answer(agent_id, [ApprovalAnswer(tool_call_id=PAUSED_CALL_ID, approve=True)])
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
    assert finished.stop_reason.stop_reason.value == "end_turn", finished.stop_reason
    return elapsed, cpu


async def main(runs: int, max_cached_runs: int | None, resumes: int) -> dict[str, object]:
    async with bench_rig() as (tmp, db_url, model_server, env):
        queue = f"cached-{uuid.uuid4().hex[:8]}"
        worker_env = worker_process_env(
            env.client.service_client.config.target_host, db_url, queue, model_server.base_url
        )
        if max_cached_runs is not None:
            worker_env[MAX_CACHED_RUNS_ENV] = str(max_cached_runs)
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
            resumed = [await resume(client, agent_id, pid) for agent_id in paused[:resumes]]
    return {
        "benchmark": "cached_runs",
        "paused_runs": runs,
        "max_cached_runs": max_cached_runs,
        "worker_rss_mib": {"before": round(before / 1024, 1), "after": round(after / 1024, 1)},
        "kib_per_cached_run": round((after - before) / runs, 1),
        "worker_cpu_ms_per_paused_run": round(cpu * 1000 / runs, 1),
        "first_workflow_task_ms": {"median": round(statistics.median(firsts), 1), "max": round(max(firsts), 1)},
        "resumes": len(resumed),
        "resume_ms": milliseconds([elapsed for elapsed, _ in resumed]),
        "worker_cpu_ms_per_resume": milliseconds([cpu for _, cpu in resumed]),
    }


def milliseconds(seconds: list[float]) -> dict[str, float] | None:
    """Median and max in ms; None when nothing was measured (`--resumes 0`)."""
    if not seconds:
        return None
    return {"median": round(statistics.median(seconds) * 1000, 1), "max": round(max(seconds) * 1000, 1)}


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--max-cached-runs", type=int, help="the worker's PERDURE_MAX_CACHED_RUNS (default: unset)")
    parser.add_argument("--resumes", type=int, default=20, help="paused runs approved at the end, oldest first")
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.runs, options.max_cached_runs, options.resumes)), indent=2))
