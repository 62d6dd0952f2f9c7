"""The worker's wiring: one plugin for every client and worker, and models a worker cannot reach.

A production worker starts no stand-in model: an agent on `scripted/*` or `local/*` whose
server this worker lacks ends its run with one clear error, never a request sent elsewhere.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from activities.llm import LLMActivities
from perdure.schemas.agent import LOCAL_MODEL, LLMConfig
from perdure.schemas.letta import StopReasonType
from perdure.settings import Settings
from perdure.store.db import Database
from starter.client import PerdureClient
from tests.conftest import AgentFactory
from tests.helpers import REPO
from worker import PerdurePlugin, perdure_activities


async def test_the_plugin_carries_payloads_sandbox_workflow_and_the_workers_activities(
    db: Database, settings: Settings
) -> None:
    async with httpx.AsyncClient() as http:
        activities = perdure_activities(db, settings, http)
        plugin = PerdurePlugin(activities)
        assert plugin.data_converter is pydantic_data_converter
        workflows = plugin.workflows
        assert isinstance(workflows, list), "the plugin appends its workflows; it does not take a callable"
        assert [w.__name__ for w in workflows] == ["AgentRunWorkflow"]
        assert plugin.activities == activities
        assert [a.__name__ for a in activities] == [
            "begin_run",
            "checkpoint_step",
            "finish_run",
            "execute_tool",
            "llm_step",
            "compact",
            "append_stream",
            "list_mcp_tools",
            "call_mcp_tool",
        ]
    assert PerdurePlugin().activities == []


async def test_a_worker_without_the_scripted_model_refuses_its_agents_clearly(db: Database, settings: Settings) -> None:
    without = settings.model_copy(update={"scripted_base_url": None})
    async with httpx.AsyncClient() as http:
        llm = LLMActivities(db, without, http)
        with pytest.raises(ApplicationError, match="is the scripted stand-in, and this worker serves none") as refused:
            llm.base_url(LLMConfig(model="scripted/demo"))
    assert refused.value.non_retryable


async def test_a_run_on_the_local_model_without_its_server_ends_with_the_reason(
    client: PerdureClient, make_agent: AgentFactory, settings: Settings
) -> None:
    assert settings.local_base_url is None
    agent = make_agent(llm_config={"model": LOCAL_MODEL, "endpoint": None})
    response = await client.send_message(agent.id, "hi")
    assert response.stop_reason.stop_reason is StopReasonType.llm_api_error
    state = await client.state(agent.id)
    assert state is not None and state.error is not None
    assert "is the bundled local model, and this worker has none" in state.error


LOADED_WHEN_USED = {"mcp", "mcp_types", "alembic", "mako", "fastapi", "starlette", "uvicorn"}
"""What a worker process does not import until it is used: about 40 MiB together."""


def test_a_worker_loads_neither_the_mcp_sdk_nor_alembic_nor_the_api_until_it_needs_them(settings: Settings) -> None:
    """The MCP SDK waits for a run's first MCP call, Alembic for a migration or a database at
    another revision, FastAPI and uvicorn for `perdure serve` or `perdure dev`. `perdure worker`
    starts through the CLI's module, which names every command."""
    started = (
        "import sys, starter.cli\n"
        "from perdure.store.db import get_database\n"
        f"get_database({settings.database_url!r})\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({sorted(LOADED_WHEN_USED)!r})))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", started], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
