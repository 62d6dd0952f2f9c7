"""Perdure's speed against the Temporal floor, measured in one run and printed as JSON.

Everything runs here on one machine: a dev server, a SQLite file made by the migrations, the
model stand-in in a process of its own (answering at once), one `perdure worker` process and
two workers of the no-op floor (`bench/floor.py`: the same activity shape, activities that do
nothing), one on Perdure's workflow runner and one in the SDK's default sandbox. Worker CPU is
the worker process's user+system time (what `os.times()` says in it), read from /proc before
and after. Figures:

- per step: a turn of `--tool-calls` tool steps and an answer, Perdure and floor, and ratios
  (to the floor on Perdure's runner, and under `sdk_default_floor` to the sandboxed floor);
- a one-step turn (a message, an immediate answer), Perdure and floor (each Perdure turn on an
  agent of its own, made and its model's replies scripted before the turn's clock starts, so a
  turn's time is the send alone, as the floor's is);
- the approval round trip (answer sent to finished run);
- token streaming: the first token after `send` and each token after the model sent it (the
  model writes `--stream-tokens` tokens `--token-ms` apart; it runs in this process here, so
  its send times are known);
- throughput: steps per second with 1, 8 and 32 agents conversing at once.

    python bench/speed.py [--runs 5] [--tool-calls 10] [--turns 20] [--rounds 20] [--streams 5]
        [--agents 1 8 32] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from temporalio.client import Client, WithStartWorkflowOperation  # noqa: E402
from temporalio.common import WorkflowIDConflictPolicy  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from floor import FLOOR_WORKFLOW, SEND, FloorTurn  # noqa: E402
from harness import dev_server, started_process  # noqa: E402
from model_process import ModelProcess, model_process  # noqa: E402
from streaming_latency import stream_latency  # noqa: E402
from throughput import cpu_seconds, measure, worker_process_env, workers  # noqa: E402

from perdure.agents import create_agent  # noqa: E402
from perdure.schemas.agent import AgentCreate  # noqa: E402
from perdure.schemas.approvals import ApprovalAnswer  # noqa: E402
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall  # noqa: E402
from perdure.store.db import get_database, upgrade_database  # noqa: E402
from starter.client import PerdureClient  # noqa: E402


class Sample:
    """Wall-clock times of repeated turns and the worker CPU they took."""

    def __init__(self, seconds: list[float], cpu: float, steps: int) -> None:
        self.seconds, self.cpu, self.steps = seconds, cpu, steps

    def ms_per_step(self, steps_per_turn: int) -> float:
        return statistics.median(self.seconds) * 1000 / steps_per_turn

    def cpu_ms_per_step(self) -> float:
        return self.cpu * 1000 / self.steps


Turn = Callable[[], Awaitable[int]]
"""A turn ready to send; it returns the steps it took."""


async def turn_for_turn(pids: Mapping[str, int], turns: Mapping[str, Turn], rounds: int) -> dict[str, Sample]:
    """The worker CPU each of several workers (by name: its process, its turn) takes for the
    same turns, taken one worker after another: one each to warm up, then `rounds` rounds, the
    order rotated every round, so that the machine's drifting speed falls on all of them alike."""
    names = list(turns)
    for name in names:
        await turns[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    steps = dict.fromkeys(names, 0)
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            before, started = cpu_seconds(pids[name]), time.perf_counter()
            steps[name] += await turns[name]()
            seconds[name].append(time.perf_counter() - started)
            cpu[name] += cpu_seconds(pids[name]) - before
    return {name: Sample(seconds[name], cpu[name], steps[name]) for name in names}


async def timed(pid: int, turns: int, ready: Callable[[], Turn]) -> Sample:
    """`turns` turns one after another (after one to warm up), each made `ready` off the clock."""
    await ready()()
    seconds, steps, before = [], 0, cpu_seconds(pid)
    for _ in range(turns):
        turn = ready()
        started = time.perf_counter()
        steps += await turn()
        seconds.append(time.perf_counter() - started)
    return Sample(seconds, cpu_seconds(pid) - before, steps)


def tool_steps(count: int, answer: str = "done") -> list[ScriptedReply]:
    calls = [
        ScriptedReply(
            tool_calls=[ScriptedToolCall(name="memory_insert", arguments={"label": "human", "new_string": f"fact {i}"})]
        )
        for i in range(count)
    ]
    return [*calls, ScriptedReply(content=answer)]


def new_agent(client: PerdureClient, endpoint: str, **fields: Any) -> tuple[str, str]:
    """A fresh agent on a model of its own; returns (agent id, model name)."""
    model = f"bench-{uuid.uuid4().hex[:8]}"
    config = {"model": f"scripted/{model}", "endpoint": endpoint}
    body = {"name": "bench", "memory_blocks": [{"label": "human", "value": "x" * 1000, "limit": 5000}], **fields}
    agent = create_agent(client.db, AgentCreate.model_validate({**body, "llm_config": config}))
    return agent.id, model


class ScriptedModel(Protocol):
    """The model stand-in, in this process (`ScriptedLLMServer`) or its own (`ModelProcess`)."""

    @property
    def base_url(self) -> str: ...

    def script(self, model: str, replies: list[ScriptedReply]) -> None: ...


PAUSED_CALL_ID = "call-paused"


async def pause_for_approval(client: PerdureClient, model_server: ScriptedModel) -> str:
    """A new agent whose memory edit needs approval, sent a message: its run stays paused,
    cached in the worker, its call `PAUSED_CALL_ID`; approved, the model answers. Returns the
    agent's id."""
    agent_id, model = new_agent(
        client,
        model_server.base_url,
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
    )
    call = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "x"}, id=PAUSED_CALL_ID)
    model_server.script(model, [ScriptedReply(tool_calls=[call]), ScriptedReply(content="saved")])
    response = await client.send_message(agent_id, "remember x")
    assert response.stop_reason.stop_reason.value == "requires_approval"
    return agent_id


