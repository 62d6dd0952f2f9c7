"""The tool sandbox on its own: real processes, real bubblewrap where it works, no Temporal.

What a call sees (a clean environment, its scratch directory, no network unless asked), that a
warm process never carries one call into the next, which isolation a machine gets and why, and
requirement venvs made once per requirement set.
"""

from __future__ import annotations

import logging
import os
import shutil
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from perdure.sandbox.call import SandboxCall, SandboxOutcome
from perdure.sandbox.isolation import SANDBOX_ENV, Isolation, choose_config
from perdure.sandbox.service import ToolSandbox
from perdure.sandbox.venvs import VenvInstallError, requirements_key
from perdure.scripted.server import ScriptedLLMServer
from perdure.settings import Settings
from temporalio.testing import WorkflowEnvironment
from worker import perdure_worker


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[ToolSandbox]:
    made = ToolSandbox.for_worker(tmp_path, "sqlite://")
    try:
        yield made
    finally:
        made.close()


def run(sandbox: ToolSandbox, body: str, *, env: dict[str, str] | None = None, network: bool = False) -> SandboxOutcome:
    source = "import os, socket, sys\n\n\ndef tool():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    call = SandboxCall(source=source, function="tool", arguments={}, env=env or {}, timeout_s=10)
    return sandbox.run(sandbox.process_for([], network), call)


def gone(path: Path, within_s: float = 10.0) -> bool:
    """Whether `path` disappears (the pool removes a used process's scratch directory behind the call)."""
    deadline = time.monotonic() + within_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def namespaces_only(sandbox: ToolSandbox) -> None:
    if sandbox.config.isolation is not Isolation.NAMESPACES:
        pytest.skip("bubblewrap's namespaces do not work on this machine")


def test_a_call_sees_only_a_minimal_environment_and_its_scratch_directory(
    sandbox: ToolSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-worker-secret")
    outcome = run(sandbox, "return [dict(os.environ), os.getcwd()]", env={"TOKEN": "t"})
    assert outcome.status == "success", outcome
    assert outcome.value is not None
    environment, cwd = eval(outcome.value.replace("null", "None"))  # a JSON list of a dict and a str
    assert environment == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": cwd,
        "TMPDIR": cwd,
        "LANG": "C.UTF-8",
        "TOKEN": "t",
    }
    assert Path(cwd).name.startswith("perdure-sandbox-")
    assert gone(Path(cwd)), "the scratch directory goes with its process"


def test_a_warm_process_never_carries_one_call_into_the_next(sandbox: ToolSandbox) -> None:
    """Spares are generic and serve one call each: variables, module state and scratch files
    of one call (one agent's) are gone for the next (another agent's)."""
    first = run(
        sandbox,
        """
        import json
        json.LEFT_BEHIND = "agent A"
        open("note.txt", "w").write("agent A")
        return os.getpid()
        """,
        env={"SECRET": "agent A's"},
    )
    second = run(
        sandbox,
        """
        import json
        return [os.environ.get("SECRET"), getattr(json, "LEFT_BEHIND", None), os.path.exists("note.txt")]
        """,
    )
    assert first.status == second.status == "success", (first, second)
    assert second.value == "[null, null, false]"


def test_the_network_is_cut_off_unless_the_tool_asks_for_it(sandbox: ToolSandbox, llm: ScriptedLLMServer) -> None:
    namespaces_only(sandbox)
    host, port = llm.base_url.split("//")[1].split("/")[0].split(":")
    body = f"socket.create_connection(({host!r}, {port}), timeout=5).close()\nreturn 'connected'"
    cut_off = run(sandbox, body)
    allowed = run(sandbox, body, network=True)
    assert cut_off.status == "error" and cut_off.error_type in ("ConnectionRefusedError", "OSError"), cut_off
    assert (allowed.status, allowed.value) == ("success", "connected"), allowed


