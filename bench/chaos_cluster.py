"""The processes the chaos check kills: a dev server on a state file and a `python worker.py`.

Both are started here, not through `harness.dev_server()` or `harness.started_process()`: the dev
server must keep its state in a file so that it comes back on the same port with its workflows
after a SIGKILL, and every start waits without blocking the event loop, because the agents' sends
keep running in it while a process is down.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from perdure.settings import Settings
from starter.devserver import dev_server_command
from starter.temporal import connect_when_serving

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.append(str(BENCH))  # throughput.py imports its siblings by bare name, as a script in bench/ does

from bench.throughput import worker_process_env  # noqa: E402

WORKER_READY = "worker serving task queue"
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL one process this bench started, and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(process)


class Cluster:
    """The dev server and the worker this bench started, with the handles to kill them."""

    def __init__(self, workdir: Path, settings: Settings, port: int) -> None:
        self.workdir = workdir
        self.settings = settings
        self.port = port
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_starts = 0
        self.server_starts = 0

    async def start_server(self) -> None:
        self.server_starts += 1
        command = dev_server_command(port=self.port, ui_port=None, db_file=self.workdir / "temporal.db")
        with (self.workdir / "server.log").open("ab") as log:
            self.server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_open(self.port):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dev server did not start; its log ends:\n{_tail(self.workdir / 'server.log')}")
            await asyncio.sleep(0.1)
        await connect_when_serving(self.settings, within=START_TIMEOUT_S)

    async def start_worker(self) -> None:
        """`python worker.py`, returning once it polls; a start that met a busy server is tried again."""
        failed: list[Path] = []
        for _ in range(3):
            self.worker_starts += 1
            log_path = self.workdir / f"worker-{self.worker_starts}.log"
            if await self._worker_ready(log_path):
                return
            failed.append(log_path)
        raise RuntimeError(f"the worker did not start; its log ends:\n{_tail(failed[-1])}")

    async def _worker_ready(self, log_path: Path) -> bool:
        with log_path.open("ab") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "worker.py"], cwd=REPO, env=self._worker_env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.worker.poll() is None and time.monotonic() < deadline:
            if WORKER_READY in log_path.read_text(errors="replace"):
                return True
            await asyncio.sleep(0.1)
        kill(self.worker)
        return False

    def _worker_env(self) -> dict[str, str]:
        settings = self.settings
        model_url = settings.scripted_base_url or ""
        return worker_process_env(settings.temporal_address, settings.database_url, settings.task_queue, model_url)

    async def crash_worker(self, downtime_s: float) -> None:
        assert self.worker is not None
        kill(self.worker)
        await asyncio.sleep(downtime_s)
        await self.start_worker()

    async def crash_server(self, downtime_s: float) -> None:
        assert self.server is not None
        kill(self.server)
        await asyncio.sleep(downtime_s)
        await self.start_server()

    def stop_all(self) -> None:
        for process in (self.worker, self.server):
            if process is not None:
                stop(process)


def _tail(log: Path, lines: int = 30) -> str:
    """The end of a log in the work directory, which goes when the bench ends."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@asynccontextmanager
async def cluster_running(workdir: Path, settings: Settings, port: int) -> AsyncIterator[Cluster]:
    cluster = Cluster(workdir, settings, port)
    try:
        await cluster.start_server()
        await cluster.start_worker()
        yield cluster
    finally:
        cluster.stop_all()
