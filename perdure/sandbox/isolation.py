"""How a sandbox process is started: with bubblewrap's namespaces where they work, else plainly.

Both kinds get a clean environment (nothing of the worker's), a scratch working directory and,
set by the runner itself before the tool runs, CPU-time, memory and file-size limits; the pool
adds the wall-clock limit. Namespaces add: a read-only system, the worker's own directories
(its working directory, home, database, temporary files) out of sight, no network unless the
tool asks for it, and a PID namespace that dies with the process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from perdure.sandbox import runner

SANDBOX_ENV = "PERDURE_SANDBOX"
"""`auto` (default: namespaces if a probe works, else process), `namespaces` or `process`."""
MEMORY_ENV = "PERDURE_SANDBOX_MEMORY_MB"
DEFAULT_MEMORY_MB = 512
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
RUNNER_SOURCE = Path(runner.__file__).read_text(encoding="utf-8")
"""Passed with `python -c`, so the sandbox needs no path into the worker's tree. Python starts
with `-I -S`: no user site, no environment variables, and no `site` import (the slow part of a
start; the runner adds a requirements venv's packages itself)."""
PROBE_TIMEOUT_S = 10.0


class Isolation(str, Enum):
    NAMESPACES = "namespaces"
    PROCESS = "process"


@dataclass(frozen=True)
class SandboxConfig:
    isolation: Isolation
    python: str
    """The interpreter tools run on when they have no requirements (the worker's base Python, not its venv)."""
    memory_bytes: int
    hidden: tuple[str, ...] = ()
    """Directories replaced by an empty tmpfs in a namespace sandbox."""
    exposed: tuple[str, ...] = field(default=())
    """Directories under a hidden one that tools still need, read-only (the interpreter, the venvs)."""
    reason: str = ""
    """Why this isolation was chosen (for the worker's log)."""

    def describe(self) -> str:
        limits = f"memory {self.memory_bytes // (1024 * 1024)} MB"
        return f"tool sandbox: {self.isolation.value} ({self.reason}; {limits})"


def command(config: SandboxConfig, python: str, scratch: Path, network: bool) -> list[str]:
    """The command line of one sandbox process whose working directory is `scratch`."""
    start = [python, "-I", "-S", "-c", RUNNER_SOURCE]
    if config.isolation is Isolation.PROCESS:
        return start
    args = ["bwrap", "--die-with-parent", "--unshare-all"]
    if network:
        args.append("--share-net")
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for hidden in config.hidden:
        args += ["--tmpfs", hidden]
    for exposed in config.exposed:
        if Path(exposed).exists():
            args += ["--ro-bind", exposed, exposed]
    args += ["--bind", str(scratch), str(scratch)]
    for empty in ("/tmp", *config.hidden):
        args += ["--remount-ro", empty]
    args += ["--chdir", str(scratch), "--"]
    return args + start


def clean_environment(scratch: Path) -> dict[str, str]:
    """All a sandbox process starts with; the runner adds the agent's tool variables per call."""
    return {"PATH": MINIMAL_PATH, "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8"}


def base_python() -> str:
    """The interpreter the worker's venv was made from: tools must not see the worker's packages."""
    candidate = getattr(sys, "_base_executable", None) or sys.executable
    return str(Path(candidate).resolve()) if Path(candidate).exists() else sys.executable


def choose_config(venv_root: Path, database_url: str) -> SandboxConfig:
    """The sandbox this worker uses: `PERDURE_SANDBOX` decides, or a probe of bubblewrap."""
    wanted = os.environ.get(SANDBOX_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", Isolation.NAMESPACES.value, Isolation.PROCESS.value):
        raise ValueError(f"{SANDBOX_ENV} must be auto, namespaces or process, not {wanted!r}")
    memory_mb = int(os.environ.get(MEMORY_ENV, DEFAULT_MEMORY_MB))
    python = base_python()
    hidden = _hidden_directories(database_url)
    exposed = tuple(sorted({str(Path(sys.base_prefix).resolve()), str(venv_root.resolve())}))
    namespaces = SandboxConfig(Isolation.NAMESPACES, python, memory_mb * 1024 * 1024, hidden, exposed)
    process = SandboxConfig(Isolation.PROCESS, python, memory_mb * 1024 * 1024)
    if wanted == Isolation.PROCESS.value:
        return _because(process, f"{SANDBOX_ENV}=process")
    problem = probe(namespaces)
    if problem is None:
        return _because(namespaces, "bubblewrap probe passed")
    if wanted == Isolation.NAMESPACES.value:
        raise RuntimeError(f"{SANDBOX_ENV}=namespaces, but bubblewrap does not work here: {problem}")
    return _because(process, f"no namespaces: {problem}")


def probe(config: SandboxConfig) -> str | None:
    """None if a namespace sandbox starts and runs Python here, else why not."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    scratch = Path(os.environ.get("TMPDIR", "/tmp")).resolve()
    args = command(config, config.python, scratch, network=False)
    args = args[: args.index("-c") + 1] + ["print('ok')"]
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=clean_environment(scratch)
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap did not run: {err}"
    if done.returncode != 0 or done.stdout.strip() != "ok":
        return f"bwrap failed: {(done.stderr.strip().splitlines() or ['exit ' + str(done.returncode)])[-1]}"
    return None


def _because(config: SandboxConfig, reason: str) -> SandboxConfig:
    return SandboxConfig(config.isolation, config.python, config.memory_bytes, config.hidden, config.exposed, reason)


def _hidden_directories(database_url: str) -> tuple[str, ...]:
    """The worker's own places: its working directory, its home, its database's directory."""
    places = {Path.cwd(), Path.home(), Path(os.environ.get("PERDURE_HOME", ".perdure"))}
    if database_url.startswith("sqlite:///"):
        places.add(Path(database_url.removeprefix("sqlite:///")).parent)
    system = {Path(p) for p in ("/", "/usr", "/bin", "/lib", "/lib64", "/etc", "/dev", "/proc", "/tmp", "/sys")}
    resolved = {p.resolve() for p in places if p.exists()} - system
    tmp = Path("/tmp")
    kept = [p for p in resolved if tmp not in p.parents and not any(o in p.parents for o in resolved)]
    return tuple(sorted(str(p) for p in kept))
