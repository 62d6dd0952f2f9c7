"""`perdure worker --processes N`: N worker processes on one machine, kept running.

One worker process is CPU-bound at some tens of steps per second; workers share nothing but
Temporal and the database, so more processes on one task queue serve more agents. The
supervisor restarts a process that dies, and on SIGINT or SIGTERM stops them all, each
finishing as a lone worker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

import observability
from perdure.settings import Settings
from perdure.store.db import get_database
from worker import temporal_connect_config

log = logging.getLogger("perdure.workers")
RESTART_DELAY_SECONDS = 1.0


def run_workers(count: int, metrics_port: int | None = None) -> int:
    """Check what every process would refuse (settings, schema, connection settings, metrics ports) once,
    then supervise. With a metrics port, process i serves Prometheus metrics on port + i - 1."""
    settings = Settings.worker_from_env()
    get_database(settings.database_url)
    temporal_connect_config(settings)
    ports = worker_metrics_ports(metrics_port, count)
    observability.check_ports_free(observability.ALL_INTERFACES, ports)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_supervise(count, ports))


def worker_metrics_ports(first: int | None, count: int) -> list[int]:
    """One port per process, consecutive from `first`; none without a first port."""
    if first is None:
        return []
    if first + count - 1 > 65535:
        raise observability.MetricsEndpointError(
            f"--metrics-port {first} with {count} processes needs ports up to {first + count - 1}, past 65535"
        )
    return list(range(first, first + count))


async def _supervise(count: int, metrics_ports: list[int]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ports: list[int | None] = list(metrics_ports) or [None] * count
    codes = await asyncio.gather(*(_keep_running(slot, stop, ports[slot - 1]) for slot in range(1, count + 1)))
    log.info("all worker processes stopped")
    return max(codes)


async def _keep_running(slot: int, stop: asyncio.Event, metrics_port: int | None) -> int:
    """Run one worker process, again after it dies, until `stop`; return its last exit code."""
    env = {**os.environ, observability.METRICS_PORT_ENV: str(metrics_port) if metrics_port else ""}
    while True:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "worker", env=env)
        serving = f", metrics on port {metrics_port}" if metrics_port else ""
        log.info("worker %d: process %d started%s", slot, process.pid, serving)
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            with contextlib.suppress(ProcessLookupError):  # it may have ended a moment ago
                process.terminate()
            code = await exited
            log.info("worker %d: process %d stopped", slot, process.pid)
            return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
        stopping.cancel()
        code = exited.result()
        if stop.is_set():
            return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
        log.warning("worker %d: process %d exited with %d; restarting", slot, process.pid, code)
        try:
            await asyncio.wait_for(stop.wait(), RESTART_DELAY_SECONDS)
            return 0
        except TimeoutError:
            continue
