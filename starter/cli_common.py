"""What every `perdure` command shares: bad-input errors, the connection, the store, `--json` output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from perdure.settings import Settings
from perdure.store.db import Database, get_database
from starter.client import PerdureClient
from starter.outages import DEFAULT_TIMEOUT_S
from worker import temporal_connect_config

DEFAULT_API_PORT = 8283
"""Letta's port, so Letta programs find Perdure where they found Letta."""


class UsageError(Exception):
    """Bad input the user can fix: one line on stderr, exit 2."""


async def connect_client(timeout_s: float = DEFAULT_TIMEOUT_S) -> PerdureClient:
    """The client; `timeout_s` (`--timeout`) is how long its sends ride through an outage."""
    if timeout_s <= 0:
        raise UsageError(f"--timeout must be more than 0 seconds, got {timeout_s:g}")
    try:
        return await PerdureClient.connect(timeout_s=timeout_s)
    except RuntimeError as err:
        address = temporal_connect_config(Settings.from_env()).get("target_host")
        raise ConnectionError(f"cannot reach Temporal at {address} ({err}); start it with `perdure dev`") from err


def open_db() -> Database:
    return get_database(Settings.from_env().database_url)


def json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` with `--json`, the flag every command that prints a result takes."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def out(args: argparse.Namespace, value: BaseModel | dict[str, Any], text: str) -> int:
    if args.json:
        data = value.model_dump(mode="json", exclude_none=True) if isinstance(value, BaseModel) else value
        return print_json(data)
    print(text)
    return 0


def print_json(data: Any) -> int:
    print(json.dumps(data, indent=2))
    return 0


def read_json(path: Path, what: str, kind: type, shape: str) -> Any:
    """Read a JSON file a user named; a missing file, bad JSON or the wrong shape is one line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read {what} {path}: {err}") from err
    except UnicodeDecodeError as err:
        raise UsageError(f"cannot read {what} {path}: it is not UTF-8 text ({err.reason} at byte {err.start})") from err
    except RecursionError as err:
        raise UsageError(f"cannot read {what} {path}: its JSON is nested too deeply") from err
    if not isinstance(data, kind):
        raise UsageError(f"{what} {path} must hold {shape}")
    return data
