"""A worker's workflow cache: `PERDURE_MAX_CACHED_RUNS` bounds how many runs a worker keeps in
memory, and a paused run evicted to make room goes on from its history when its answer comes."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from temporalio.testing import WorkflowEnvironment

from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.letta import StopReasonType
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.settings import DEFAULT_MAX_CACHED_RUNS, MAX_CACHED_RUNS_ENV, Settings
from perdure.store.db import Database
from starter.client import PerdureClient
from tests.conftest import AgentFactory
from tests.helpers import PERDURE, REPO, block_value, text
from tests.ports import free_port
from worker import perdure_worker

APPROVAL_RULE = {"type": "requires_approval", "tool_name": "core_memory_append"}
CALL_ID = "call-append"


async def test_paused_runs_evicted_from_a_full_cache_go_on_when_approved(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    db: Database,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
) -> None:
    """Four runs pause on a worker that keeps two: answered oldest first, the first two were
    evicted and are replayed from their history, the others were still kept."""
    queue = f"cache-{uuid.uuid4().hex[:8]}"
    small = settings.model_copy(update={"task_queue": queue, "max_cached_runs": 2})
    client = PerdureClient(temporal_env.client, db, queue)
    append = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "Ada"}, id=CALL_ID)
    async with perdure_worker(temporal_env.client, small) as worker, worker:
        assert worker.config().get("max_cached_workflows") == 2
        paused: list[str] = []
        for _ in range(4):
            agent = make_agent(
                memory_blocks=[{"label": "human", "value": ""}],
                tools=["core_memory_append"],
                tool_rules=[APPROVAL_RULE],
            )
            llm.script(model_name, [ScriptedReply(tool_calls=[append])])
            response = await client.send_message(agent.id, "remember Ada")
            assert response.stop_reason.stop_reason == StopReasonType.requires_approval
            paused.append(agent.id)
        for agent_id in paused:
            llm.script(model_name, [text("saved")])
            finished = await client.answer(agent_id, [ApprovalAnswer(tool_call_id=CALL_ID, approve=True)])
            assert finished.stop_reason.stop_reason == StopReasonType.end_turn
            assert finished.usage.step_count == 2
            assert block_value(db, agent_id) == "Ada"


def test_a_worker_takes_its_cache_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_CACHED_RUNS_ENV, "50")
    assert Settings.worker_from_env().max_cached_runs == 50
    monkeypatch.delenv(MAX_CACHED_RUNS_ENV)
    assert Settings.worker_from_env().max_cached_runs == DEFAULT_MAX_CACHED_RUNS


WORKER_COMMANDS = {
    "worker": [str(PERDURE), "worker"],
    "worker-processes": [str(PERDURE), "worker", "--processes", "2"],
    "dev": [str(PERDURE), "dev"],
    "worker.py": [sys.executable, "worker.py"],
}


@pytest.mark.parametrize("value", ["0", "-3", "lots", "1.5"])
@pytest.mark.parametrize("command", WORKER_COMMANDS.values(), ids=WORKER_COMMANDS.keys())
def test_a_cache_size_that_is_not_a_whole_number_of_runs_is_one_line(
    command: list[str], value: str, cli_env: dict[str, str]
) -> None:
    """Refused before anything starts: `perdure dev` gets ports of its own in case it did not."""
    env = {**cli_env, MAX_CACHED_RUNS_ENV: value}
    if command[1:] == ["dev"]:
        command = [*command, "--port", str(free_port()), "--ui-port", str(free_port()), "--api-port", str(free_port())]
    refused = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    prefix = "perdure" if command[0] == str(PERDURE) else "worker"
    assert refused.stderr.strip().splitlines() == [
        f"{prefix}: error: {MAX_CACHED_RUNS_ENV} must be a whole number of runs, at least 1, not {value!r}"
    ]


def test_only_workers_read_the_cache_size(cli_env: dict[str, str]) -> None:
    """A bad value stops the workers, not the CLI's other commands (nor the HTTP API or a
    program's `PerdureClient`, which read the same settings)."""
    env = {**cli_env, MAX_CACHED_RUNS_ENV: "lots"}
    listed = subprocess.run(
        [str(PERDURE), "agent", "list", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
