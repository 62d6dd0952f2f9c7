"""`perdure worker --processes N`: several worker processes on one task queue share the runs,
a process that dies is replaced, and a stop signal stops them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from perdure.settings import Settings
from perdure.store.db import Database
from starter.client import PerdureClient
from tests.conftest import AgentFactory, eventually
from tests.helpers import PERDURE, REPO

pytestmark = pytest.mark.both_stores
STARTED = re.compile(r"worker (\d+): process (\d+) started")
MAX_RUNS = 40


class Supervisor:
    """The `perdure worker --processes N` process and what it logged."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def started(self) -> dict[int, int]:
        """The latest process id of each worker slot."""
        return {int(slot): int(pid) for slot, pid in STARTED.findall(self.log.read_text(errors="replace"))}


@pytest.fixture
def supervisor(
    temporal_address: str, settings: Settings, llm: ScriptedLLMServer, tmp_path: Path, queue: str
) -> Iterator[Supervisor]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PERDURE_", "TEMPORAL_"))}
    env.update(
        TEMPORAL_ADDRESS=temporal_address,
        PERDURE_DATABASE_URL=settings.database_url,
        PERDURE_TASK_QUEUE=queue,
        PERDURE_SCRIPTED_BASE_URL=llm.base_url,
    )
    log = tmp_path / "workers.log"
    command = [str(PERDURE), "worker", "--processes", "2"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Supervisor(process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def queue() -> str:
    return f"perdure-pool-{uuid.uuid4().hex[:8]}"


async def served_by(client: PerdureClient, agent_id: str) -> set[int]:
    """The process ids of the workers that completed the run's workflow tasks (from history)."""
    history = await client.temporal.get_workflow_handle(agent_id).fetch_history()
    identities = {
        event.workflow_task_completed_event_attributes.identity
        for event in history.events
        if event.HasField("workflow_task_completed_event_attributes")
    }
    return {int(identity.split("@")[0]) for identity in identities}


async def run_once(
    client: PerdureClient, llm: ScriptedLLMServer, make_agent: AgentFactory, model_name: str
) -> set[int]:
    agent = make_agent(llm_config={"model": f"scripted/{model_name}"})
    llm.script(model_name, [ScriptedReply(content="served")])
    response = await client.send_message(agent.id, "hello")
    assert response.stop_reason.stop_reason == "end_turn"
    return await served_by(client, agent.id)


async def test_two_worker_processes_serve_runs_of_one_task_queue_and_stop_together(
    supervisor: Supervisor,
    temporal_env: WorkflowEnvironment,
    db: Database,
    queue: str,
    llm: ScriptedLLMServer,
    make_agent: AgentFactory,
    model_name: str,
) -> None:
    started = await eventually(lambda: len(supervisor.started()) == 2 and supervisor.started(), timeout=60)
    pids = set(started.values())
    client = PerdureClient(temporal_env.client, db, queue)

    seen: set[int] = set()
    for _ in range(MAX_RUNS):
        batch = await asyncio.gather(
            *(run_once(client, llm, make_agent, f"{model_name}-{uuid.uuid4().hex[:6]}") for _ in range(2))
        )
        seen |= set().union(*batch)
        if seen == pids:
            break
    assert seen == pids, f"runs were served by {seen}, the worker processes are {pids}"

    supervisor.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(supervisor.process.wait, 60) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "all worker processes stopped" in supervisor.log.read_text()


async def test_a_worker_process_that_dies_is_replaced(
    supervisor: Supervisor,
    temporal_env: WorkflowEnvironment,
    db: Database,
    queue: str,
    llm: ScriptedLLMServer,
    make_agent: AgentFactory,
    model_name: str,
) -> None:
    first = await eventually(lambda: len(supervisor.started()) == 2 and supervisor.started(), timeout=60)
    os.kill(first[1], signal.SIGKILL)

    replaced = await eventually(
        lambda: supervisor.started().get(1, first[1]) != first[1] and supervisor.started(), timeout=60
    )
    assert replaced[2] == first[2]
    assert f"worker 1: process {first[1]} exited with -9; restarting" in supervisor.log.read_text()
    client = PerdureClient(temporal_env.client, db, queue)
    assert await run_once(client, llm, make_agent, model_name) <= set(replaced.values())

    supervisor.process.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(supervisor.process.wait, 60) == 0


def test_fewer_than_one_process_is_refused() -> None:
    refused = subprocess.run([str(PERDURE), "worker", "--processes", "0"], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "perdure: error: --processes must be at least 1, not 0"