def test_the_system_is_read_only_and_only_the_scratch_directory_is_writable(sandbox: ToolSandbox) -> None:
    namespaces_only(sandbox)
    target = f"/var/tmp/perdure-escape-{uuid.uuid4().hex[:8]}"
    outcome = run(
        sandbox,
        f"""
        open("mine.txt", "w").write("ok")
        refused = []
        for path in ({target!r}, "/tmp/x", "/etc/perdure-escape", os.path.expanduser("~root") + "/x"):
            try:
                open(path, "w").write("escaped")
            except OSError as err:
                refused.append(err.errno)
        return refused
        """,
    )
    assert outcome.status == "success", outcome
    assert outcome.value == "[30, 30, 30, 30]"  # EROFS each time
    assert not Path(target).exists()


def test_without_bubblewrap_the_plain_process_sandbox_is_used_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    config = choose_config(tmp_path / "venvs", "sqlite://")
    assert config.isolation is Isolation.PROCESS
    assert config.describe() == (
        "tool sandbox: process (no namespaces: bwrap is not installed (apt-get install bubblewrap); memory 512 MB)"
    )
    monkeypatch.setenv("PATH", os.defpath)
    plain = ToolSandbox(config, tmp_path / "venvs")
    try:
        outcome = run(plain, "return sorted(os.environ)", env={"TOKEN": "t"})
    finally:
        plain.close()
    assert (outcome.status, outcome.value) == ("success", '["HOME", "LANG", "PATH", "TMPDIR", "TOKEN"]')


def test_the_sandbox_kind_can_be_chosen_and_a_bad_choice_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SANDBOX_ENV, "process")
    assert choose_config(tmp_path, "sqlite://").isolation is Isolation.PROCESS
    monkeypatch.setenv(SANDBOX_ENV, "chroot")
    with pytest.raises(ValueError, match="PERDURE_SANDBOX must be auto, namespaces or process, not 'chroot'"):
        choose_config(tmp_path, "sqlite://")
    if shutil.which("bwrap") is not None:
        return
    monkeypatch.setenv(SANDBOX_ENV, "namespaces")
    with pytest.raises(RuntimeError, match="bubblewrap does not work here"):
        choose_config(tmp_path, "sqlite://")


async def test_the_worker_says_which_sandbox_is_active_when_it_starts(
    temporal_env: WorkflowEnvironment, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="perdure.worker")
    own_queue = settings.model_copy(update={"task_queue": f"sandbox-log-{uuid.uuid4().hex[:8]}"})
    async with perdure_worker(temporal_env.client, own_queue):
        pass
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tool sandbox: ")]
    expected = "namespaces" if shutil.which("bwrap") else "process"
    assert line.startswith(f"tool sandbox: {expected} ("), line


def test_requirements_install_once_into_their_own_venv(sandbox: ToolSandbox) -> None:
    process = sandbox.process_for(["iniconfig"], network=False)
    source = "def tool():\n    import iniconfig, sys\n    return [iniconfig.__name__, sys.prefix]\n"
    outcome = sandbox.run(process, SandboxCall(source=source, function="tool", arguments={}, timeout_s=10))
    assert outcome.status == "success", outcome
    home = sandbox.venv_root / requirements_key(["iniconfig"])
    assert outcome.value == f'["iniconfig", "{home}"]'
    made = (home / ".ready").stat().st_mtime_ns
    sandbox.process_for(["iniconfig"], network=False).discard()
    assert (home / ".ready").stat().st_mtime_ns == made, "the venv is made once per requirement set"
    without = run(sandbox, "import temporalio")
    assert (without.status, without.error_type) == ("error", "ModuleNotFoundError"), "the worker's packages stay out"


def test_a_failed_install_says_why_and_leaves_nothing_behind(sandbox: ToolSandbox) -> None:
    with pytest.raises(VenvInstallError, match=r"^could not install iniconfig==0\.0\.0\.999: ERROR: "):
        sandbox.process_for(["iniconfig==0.0.0.999"], network=False)
    assert [p.name for p in sandbox.venv_root.iterdir() if not p.name.endswith(".lock")] == []


def test_a_worker_installs_requirement_sets_ahead_and_logs_one_that_fails(
    sandbox: ToolSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="perdure.sandbox")
    sandbox.install([["iniconfig"], ["iniconfig==0.0.0.999"]])
    assert (sandbox.venv_root / requirements_key(["iniconfig"]) / ".ready").exists()
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("tool requirements iniconfig==0.0.0.999: could not install iniconfig==0.0.0.999: ERROR: ")