def perdure_turn_ready(client: PerdureClient, model_server: ModelProcess, count: int) -> Turn:
    """A new agent, its model scripted for `count` tool steps and an answer; the turn sends it a message."""
    agent_id, model = new_agent(client, model_server.base_url)
    model_server.script(model, tool_steps(count))

    async def send() -> int:
        response = await client.send_message(agent_id, "go")
        return response.usage.step_count

    return send


async def perdure_turn(client: PerdureClient, model_server: ModelProcess, count: int) -> int:
    """A turn with its set-up, for the benchmarks that measure the worker's CPU, not the time."""
    return await perdure_turn_ready(client, model_server, count)()


async def floor_turn(floor: Client, queue: str, count: int) -> int:
    operation = WithStartWorkflowOperation(
        FLOOR_WORKFLOW, id=f"floor-{uuid.uuid4()}", task_queue=queue, id_conflict_policy=WorkflowIDConflictPolicy.FAIL
    )
    return await floor.execute_update_with_start_workflow(
        SEND, FloorTurn(tool_steps=count), start_workflow_operation=operation, result_type=int
    )


async def approval_rounds(client: PerdureClient, model_server: ModelProcess, pid: int, rounds: int) -> Sample:
    agent_id, model = new_agent(
        client,
        model_server.base_url,
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
    )
    seconds, cpu = [], 0.0
    for index in range(rounds + 1):
        call = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "x"}, id=f"c{index}")
        model_server.script(model, [ScriptedReply(tool_calls=[call]), ScriptedReply(content="saved")])
        paused = await client.send_message(agent_id, f"remember {index}")
        assert paused.stop_reason.stop_reason.value == "requires_approval"
        before, started = cpu_seconds(pid), time.perf_counter()
        finished = await client.answer(agent_id, [ApprovalAnswer(tool_call_id=f"c{index}", approve=True)])
        if index:  # the first round warms the worker's caches
            seconds.append(time.perf_counter() - started)
            cpu += cpu_seconds(pid) - before
        assert finished.stop_reason.stop_reason.value == "end_turn"
    return Sample(seconds, cpu, rounds)


def floor_worker(address: str, queue: str, log: Path, runner: str = "perdure") -> AbstractContextManager[int]:
    command = [sys.executable, str(Path(__file__).parent / "floor.py"), address, queue, runner]
    return started_process(command, "floor worker started", log)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


