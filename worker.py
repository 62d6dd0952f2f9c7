"""The Perdure worker: serves the run workflow and its activities in one process.

Workflows and activities share the process so activities start eagerly, and the sticky cache
stays on, which keeps a step's orchestration to a few tens of milliseconds.
Run it with `python worker.py` or `perdure worker`; it stops cleanly on SIGINT and SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities.compaction import CompactionActivities
from activities.llm import LLMActivities
from activities.runs import RunActivities
from activities.tools import ToolActivities
from perdure.scripted.server import ScriptedLLMServer
from perdure.settings import Settings
from perdure.store.db import get_database
from perdure.tools.registry import ensure_builtin_tools
from starter.temporal import connect, ensure_search_attributes
from workflows.run_workflow import AgentRunWorkflow
from workflows.sandbox import workflow_runner

log = logging.getLogger("perdure.worker")
HEARTBEAT_THROTTLE = timedelta(seconds=1)


@asynccontextmanager
async def perdure_worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    """A configured worker, its HTTP client and (when no scripted endpoint is set) a demo model."""
    async with AsyncExitStack() as stack:
        if settings.scripted_base_url is None:
            scripted = stack.enter_context(ScriptedLLMServer())
            settings = settings.model_copy(update={"scripted_base_url": scripted.base_url})
        db = get_database(settings.database_url)
        with db.transaction() as session:
            ensure_builtin_tools(session)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0)))
        runs, tools, llm = RunActivities(db), ToolActivities(db), LLMActivities(db, settings, http)
        compaction = CompactionActivities(db, llm)
        executor = stack.enter_context(ThreadPoolExecutor(max_workers=16))
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[AgentRunWorkflow],
            workflow_runner=workflow_runner(),
            activities=[runs.begin_run, runs.checkpoint_step, runs.finish_run, tools.execute_tool, llm.llm_step, compaction.compact],
            activity_executor=executor,
            # A cancel reaches an activity only with a heartbeat's answer, and heartbeats are
            # throttled to 80% of the heartbeat timeout (12 s for the LLM call) by default.
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        )
        yield worker


async def run_worker(settings: Settings | None = None, stop: asyncio.Event | None = None, client: Client | None = None) -> None:
    """Run until `stop` is set, or until SIGINT/SIGTERM when no event is given."""
    settings = settings or Settings.from_env()
    if client is None:
        client = await connect(settings)
    await ensure_search_attributes(client)
    stop = stop or _signal_event()
    async with perdure_worker(client, settings) as worker:
        log.info("worker serving task queue %r on %s", settings.task_queue, settings.temporal_address)
        async with worker:
            await stop.wait()
    log.info("worker stopped")


def _signal_event() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker())


if __name__ == "__main__":
    main()
