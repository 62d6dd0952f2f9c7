"""One tool call in one sandbox process: hand it the call, wait at most the tool's timeout, read
what it printed and returned. Every way the process can fail is an outcome, never an exception."""

from __future__ import annotations

import json
import math
import select
import signal
import subprocess
import threading
from typing import Any, Literal

from pydantic import BaseModel, Field

from perdure.sandbox.isolation import clean_environment
from perdure.sandbox.pool import WarmProcess
from perdure.sandbox.runner import STDERR_FILE, STDOUT_FILE

CAPTURE_LIMIT = 100_000
"""Characters of stdout and of stderr kept per call."""
EXIT_WAIT_S = 5.0
"""How long a process that closed its result pipe may take to exit before it is killed."""


class SandboxCall(BaseModel):
    source: str
    function: str
    arguments: dict[str, Any]
    env: dict[str, str] = Field(default_factory=dict)
    """The agent's tool variables: all the process sees besides PATH, HOME, TMPDIR and LANG."""
    agent_state: dict[str, Any] | None = None
    timeout_s: float


class SandboxOutcome(BaseModel):
    status: Literal["success", "error"]
    value: str | None = None
    error_type: str | None = None
    message: str | None = None
    stdout: str = ""
    stderr: str = ""


def run_call(process: WarmProcess, call: SandboxCall, memory_bytes: int) -> SandboxOutcome:
    """Run `call` in `process` (which is used up either way)."""
    request = {
        "source": call.source,
        "function": call.function,
        "arguments": call.arguments,
        "env": {**clean_environment(process.scratch), **call.env},
        "agent_state": call.agent_state,
        "cpu_seconds": math.ceil(call.timeout_s),
        "memory_bytes": memory_bytes,
    }
    try:
        line, timed_out = _exchange(process, json.dumps(request) + "\n", call.timeout_s)
        stdout, stderr = _captured(process, STDOUT_FILE), _captured(process, STDERR_FILE)
        result = _result(line)
        if result is not None:
            return SandboxOutcome.model_validate({**result, "stdout": stdout, "stderr": stderr})
        if timed_out:
            process.kill()
        returncode, err = _ended(process)
        error_type, message = _failure(returncode, timed_out, call.timeout_s, err)
        return SandboxOutcome(status="error", error_type=error_type, message=message, stdout=stdout, stderr=stderr)
    finally:
        threading.Thread(target=process.discard, daemon=True, name="sandbox-discard").start()


def _exchange(process: WarmProcess, request: str, timeout_s: float) -> tuple[str, bool]:
    """Send the request, then wait at most `timeout_s` for the result line: ('', True) when the
    time ran out, ('', False) when the process ended without one. The process's exit and its
    removal are left to the caller, off the call's path."""
    stdin, stdout = process.popen.stdin, process.popen.stdout
    if stdin is None or stdout is None:
        raise RuntimeError("a sandbox process is started with pipes")
    try:
        stdin.write(request)
        stdin.close()
    except (BrokenPipeError, OSError):
        return "", False
    ready, _, _ = select.select([stdout], [], [], timeout_s)
    if not ready:
        return "", True
    return stdout.readline(), False


def _ended(process: WarmProcess) -> tuple[int | None, str]:
    """The exit code of a process that gave no result, and the last of what it wrote to stderr
    before the runner took stderr over (a failed start, bubblewrap's complaint)."""
    try:
        returncode = process.popen.wait(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        returncode = process.popen.wait()
    err = process.popen.stderr.read(CAPTURE_LIMIT) if process.popen.stderr is not None else ""
    return returncode, err


def _result(out: str) -> dict[str, Any] | None:
    lines = out.strip().splitlines()
    if not lines:
        return None
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return result if isinstance(result, dict) else None


def _failure(returncode: int | None, timed_out: bool, timeout_s: float, err: str) -> tuple[str, str]:
    """Why a process gave no result, as an exception type and message the model can read."""
    if timed_out:
        return "TimeoutError", f"the tool ran longer than its timeout of {timeout_s:g} s and was stopped"
    number = _signal_number(returncode)
    if number is not None:
        name = signal.Signals(number).name
        if name == "SIGXCPU":
            return "TimeoutError", f"the tool used more than {math.ceil(timeout_s)} s of CPU time and was stopped"
        return "SandboxError", f"the tool's process was killed ({name})"
    last = (err.strip().splitlines() or [""])[-1]
    detail = f": {last}" if last else ""
    return "SandboxError", f"the tool's process exited with code {returncode} without a result{detail}"


def _signal_number(returncode: int | None) -> int | None:
    """The signal that ended the process: negative codes from Popen, 128+N from bubblewrap."""
    if returncode is None:
        return None
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    valid = {s.value for s in signal.Signals}
    return number if number in valid else None


def _captured(process: WarmProcess, name: str) -> str:
    try:
        with open(process.scratch / name, encoding="utf-8", errors="replace") as stream:
            return stream.read(CAPTURE_LIMIT)
    except OSError:
        return ""