async def main(options: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "speed", "tool_calls_per_turn": options.tool_calls}
    with (
        tempfile.TemporaryDirectory() as tmp,
        model_process() as model_server,
        ScriptedLLMServer() as local_model,
    ):
        db_url = f"sqlite:///{tmp}/speed.db"
        upgrade_database(db_url)
        async with dev_server() as env:
            address = env.client.service_client.config.target_host
            queue = f"speed-{uuid.uuid4().hex[:8]}"
            worker_env = worker_process_env(address, db_url, queue, model_server.base_url)
            floor = Client(env.client.service_client, namespace="default", data_converter=pydantic_data_converter)
            client = PerdureClient(env.client, get_database(db_url), queue)
            steps = options.tool_calls + 1
            with (
                floor_worker(address, f"floor-{queue}", Path(tmp) / "floor.log") as floor_pid,
                floor_worker(address, f"sdk-floor-{queue}", Path(tmp) / "sdk-floor.log", "sdk-default") as sdk_pid,
                workers(1, worker_env, Path(tmp) / "worker.log") as [perdure_pid],
            ):
                floor_loop = await timed(
                    floor_pid, options.runs, lambda: partial(floor_turn, floor, f"floor-{queue}", steps - 1)
                )
                sdk_floor_loop = await timed(
                    sdk_pid, options.runs, lambda: partial(floor_turn, floor, f"sdk-floor-{queue}", steps - 1)
                )
                loop = await timed(
                    perdure_pid, options.runs, lambda: perdure_turn_ready(client, model_server, steps - 1)
                )
                floor_one = await timed(
                    floor_pid, options.turns, lambda: partial(floor_turn, floor, f"floor-{queue}", 0)
                )
                one = await timed(perdure_pid, options.turns, lambda: perdure_turn_ready(client, model_server, 0))
                approval = await approval_rounds(client, model_server, perdure_pid, options.rounds)
                streams = await stream_latency(
                    client, local_model, options.streams, options.stream_tokens, options.token_ms / 1000
                )
            report["per_step"] = {
                "floor_ms": round(floor_loop.ms_per_step(steps), 2),
                "perdure_ms": round(loop.ms_per_step(steps), 2),
                "ratio": round(loop.ms_per_step(steps) / floor_loop.ms_per_step(steps), 2),
                "floor_worker_cpu_ms": round(floor_loop.cpu_ms_per_step(), 2),
                "perdure_worker_cpu_ms": round(loop.cpu_ms_per_step(), 2),
                "cpu_ratio": round(loop.cpu_ms_per_step() / floor_loop.cpu_ms_per_step(), 2),
                "sdk_default_floor": {
                    "floor_ms": round(sdk_floor_loop.ms_per_step(steps), 2),
                    "ratio": round(loop.ms_per_step(steps) / sdk_floor_loop.ms_per_step(steps), 2),
                    "floor_worker_cpu_ms": round(sdk_floor_loop.cpu_ms_per_step(), 2),
                    "cpu_ratio": round(loop.cpu_ms_per_step() / sdk_floor_loop.cpu_ms_per_step(), 2),
                },
            }
            report["one_step_turn"] = {
                "floor_ms": round(floor_one.ms_per_step(1), 2),
                "perdure_ms": round(one.ms_per_step(1), 2),
                "ratio": round(one.ms_per_step(1) / floor_one.ms_per_step(1), 2),
                "floor_worker_cpu_ms": round(floor_one.cpu_ms_per_step(), 2),
                "perdure_worker_cpu_ms": round(one.cpu_ms_per_step(), 2),
            }
            report["approval_answer_to_finished_run_ms"] = summary([s * 1000 for s in approval.seconds])
            report["approval_worker_cpu_ms"] = round(approval.cpu * 1000 / options.rounds, 2)
            report["streaming"] = streams
            throughput = [
                await measure(
                    env, db_url, model_server.base_url, agents, 1, options.seconds, Path(tmp) / f"t{agents}.log"
                )
                for agents in options.agents
            ]
            report["throughput"] = [
                {
                    "agents": t.agents,
                    "steps_per_second": t.steps_per_second,
                    "worker_cpu_ms_per_step": t.worker_cpu_ms_per_step,
                }
                for t in throughput
            ]
    return report


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tool-calls", type=int, default=10)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--stream-tokens", type=int, default=40)
    parser.add_argument("--token-ms", type=float, default=25.0)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=15.0)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
