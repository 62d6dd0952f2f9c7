"""The worker's tool sandbox: its isolation, its warm pool and its requirement venvs together."""

from __future__ import annotations

import logging
from pathlib import Path

from perdure.sandbox.call import SandboxCall, SandboxOutcome, run_call
from perdure.sandbox.isolation import SandboxConfig, choose_config
from perdure.sandbox.pool import PoolKey, SandboxPool, WarmProcess
from perdure.sandbox.venvs import VenvInstallError, venv_python

log = logging.getLogger("perdure.sandbox")


class ToolSandbox:
    def __init__(self, config: SandboxConfig, venv_root: Path) -> None:
        self.config = config
        self.venv_root = venv_root
        self.pool = SandboxPool(config)

    @classmethod
    def for_worker(cls, home: Path, database_url: str) -> ToolSandbox:
        """The sandbox this machine allows (see `choose_config`), venvs kept under `home`/venvs."""
        venv_root = home / "venvs"
        return cls(choose_config(venv_root, database_url), venv_root)

    def warm(self) -> None:
        """Start the spares of the common case (no requirements, no network)."""
        self.pool.warm(self.pool.default_key())

    def install(self, requirement_sets: list[list[str]]) -> None:
        """Make the venvs of `requirement_sets` ahead of their first calls (a worker starting
        does this in the background); one that fails is logged, and its calls say why."""
        for requirements in requirement_sets:
            try:
                venv_python(self.venv_root, self.config.python, requirements)
            except VenvInstallError as err:
                log.warning("tool requirements %s: %s", " ".join(requirements), err)

    def process_for(self, requirements: list[str], network: bool) -> WarmProcess:
        """A process for one call, on the venv of `requirements` (made first if need be:
        `VenvInstallError` if it cannot be)."""
        python = venv_python(self.venv_root, self.config.python, requirements) if requirements else self.config.python
        return self.pool.take(PoolKey(python, network))

    def run(self, process: WarmProcess, call: SandboxCall) -> SandboxOutcome:
        return run_call(process, call, self.config.memory_bytes)

    def close(self) -> None:
        self.pool.close()
