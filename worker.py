"""The Perdure worker: serves the run workflow and its activities in one process.

Workflows and activities share the process so activities start eagerly, and the sticky cache
stays on, which keeps a step's orchestration to a few tens of milliseconds.
Run it with `python worker.py` or `perdure worker`; it stops cleanly on SIGINT and SIGTERM.

`PerdurePlugin` is the one place that says how Perdure talks to Temporal (pydantic payloads,
the workflow sandbox, the workflow, the activities): the worker, the clients, the replay tests
and the benchmarks all connect through it, so they cannot drift apart.

Where and how to reach Temporal is resolved here too, the same way for the worker, the CLI and
the client, by the SDK's environment configuration: the profile named by `TEMPORAL_PROFILE`
(else "default") in the TOML file `TEMPORAL_CONFIG_FILE` (else
~/.config/temporalio/temporal.toml), with `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
`TEMPORAL_API_KEY`, `TEMPORAL_TLS*` and `TEMPORAL_GRPC_META_*` over it. An API key turns TLS
on. So a worker reaches a local dev server, a self-hosted cluster with mutual TLS or Temporal
Cloud with nothing but its environment, and the API key and client key never leave it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.plugin import SimplePlugin
from temporalio.worker import Worker

import observability
from activities.compaction import CompactionActivities
from activities.custom_tools import CustomToolActivities
from activities.llm import LLMActivities
from activities.mcp_tools import McpActivities
from activities.runs import RunActivities
from activities.run_stream import StreamActivities
from activities.tools import ToolActivities
from perdure.mcp.sessions import McpSessions
from perdure.names import SEARCH_ATTRIBUTES
from perdure.sandbox.service import ToolSandbox
from perdure.settings import DEFAULT_TEMPORAL_ADDRESS, DEFAULT_TEMPORAL_NAMESPACE, Settings, SettingsError, home_dir
from perdure.store.db import Database, get_database
from perdure.store.schema import SchemaOutOfDateError
from perdure.tools.catalog import requirement_sets
from perdure.tools.registry import ensure_builtin_tools
from workflows.run_workflow import AgentRunWorkflow
from workflows.runner import workflow_runner

log = logging.getLogger("perdure.worker")
HEARTBEAT_THROTTLE = timedelta(seconds=1)
"""A cancel reaches an activity only with a heartbeat's answer, and heartbeats are throttled to
80% of the heartbeat timeout (12 s for the LLM call) by default."""
ACTIVITY_THREADS = 16
"""Local activities (database work, built-in tools) are synchronous and run in this pool."""


class PerdurePlugin(SimplePlugin):
    """Pydantic payloads, the workflow runner, the run workflow and, on a worker, its activities.

    A client connects with `PerdurePlugin()`; a worker gets a client of its own on the same
    connection whose plugin carries the activities (see `perdure_worker`).
    """

    def __init__(self, activities: Sequence[Callable[..., Any]] = ()) -> None:
        super().__init__(
            "perdure.PerdurePlugin",
            data_converter=pydantic_data_converter,
            workflow_runner=workflow_runner(),
            workflows=[AgentRunWorkflow],
            activities=list(activities),
        )


async def connect(settings: Settings) -> Client:
    """A client of the Temporal server in `settings` (and the SDK's environment configuration:
    profile, TLS, API key), speaking Perdure's payloads."""
    return await Client.connect(
        **temporal_connect_config(settings), plugins=[PerdurePlugin(), *observability.tracing_plugins()]
    )


CONFIG_FILE_ENV = "TEMPORAL_CONFIG_FILE"


class TemporalConfigError(ValueError):
    """Connection settings that cannot be used (a bad profile file, a missing certificate): bad
    input the user fixes, so the CLI says it in one line and exits 2."""


