"""What every benchmark needs: a dev server with Perdure's flags, a SQLite file, the scripted
model and a worker, all started here so one run measures Perdure plus Temporal and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from model_process import ModelProcess, model_process  # noqa: E402

from perdure.scripted.server import ScriptedLLMServer  # noqa: E402
from perdure.settings import Settings  # noqa: E402
from perdure.store.db import get_database, upgrade_database  # noqa: E402
from starter.client import PerdureClient  # noqa: E402
from tests.temporal_server import local_temporal  # noqa: E402
from worker import perdure_worker  # noqa: E402


@asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A Temporal dev server with Perdure's search attributes, its client carrying the plugin.
    The server process starts with its standard output sent to this process's standard error,
    so its start-up banner does not land in the benchmark's JSON."""
    async with AsyncExitStack() as stack:
        with _stdout_to_stderr():
            env = await stack.enter_async_context(local_temporal())
        yield env


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 is 2 while inside: what a child process started here inherits."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class Rig(NamedTuple):
    """What a benchmark whose workers run in processes of their own runs against."""

    tmp: Path
    db_url: str
    model: ModelProcess
    env: WorkflowEnvironment


@asynccontextmanager
async def bench_rig() -> AsyncIterator[Rig]:
    """A temporary folder, the model stand-in in a process of its own, a SQLite file made by
    the migrations, and a dev server: the same for every benchmark that starts its own workers."""
    with tempfile.TemporaryDirectory() as tmp, model_process() as model:
        db_url = f"sqlite:///{tmp}/bench.db"
        upgrade_database(db_url)
        async with dev_server() as env:
            yield Rig(Path(tmp), db_url, model, env)


@asynccontextmanager
async def bench_setup() -> AsyncIterator[tuple[PerdureClient, ScriptedLLMServer]]:
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLMServer() as llm:
        settings = Settings(
            database_url=f"sqlite:///{tmp}/bench.db",
            temporal_address="",
            temporal_namespace="default",
            task_queue="perdure-bench",
            openai_base_url=None,
            scripted_base_url=llm.base_url,
        )
        upgrade_database(settings.database_url)
        async with dev_server() as env, perdure_worker(env.client, settings) as worker, worker:
            yield PerdureClient(env.client, get_database(settings.database_url), settings.task_queue), llm


@contextmanager
def started_process(command: list[str], ready: str, log: Path) -> Iterator[int]:
    """`command` in a process of its own, its output in `log`, yielded (as its pid) once it has
    printed `ready`; terminated on the way out."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while ready not in log.read_text():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{Path(command[1]).name} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
