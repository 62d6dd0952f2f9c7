"""Process settings, read from the environment once, so the CLI and the worker agree.

Provider keys (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, ...) are not settings: the provider table
(`perdure.providers.registry`) reads them in the worker at request time, so they never travel
in a workflow or activity payload.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from perdure.local_model import local_model_installed
from perdure.schemas.agent import DEFAULT_MODEL, LOCAL_MODEL

TASK_QUEUE = "perdure"
DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
DEFAULT_TEMPORAL_NAMESPACE = "default"
LOCAL_MODEL_URL_ENV = "PERDURE_LOCAL_MODEL_URL"
SCRIPTED_MODEL_URL_ENV = "PERDURE_SCRIPTED_BASE_URL"
MAX_CACHED_RUNS_ENV = "PERDURE_MAX_CACHED_RUNS"
DEFAULT_MAX_CACHED_RUNS = 1000
"""The Temporal SDK's own default for a worker's workflow cache."""
ANTHROPIC_DEFAULT_MODEL = "anthropic/claude-sonnet-4-5"


def home_dir() -> Path:
    """Where the embedded default keeps its files (`PERDURE_HOME`, else ./.perdure)."""
    return Path(os.environ.get("PERDURE_HOME", ".perdure")).resolve()


class SettingsError(ValueError):
    """A setting in the environment that cannot be used: bad input the user fixes, so the CLI
    and the worker say it in one line and exit 2."""


class Settings(BaseModel):
    database_url: str
    temporal_address: str
    """Where Temporal is; `worker.temporal_connect_config` adds the TOML profile, TLS and API key."""
    temporal_namespace: str
    task_queue: str
    openai_base_url: str | None
    scripted_base_url: str | None
    local_base_url: str | None = None
    """Where the bundled local model answers (`perdure dev` starts it and sets it)."""
    max_cached_runs: int = DEFAULT_MAX_CACHED_RUNS
    """How many runs a worker keeps in its workflow cache (`PERDURE_MAX_CACHED_RUNS`). A run
    waiting for a person stays there and holds memory; one evicted to make room is replayed from
    its history when it goes on, which costs CPU and adds to that answer's latency."""

    @classmethod
    def from_env(cls) -> Settings:
        default_db = f"sqlite:///{home_dir() / 'perdure.db'}"
        return cls(
            database_url=os.environ.get("PERDURE_DATABASE_URL", default_db),
            temporal_address=os.environ.get("TEMPORAL_ADDRESS", DEFAULT_TEMPORAL_ADDRESS),
            temporal_namespace=os.environ.get("TEMPORAL_NAMESPACE", DEFAULT_TEMPORAL_NAMESPACE),
            task_queue=os.environ.get("PERDURE_TASK_QUEUE", TASK_QUEUE),
            openai_base_url=os.environ.get("OPENAI_BASE_URL") or None,
            scripted_base_url=os.environ.get(SCRIPTED_MODEL_URL_ENV) or None,
            local_base_url=os.environ.get(LOCAL_MODEL_URL_ENV) or None,
        )

    @classmethod
    def worker_from_env(cls) -> Settings:
        """`from_env` with what only a worker reads (its cache size), so a bad value stops the
        workers and not the CLI, the HTTP API or a program's client."""
        return cls.from_env().model_copy(update={"max_cached_runs": max_cached_runs_from_env()})


def max_cached_runs_from_env() -> int:
    """`PERDURE_MAX_CACHED_RUNS`, else the default; `SettingsError` unless a whole number of at least 1."""
    value = os.environ.get(MAX_CACHED_RUNS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_CACHED_RUNS
    try:
        runs = int(value)
    except ValueError:
        runs = 0
    if runs < 1:
        raise SettingsError(f"{MAX_CACHED_RUNS_ENV} must be a whole number of runs, at least 1, not {value!r}")
    return runs


def other_endpoint_configured() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def default_model() -> str:
    """`PERDURE_DEFAULT_MODEL`, else OpenAI's small model when an endpoint is configured, else
    Claude when an Anthropic key is, else the bundled local model when it is installed, else
    the scripted demo model."""
    chosen = os.environ.get("PERDURE_DEFAULT_MODEL")
    if chosen:
        return chosen
    if other_endpoint_configured():
        return "openai/gpt-4o-mini"
    if os.environ.get("ANTHROPIC_API_KEY"):
        return ANTHROPIC_DEFAULT_MODEL
    if local_model_installed():
        return LOCAL_MODEL
    return DEFAULT_MODEL
