"""Chaos check: nothing lost, nothing doubled, nothing stuck, through crashes, outages and provider faults.

Starts a file-backed Temporal dev server, a stand-in model in its own process and a worker process
(`python worker.py`), all its own; sends one message to each of N agents at once, each making K
`memory_insert` calls and then answering, while the worker is killed (SIGKILL) at random points and
restarted, and the dev server is killed and restarted on the same port and state file. The sends
ride through with PerdureClient, and a send that still fails is sent again with the same request
(same `otid`), as any client does after an error. Then every agent is checked from the store: one
user message, K calls with one return each, one answer, each memory line once, no run left running.
With `--provider-faults P`, a fraction P of the model's replies fail (429 with Retry-After, 500, a
stall, a body cut off mid-way). Every other agent streams tokens, so both answer shapes are tried.

This module runs the check and reports it; its parts are the stand-in model (chaos_model.py), the
processes it kills (chaos_cluster.py), the agents' sends (chaos_workload.py) and the per-agent
verdict from the store (chaos_check.py).

    python bench/chaos.py [--agents 20] [--calls 5] [--worker-kills 5] [--server-kills 1]
                          [--provider-faults 0.0] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydantic import BaseModel, Field, ValidationError  # noqa: E402
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter  # noqa: E402

from bench.chaos_check import check_agent, settle  # noqa: E402
from bench.chaos_cluster import START_TIMEOUT_S, Cluster, cluster_running, free_port  # noqa: E402
from bench.chaos_model import ChaosModelProcess, serve_model  # noqa: E402
from bench.chaos_workload import make_agents, send, tool_returns_stored  # noqa: E402
from perdure.settings import Settings  # noqa: E402
from perdure.store.db import Database, get_database, upgrade_database  # noqa: E402
from starter.client import PerdureClient  # noqa: E402
from starter.temporal import connect_when_serving  # noqa: E402
from worker import ensure_search_attributes  # noqa: E402

MAX_FAILURES_SHOWN = 30


class ChaosOptions(BaseModel):
    agents: int = Field(default=20, ge=1)
    calls: int = Field(default=5, ge=1)
    worker_kills: int = Field(default=5, ge=0)
    server_kills: int = Field(default=1, ge=0)
    provider_faults: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = 0
    stall_s: float = Field(default=30.0, ge=0.0)
    """How long a stalled model reply waits before it answers."""
    reply_delay_s: float = Field(default=0.5, ge=0.0)
    """The longest think time of a model reply (each is uniform up to it)."""
    timeout_s: float = Field(default=900.0, gt=0)
    """How long each send rides through outages before it gives up."""


class ChaosReport(BaseModel):
    benchmark: str = "chaos"
    agents: int
    calls_per_agent: int
    calls: int
    streaming_agents: int
    worker_kills: int
    server_kills: int
    provider_faults: float
    faults_injected: dict[str, int]
    model_requests: int
    end_turn: int
    lost: int
    doubled: int
    stuck: int
    client_errors: int
    wall_seconds: float
    failures: list[str]
    seed: int


def kill_plan(options: ChaosOptions, rng: random.Random) -> list[tuple[int, str]]:
    """When to kill what: at random counts of stored tool returns, below 90% of them all, so every
    kill lands while runs are under way."""
    total = max(options.agents * options.calls, 1)
    points = [(rng.randint(1, max(1, int(total * 0.9))), "worker") for _ in range(options.worker_kills)]
    points += [(rng.randint(1, max(1, int(total * 0.9))), "server") for _ in range(options.server_kills)]
    return sorted(points)


async def cause_chaos(
    cluster: Cluster,
    db: Database,
    agent_ids: list[str],
    plan: list[tuple[int, str]],
    sends: asyncio.Future[Any],
    rng: random.Random,
) -> Counter[str]:
    done: Counter[str] = Counter()
    for at, kind in plan:
        while not sends.done() and await asyncio.to_thread(tool_returns_stored, db, agent_ids) < at:
            await asyncio.sleep(0.2)
        if sends.done():
            break
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        if kind == "worker":
            await cluster.crash_worker(rng.uniform(0.0, 2.0))
        else:
            await cluster.crash_server(rng.uniform(0.5, 2.0))
        done[kind] += 1
    return done


async def run_chaos(options: ChaosOptions) -> ChaosReport:
    """Everything started here and stopped here; the report says what the store shows."""
    rng = random.Random(options.seed)
    with tempfile.TemporaryDirectory(prefix="perdure-chaos-") as tmp:
        workdir = Path(tmp)
        model = ChaosModelProcess(options.provider_faults, options.seed, options.stall_s, options.reply_delay_s)
        try:
            port = free_port()
            settings = Settings(
                database_url=f"sqlite:///{workdir / 'perdure.db'}",
                temporal_address=f"127.0.0.1:{port}",
                temporal_namespace="default",
                task_queue=f"perdure-chaos-{options.seed}-{os.getpid()}",
                openai_base_url=None,
                scripted_base_url=model.base_url,
            )
            upgrade_database(settings.database_url)
            async with cluster_running(workdir, settings, port) as cluster:
                report = await _run(cluster, settings, options, model.base_url, rng)
        finally:
            counts = model.stop()
    model_counts = {"faults_injected": counts.get("faults", {}), "model_requests": counts.get("requests", 0)}
    return report.model_copy(update=model_counts)


async def _run(
    cluster: Cluster, settings: Settings, options: ChaosOptions, base_url: str, rng: random.Random
) -> ChaosReport:
    db = get_database(settings.database_url)
    temporal = await connect_when_serving(settings, within=START_TIMEOUT_S)
    await ensure_search_attributes(temporal)
    client = PerdureClient(temporal, db, settings.task_queue, timeout_s=options.timeout_s)
    agent_ids = make_agents(db, options.agents, options.calls, base_url)
    streaming = {agent_id for number, agent_id in enumerate(agent_ids) if number % 2}
    started = time.monotonic()
    sends = asyncio.gather(*(send(client, agent_id, agent_id in streaming) for agent_id in agent_ids))
    try:
        kills = await cause_chaos(cluster, db, agent_ids, kill_plan(options, rng), sends, rng)
    except BaseException:
        sends.cancel()  # the bench broke (a process would not start): stop waiting for the runs
        await asyncio.wait([sends], timeout=30)
        raise
    outcomes = await sends
    wall = time.monotonic() - started
    running = await settle(temporal, agent_ids)
    verdicts = [
        check_agent(db, agent_id, options.calls, outcome, agent_id in running)
        for agent_id, outcome in zip(agent_ids, outcomes, strict=True)
    ]
    errors = [error for outcome in outcomes for error in outcome.errors]
    problems = [problem for verdict in verdicts for problem in verdict.problems]
    return ChaosReport(
        agents=options.agents,
        calls_per_agent=options.calls,
        calls=options.agents * options.calls,
        streaming_agents=len(streaming),
        worker_kills=kills["worker"],
        server_kills=kills["server"],
        provider_faults=options.provider_faults,
        faults_injected={},
        model_requests=0,
        end_turn=sum(v.end_turn for v in verdicts),
        lost=sum(v.lost for v in verdicts),
        doubled=sum(v.doubled for v in verdicts),
        stuck=sum(v.stuck for v in verdicts),
        client_errors=len(errors),
        wall_seconds=round(wall, 1),
        failures=(problems + [f"client error: {error}" for error in errors])[:MAX_FAILURES_SHOWN],
        seed=options.seed,
    )


def parse_options(argv: list[str] | None = None) -> tuple[ChaosOptions, bool]:
    """The options, and whether this process is the model server (the bench starts it so)."""
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = ChaosOptions()
    parser.add_argument("--agents", type=int, default=defaults.agents)
    parser.add_argument("--calls", type=int, default=defaults.calls, help="memory_insert calls per agent")
    parser.add_argument("--worker-kills", type=int, default=defaults.worker_kills)
    parser.add_argument("--server-kills", type=int, default=defaults.server_kills)
    parser.add_argument("--provider-faults", type=float, default=defaults.provider_faults, help="fraction of replies")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--stall-s", type=float, default=defaults.stall_s, help="how long a stalled reply waits")
    parser.add_argument("--reply-delay-s", type=float, default=defaults.reply_delay_s, help="longest model think time")
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s, help="how long each send rides through")
    parser.add_argument("--serve-model", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args(argv)
    fields = {name: getattr(parsed, name) for name in ChaosOptions.model_fields}
    try:
        options = ChaosOptions.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        parser.error(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}")
    return options, bool(parsed.serve_model)


def main() -> None:
    options, model_only = parse_options()
    if model_only:
        serve_model(options.provider_faults, options.seed, options.stall_s, options.reply_delay_s)
        return
    # The SDK's core logs each retried call while the server is down, on stdout; the JSON is
    # the output, and the report counts what the retries did not cure.
    quiet = LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=quiet)))
    print(json.dumps(asyncio.run(run_chaos(options)).model_dump(), indent=2))


if __name__ == "__main__":
    main()
