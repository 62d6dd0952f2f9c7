"""Shared fixtures: one real Temporal dev server, one SQLite file, one worker, one scripted LLM.

Each test gets its own agent and its own scripted model name, so tests never see each
other's replies even though they share the server.

Tests run on SQLite; a module marked `both_stores` runs on PostgreSQL as well, with its own
database and worker (the `backend` parameter), and one marked `only_postgresql` there alone.
PostgreSQL is `PERDURE_TEST_POSTGRES_URL` if set, else a throwaway cluster started from the
installed binaries; without either, those tests are skipped, unless `CI=true`, where a missing
PostgreSQL fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from letta_client import AsyncLetta
from temporalio.testing import WorkflowEnvironment

from perdure.agents import create_agent
from perdure.schemas.agent import AgentCreate, AgentState
from perdure.scripted.server import ScriptedLLMServer
from perdure.settings import Settings
from perdure.store.db import Database, get_database, upgrade_database
from starter.api.app import DEFAULT_PING_INTERVAL
from starter.api.serve import api_server, bind, url
from starter.client import PerdureClient
from starter.local_model import LocalModelServer
from tests.postgres_server import TEST_SERVER_URL_ENV, PostgresServer, create_database, find_postgres_binaries
from tests.temporal_server import local_temporal
from tests.mcp_fixtures import HttpServer, http_server
from worker import perdure_worker

BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the store runs on SQLite; a `both_stores` module, on PostgreSQL too;
    an `only_postgresql` one, on PostgreSQL alone (what SQLite does not have)."""
    if "backend" in metafunc.fixturenames:
        if metafunc.definition.get_closest_marker("only_postgresql") is not None:
            backends = BACKENDS[1:]
        elif metafunc.definition.get_closest_marker("both_stores") is not None:
            backends = BACKENDS
        else:
            backends = BACKENDS[:1]
        metafunc.parametrize("backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    given = os.environ.get(TEST_SERVER_URL_ENV)
    if given:
        yield given
        return
    binaries = find_postgres_binaries()
    if binaries is None:
        missing = f"PostgreSQL is not installed (apt-get install postgresql) and {TEST_SERVER_URL_ENV} is not set"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI needs PostgreSQL: {missing}")
        pytest.skip(missing)
    with PostgresServer(binaries) as server:
        yield server.url


@pytest.fixture(scope="session")
def database_url(backend: str, state_dir: Path, request: pytest.FixtureRequest) -> str:
    """A database made by the migrations (not by the tables' metadata), so they are what is tested."""
    if backend == "sqlite":
        url = f"sqlite:///{state_dir / 'perdure.db'}"
    else:
        url = create_database(request.getfixturevalue("postgres_server_url"))
    upgrade_database(url)
    return url


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("perdure")


@pytest.fixture(scope="session")
def settings(database_url: str, llm: ScriptedLLMServer) -> Settings:
    return Settings(
        database_url=database_url,
        temporal_address="",
        temporal_namespace="default",
        task_queue=f"perdure-test-{uuid.uuid4().hex[:8]}",
        openai_base_url=None,
        scripted_base_url=llm.base_url,
    )


@pytest.fixture(scope="session")
def llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as server:
        yield server


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModelServer]:
    """The bundled model under llama.cpp, loaded once for every test that needs it."""
    with LocalModelServer() as server:
        yield server


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    async with local_temporal() as env:
        yield env


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture(scope="session")
def db(settings: Settings) -> Database:
    return get_database(settings.database_url)


@pytest.fixture(scope="session")
async def worker(temporal_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[None]:
    async with perdure_worker(temporal_env.client, settings) as running:
        async with running:
            yield


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment, db: Database, settings: Settings, worker: None) -> PerdureClient:
    return PerdureClient(temporal_env.client, db, settings.task_queue)


@pytest.fixture
def model_name() -> str:
    """A scripted model name of this test's own."""
    return f"m-{uuid.uuid4().hex[:10]}"


AgentFactory = Callable[..., AgentState]


@pytest.fixture
def make_agent(db: Database, llm: ScriptedLLMServer, model_name: str) -> AgentFactory:
    def make(**fields: Any) -> AgentState:
        llm_config = {"model": f"scripted/{model_name}", "endpoint": llm.base_url, **fields.pop("llm_config", {})}
        return create_agent(db, AgentCreate.model_validate({"name": "test", "llm_config": llm_config, **fields}))

    return make


@pytest.fixture
def cli_env(temporal_address: str, settings: Settings, state_dir: Path) -> dict[str, str]:
    """Environment for `perdure` subprocesses that talk to the test server and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PERDURE_"))}
    env.update(
        TEMPORAL_ADDRESS=temporal_address,
        PERDURE_DATABASE_URL=settings.database_url,
        PERDURE_TASK_QUEUE=settings.task_queue,
        PERDURE_HOME=str(state_dir),
    )
    return env


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until `check()` returns something truthy; for states reached asynchronously."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


API_KEY = "perdure-test-key"


@pytest.fixture(scope="session")
async def api_url(client: PerdureClient) -> AsyncIterator[str]:
    """The HTTP API as `perdure serve` runs it (uvicorn, the API key set), on a free loopback
    port in this event loop, sharing the session's Temporal server, worker and database."""
    async with serving_api(client) as url:
        yield url


@contextlib.asynccontextmanager
async def serving_api(client: PerdureClient, ping_interval: float = DEFAULT_PING_INTERVAL) -> AsyncIterator[str]:
    listening = bind("127.0.0.1", 0)
    port = listening.getsockname()[1]
    server = api_server(client, "127.0.0.1", port, API_KEY, embedded=True, ping_interval=ping_interval)
    task = asyncio.create_task(server.serve(sockets=[listening]))
    await eventually(lambda: server.started or task.done())
    try:
        yield url("127.0.0.1", port)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def letta(api_url: str) -> AsyncIterator[AsyncLetta]:
    """The official letta-client, pointed at Perdure."""
    async with AsyncLetta(base_url=api_url, api_key=API_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def shared_http() -> Iterator[HttpServer]:
    """One streamable-HTTP MCP test server for a module's tests."""
    with http_server() as server:
        yield server