def temporal_connect_config(settings: Settings, environ: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """`Client.connect` keyword arguments from the profile and the environment (`environ`, else
    this process's). An address or namespace that code set on `settings` (the embedded dev
    server, a test's own server) wins; left at their defaults, the profile's apply."""
    named = (os.environ if environ is None else environ).get(CONFIG_FILE_ENV)
    if named and not Path(named).is_file():
        raise TemporalConfigError(f"{CONFIG_FILE_ENV} names {named}, which is not a file")
    try:
        profile = ClientConfigProfile.load(override_env_vars=environ)
        config = profile.to_client_connect_config()
    except (RuntimeError, OSError) as err:  # the SDK's ConfigError is a RuntimeError
        reason = str(err).strip().splitlines()[0]
        raise TemporalConfigError(f"cannot use the Temporal connection settings: {reason}") from err
    config["target_host"] = _chosen(settings.temporal_address, DEFAULT_TEMPORAL_ADDRESS, profile.address)
    config["namespace"] = _chosen(settings.temporal_namespace, DEFAULT_TEMPORAL_NAMESPACE, profile.namespace)
    return config


def _chosen(setting: str, default: str, from_profile: str | None) -> str:
    return setting if setting not in ("", default) else from_profile or default


def perdure_activities(
    db: Database,
    settings: Settings,
    http: httpx.AsyncClient,
    mcp_sessions: McpSessions | None = None,
    sandbox: ToolSandbox | None = None,
) -> list[Callable[..., Any]]:
    """Every activity of the run workflow, bound to this worker's database, HTTP client, MCP sessions
    and tool sandbox."""
    runs, tools, llm = RunActivities(db), ToolActivities(db), LLMActivities(db, settings, http)
    compaction = CompactionActivities(db, llm)
    stream = StreamActivities(db)
    mcp = McpActivities(db, mcp_sessions or McpSessions())
    custom = [CustomToolActivities(db, sandbox).execute_custom_tool] if sandbox is not None else []
    return [
        runs.begin_run,
        runs.checkpoint_step,
        runs.finish_run,
        tools.execute_tool,
        llm.llm_step,
        compaction.compact,
        stream.append_stream,
        mcp.list_mcp_tools,
        mcp.call_mcp_tool,
        *custom,
    ]


@asynccontextmanager
async def perdure_worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    """A worker for `settings.task_queue` on `client`'s connection, with its HTTP client and thread pool."""
    async with AsyncExitStack() as stack:
        db = get_database(settings.database_url)
        with db.transaction() as session:
            ensure_builtin_tools(session)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0)))
        executor = stack.enter_context(ThreadPoolExecutor(max_workers=ACTIVITY_THREADS))
        sandbox = ToolSandbox.for_worker(home_dir(), settings.database_url)
        stack.callback(sandbox.close)
        log.info(sandbox.config.describe())
        sandbox.warm()
        threading.Thread(target=sandbox.install, args=(requirement_sets(db),), daemon=True, name="venvs").start()
        # A client of its own on the same connection, so the caller's client (which may carry a
        # PerdurePlugin without activities) does not register the workflow a second time.
        mcp_sessions = McpSessions()  # stdio MCP servers stop with the worker
        stack.push_async_callback(mcp_sessions.aclose)
        plugin = PerdurePlugin(perdure_activities(db, settings, http, mcp_sessions, sandbox))
        worker_client = Client(
            client.service_client, namespace=client.namespace, plugins=[plugin, *observability.tracing_plugins()]
        )
        yield Worker(
            worker_client,
            task_queue=settings.task_queue,
            activity_executor=executor,
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            max_cached_workflows=settings.max_cached_runs,
        )


async def ensure_search_attributes(client: Client) -> None:
    """Register Perdure's search attributes if the server lacks them (idempotent).

    A workflow that upserts an unregistered attribute fails its task, so the worker checks at
    start rather than letting the first run find out.
    """
    namespace = client.namespace
    existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = {name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTES if name not in known}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )


async def run_worker(
    settings: Settings | None = None, stop: asyncio.Event | None = None, client: Client | None = None
) -> None:
    """Run until `stop` is set, or until SIGINT/SIGTERM when no event is given."""
    settings = settings or Settings.worker_from_env()
    if client is None:
        client = await connect(settings)
    await ensure_search_attributes(client)
    stop = stop or _signal_event()
    async with perdure_worker(client, settings) as worker:
        log.info("worker serving task queue %r on %s", settings.task_queue, settings.temporal_address)
        async with worker:
            await stop.wait()
    log.info("worker stopped")


def _signal_event() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event


def serve(metrics_port: int | None = None) -> None:
    """Run one worker in this process until SIGINT/SIGTERM, logging to stderr; with a metrics
    port, serve Prometheus metrics on it (all interfaces: the scraper is usually elsewhere)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if metrics_port is not None:
        observability.install_metrics_runtime(observability.ALL_INTERFACES, metrics_port)
        log.info("Prometheus metrics on port %d (/metrics)", metrics_port)
    try:
        asyncio.run(run_worker())
    finally:
        observability.shutdown_traces()


def main() -> None:
    """`python worker.py`: settings the user must fix (an out-of-date database, unusable Temporal
    connection settings or Perdure settings, a metrics port that cannot be served) are one line
    and exit 2, as with `perdure worker`. `PERDURE_METRICS_PORT` asks for the Prometheus endpoint."""
    try:
        serve(observability.metrics_port_from_env())
    except (SchemaOutOfDateError, SettingsError, TemporalConfigError, observability.MetricsEndpointError) as err:
        print(f"worker: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
