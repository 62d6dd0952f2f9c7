"""The code passes the project's lint (ruff, with the rules in pyproject.toml).

Run as a test so that the README's one test command, and CI, hold every change to it:
an unused import or an undefined name in an annotation fails here, not in a reader's head.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
