"""Virtual environments for tools with `pip_requirements`: one per requirement set, made once.

A venv is keyed by a hash of its sorted requirements and built beside its final place, then
renamed into it, so a worker that dies mid-install leaves nothing half-made to be trusted; a
lock file makes workers on one machine wait for each other instead of installing twice. The
venv does not see the system's site-packages. pip runs here, on the worker, before a call
starts: never inside the sandbox, never during a call.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

INSTALL_TIMEOUT_S = 600.0


class VenvInstallError(RuntimeError):
    """The requirements could not be installed: the call's error return says why."""


def requirements_key(requirements: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(set(requirements))).encode()).hexdigest()[:16]


def venv_python(root: Path, python: str, requirements: list[str]) -> str:
    """The interpreter of the venv holding `requirements`, installing it first if it is not there."""
    home = root / requirements_key(requirements)
    interpreter = home / "bin" / "python"
    if (home / ".ready").exists():
        return str(interpreter)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{home.name}.lock"):
        if not (home / ".ready").exists():
            _install(home, python, requirements)
    return str(interpreter)


def _install(home: Path, python: str, requirements: list[str]) -> None:
    building = home.with_name(f"{home.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    try:
        _run([python, "-m", "venv", str(building)], "create a virtual environment")
        pip = [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*pip, *requirements], f"install {' '.join(requirements)}")
        (building / ".ready").write_text("\n".join(requirements) + "\n")
        shutil.rmtree(home, ignore_errors=True)
        building.rename(home)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise VenvInstallError(f"could not {what}: {err}") from err
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "")
        raise VenvInstallError(f"could not {what}: {reason}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
