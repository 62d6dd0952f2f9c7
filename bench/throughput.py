"""Steps per second with many agents, with one and with two worker processes, printed as JSON.

Each configuration runs `perdure worker --processes N` as a user would, against a dev server
started here, a database made by the migrations (SQLite by default, a throwaway PostgreSQL
cluster with `--store postgresql`) and the scripted demo model served from a process of its
own, so the workers' CPU time is theirs alone. Every agent sends one message after another
(a memory edit, then an answer: two steps per run) for `--seconds`; the figures are the steps
committed in that time and the workers' CPU time per step, read from /proc.

    python bench/throughput.py [--agents 1 8 32] [--processes 1 2] [--seconds 20] [--store sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydantic import BaseModel  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from perdure.agents import create_agent  # noqa: E402
from perdure.schemas.agent import AgentCreate  # noqa: E402
from perdure.scripted.server import ScriptedLLMServer  # noqa: E402
from perdure.store.db import get_database, upgrade_database  # noqa: E402
from starter.client import PerdureClient  # noqa: E402
from harness import dev_server  # noqa: E402
from tests.postgres_server import PostgresServer, create_database, find_postgres_binaries  # noqa: E402

STARTED = re.compile(r"worker \d+: process (\d+) started")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LETTA_STEPS_PER_SECOND = (2.6, 4.2)


class Measurement(BaseModel):
    agents: int
    worker_processes: int
    steps: int
    seconds: float
    steps_per_second: float
    worker_cpu_seconds: float
    worker_cpu_ms_per_step: float | None
    ratio_to_one_process: float | None = None
    """Steps per second against one worker process with as many agents, measured in the same run."""


class Report(BaseModel):
    benchmark: str = "throughput"
    store: str
    cpus: int | None
    results: list[Measurement]
    letta_0_16_8_steps_per_second_reference: tuple[float, float] = LETTA_STEPS_PER_SECOND


def serve_model(urls: Any, stop: Any) -> None:
    """The model stand-in's own process: the scripted server, answering `scripted/demo` by rule."""
    with ScriptedLLMServer() as server:
        urls.put(server.base_url)
        stop.wait()


@contextmanager
def model_process() -> Iterator[str]:
    context = multiprocessing.get_context("spawn")
    urls = context.Queue()
    stop = context.Event()
    process = context.Process(target=serve_model, args=(urls, stop), name="scripted-model")
    process.start()
    try:
        yield urls.get(timeout=60)
    finally:
        stop.set()
        process.join(timeout=10)


@contextmanager
def database(store: str, directory: Path) -> Iterator[str]:
    if store == "sqlite":
        url = f"sqlite:///{directory / 'throughput.db'}"
        upgrade_database(url)
        yield url
        return
    binaries = find_postgres_binaries()
    if binaries is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    with PostgresServer(binaries) as server:
        url = create_database(server.url)
        upgrade_database(url)
        yield url


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def worker_process_env(temporal_address: str, db_url: str, queue: str, model_url: str) -> dict[str, str]:
    """The environment of a benchmark's worker process: this one's, less any Perdure, Temporal
    or provider setting the caller's shell may carry, plus the benchmark's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PERDURE_", "TEMPORAL_"))}
    return env | {
        "TEMPORAL_ADDRESS": temporal_address,
        "PERDURE_DATABASE_URL": db_url,
        "PERDURE_TASK_QUEUE": queue,
        "PERDURE_SCRIPTED_BASE_URL": model_url,
    }


@contextmanager
def workers(processes: int, env: dict[str, str], log: Path) -> Iterator[list[int]]:
    """`perdure worker --processes N`; yields the pids of the processes that run workers."""
    command = [str(Path(sys.executable).parent / "perdure"), "worker", "--processes", str(processes)]
    with log.open("ab") as out:
        supervisor = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        pids = [supervisor.pid]
        if processes > 1:
            deadline = time.monotonic() + 60
            while len(pids := [int(p) for p in STARTED.findall(log.read_text())]) < processes:
                if time.monotonic() > deadline or supervisor.poll() is not None:
                    raise RuntimeError(f"the worker processes did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield pids
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=60)


async def converse(client: PerdureClient, agent_id: str, until: float) -> int:
    """Send messages one after another, at least one, until `until`; return the runs' steps."""
    steps, turn = 0, 0
    while turn == 0 or time.monotonic() < until:
        turn += 1
        response = await client.send_message(agent_id, f"I like tea number {turn}.")
        steps += response.usage.step_count
    return steps


async def measure(
    env: WorkflowEnvironment, db_url: str, model_url: str, agents: int, processes: int, seconds: float, log: Path
) -> Measurement:
    queue = f"throughput-{uuid.uuid4().hex[:8]}"
    worker_env = worker_process_env(env.client.service_client.config.target_host, db_url, queue, model_url)
    db = get_database(db_url)
    client = PerdureClient(env.client, db, queue)
    config = {"model": "scripted/demo", "endpoint": model_url}
    ids = [
        create_agent(
            db,
            AgentCreate.model_validate(
                {"name": f"agent-{n}", "memory_blocks": [{"label": "human", "value": ""}], "llm_config": config}
            ),
        ).id
        for n in range(agents)
    ]
    with workers(processes, worker_env, log) as pids:
        await asyncio.gather(*(converse(client, agent_id, 0) for agent_id in ids))  # a warm-up run each
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        started = time.monotonic()
        steps = sum(await asyncio.gather(*(converse(client, agent_id, started + seconds) for agent_id in ids)))
        elapsed = time.monotonic() - started
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    return Measurement(
        agents=agents,
        worker_processes=processes,
        steps=steps,
        seconds=round(elapsed, 2),
        steps_per_second=round(steps / elapsed, 1),
        worker_cpu_seconds=round(cpu, 2),
        worker_cpu_ms_per_step=round(cpu * 1000 / steps, 2) if steps else None,
    )


async def main(agent_counts: list[int], process_counts: list[int], seconds: float, store: str) -> Report:
    with tempfile.TemporaryDirectory() as tmp, model_process() as model_url, database(store, Path(tmp)) as db_url:
        async with dev_server() as env:
            results = [
                await measure(
                    env, db_url, model_url, agents, processes, seconds, Path(tmp) / f"workers-{agents}-{processes}.log"
                )
                for agents in agent_counts
                for processes in process_counts
            ]
    single = {r.agents: r.steps_per_second for r in results if r.worker_processes == 1}
    rated = [
        r.model_copy(update={"ratio_to_one_process": round(r.steps_per_second / single[r.agents], 2)})
        if single.get(r.agents)
        else r
        for r in results
    ]
    return Report(store=store, cpus=os.cpu_count(), results=rated)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Steps per second with many agents and one or two worker processes.")
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    options = parser.parse_args()
    report = asyncio.run(main(options.agents, options.processes, options.seconds, options.store))
    print(report.model_dump_json(indent=2))
