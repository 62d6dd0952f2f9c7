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
import signal
import sys

from perdure.settings import Settings
from perdure.store.db import get_database
from worker import temporal_connect_config

log = logging.getLogger("perdure.workers")
RESTART_DELAY_SECONDS = 1.0


def run_workers(count: int) -> int:
    """Check what every process would refuse (schema, connection settings) once, then supervise."""
    settings = Settings.from_env()
    get_database(settings.database_url)
    temporal_connect_config(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_supervise(count))


async def _supervise(count: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    codes = await asyncio.gather(*(_keep_running(slot, stop) for slot in range(1, count + 1)))
    log.info("all worker processes stopped")
    return max(codes)


async def _keep_running(slot: int, stop: asyncio.Event) -> int:
    """Run one worker process, again after it dies, until `stop`; return its last exit code."""
    while True:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "worker")
        log.info("worker %d: process %d started", slot, process.pid)
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
