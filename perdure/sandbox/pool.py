"""Warm sandbox processes: started ahead of time so a call skips the interpreter's start.

Each process serves one call and is then thrown away with its scratch directory, so a call
never inherits another call's variables, files or module state; the pool only moves the
process start off the call's path. Spares are generic: they carry no agent's variables until
a call hands them over. They are kept per interpreter (the worker's base Python, or a tool's
requirements venv) and network setting.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from perdure.sandbox.isolation import SandboxConfig, clean_environment, command

DEFAULT_SPARES = 3


@dataclass(frozen=True)
class PoolKey:
    python: str
    network: bool


class WarmProcess:
    """One started sandbox process waiting for its call, and its scratch directory."""

    def __init__(self, popen: subprocess.Popen[str], scratch: Path) -> None:
        self.popen = popen
        self.scratch = scratch

    def kill(self) -> None:
        """Kill the process and everything it started (its own process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def discard(self) -> None:
        """Kill the process (if it still runs), reap it and remove its scratch directory."""
        self.kill()
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        shutil.rmtree(self.scratch, ignore_errors=True)


class SandboxPool:
    def __init__(self, config: SandboxConfig, spares: int = DEFAULT_SPARES) -> None:
        self.config = config
        self._spares = spares
        self._idle: dict[PoolKey, deque[WarmProcess]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def default_key(self, network: bool = False) -> PoolKey:
        return PoolKey(self.config.python, network)

    def warm(self, key: PoolKey) -> None:
        """Start spares for `key` up to the pool's size."""
        while True:
            with self._lock:
                idle = self._idle.setdefault(key, deque())
                if self._closed or len(idle) >= self._spares:
                    return
            process = self._start(key)
            with self._lock:
                if self._closed:
                    process.discard()
                    return
                self._idle[key].append(process)

    def take(self, key: PoolKey) -> WarmProcess:
        """A process for one call: a spare if one is alive, else a new one; spares are refilled behind."""
        process = None
        with self._lock:
            idle = self._idle.setdefault(key, deque())
            while idle and process is None:
                candidate = idle.popleft()
                if candidate.popen.poll() is None:
                    process = candidate
                else:
                    candidate.discard()
        if process is None:
            process = self._start(key)
        threading.Thread(target=self.warm, args=(key,), daemon=True, name="sandbox-warm").start()
        return process

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spares = [p for idle in self._idle.values() for p in idle]
            self._idle.clear()
        for process in spares:
            process.discard()

    def _start(self, key: PoolKey) -> WarmProcess:
        scratch = Path(tempfile.mkdtemp(prefix="perdure-sandbox-")).resolve()
        popen = subprocess.Popen(
            command(self.config, key.python, scratch, key.network),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=scratch,
            env=clean_environment(scratch),
            text=True,
            start_new_session=True,
        )
        return WarmProcess(popen, scratch)
