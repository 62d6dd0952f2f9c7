"""The worker CPU of the LLM step outside the model: building the request (agent, context, tool
schemas, wire conversion) and a whole `llm_step` (that, the HTTP call and reading the answer),
for contexts of several sizes, printed as JSON.

Runs without Temporal: a SQLite file made by the migrations, an agent as `bench/speed.py` makes
it (a 1,000-character block), its conversation grown through the store with turns as a run
writes them (a user message, a `memory_insert` call, its return, an answer), and the scripted
model in a process of its own, so this process's CPU is the client's alone. `build_cpu_ms` is
the thread CPU of `LLMActivities._build_request`; `step_cpu_ms` the process CPU of one
`llm_step` in Temporal's `ActivityEnvironment` (its request over real HTTP). Means and medians
over `--repeats` calls, after `--warmup` calls left out.

    python bench/llm_request.py [--sizes 10 50 200] [--repeats 200] [--warmup 20]
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from temporalio.testing import ActivityEnvironment  # noqa: E402

from activities.llm import LLMActivities  # noqa: E402
from model_process import ModelProcess, model_process  # noqa: E402
from perdure.agents import create_agent  # noqa: E402
from perdure.schemas.agent import AgentCreate  # noqa: E402
from perdure.schemas.messages import Message, Role, TextContent, ToolCall, ToolReturn  # noqa: E402
from perdure.schemas.run import LLMStepInput, SendMessageRequest, StepRecord  # noqa: E402
from perdure.scripted.server import ScriptedReply, ScriptedToolCall  # noqa: E402
from perdure.settings import Settings  # noqa: E402
from perdure.store import runs  # noqa: E402
from perdure.store.db import Database, get_database, upgrade_database  # noqa: E402
from perdure.tools.returns import package_function_response  # noqa: E402

ANSWER = "Noted. " + "I will keep that in mind for the rest of our conversation. " * 3
"""An answer of a few sentences, as a chat model gives."""


def new_agent(db: Database, endpoint: str) -> tuple[str, str, str]:
    """An agent with a 1,000-character block (as `bench/speed.py` makes) on a model of its own,
    and a run of it; returns (agent id, run id, model name)."""
    model = f"bench-{uuid.uuid4().hex[:8]}"
    body = {
        "name": "bench",
        "memory_blocks": [{"label": "human", "value": "x" * 1000, "limit": 50000}],
        "llm_config": {"model": f"scripted/{model}", "endpoint": endpoint},
    }
    agent = create_agent(db, AgentCreate.model_validate(body))
    run_id = f"run-{uuid.uuid4()}"
    request = SendMessageRequest.model_validate({"messages": [{"role": "user", "content": "go"}]})
    with db.transaction() as session:
        runs.create_run(session, run_id=run_id, agent_id=agent.id, workflow_id=f"agent-{agent.id}", request=request)
    return agent.id, run_id, model


def turn(agent_id: str, run_id: str, step_id: str, number: int) -> list[Message]:
    """One turn as a run stores it: the user's message, a tool call, its return, an answer."""
    call = ToolCall(
        id=f"call_{uuid.uuid4().hex[:24]}",
        name="memory_insert",
        arguments=json.dumps({"label": "human", "new_string": f"The user mentioned fact number {number}."}),
    )
    result = package_function_response(True, "None", datetime.now(timezone.utc))

    def message(role: Role, **fields: Any) -> Message:
        return Message(
            id=f"message-{uuid.uuid4()}", agent_id=agent_id, role=role, run_id=run_id, step_id=step_id, **fields
        )

    return [
        message("user", content=[TextContent(text=f"Here is something about me, number {number}: I like long walks.")]),
        message("assistant", tool_calls=[call]),
        message("tool", tool_returns=[ToolReturn(tool_call_id=call.id, status="success", func_response=result)]),
        message("assistant", content=[TextContent(text=ANSWER)]),
    ]


def grow(db: Database, agent_id: str, run_id: str, size: int) -> None:
    """Checkpoint turns until the context holds `size` messages (the system message included)."""
    held = 1
    number = 0
    while held < size:
        number += 1
        step_id = f"step-{uuid.uuid4()}"
        messages = turn(agent_id, run_id, step_id, number)[: size - held]
        step = StepRecord(id=step_id, run_id=run_id, agent_id=agent_id, step_number=number, model="bench")
        with db.transaction() as session:
            runs.checkpoint_step(session, agent_id, messages, step)
        held += len(messages)


def step_input(agent_id: str, run_id: str, number: int) -> LLMStepInput:
    return LLMStepInput(agent_id=agent_id, run_id=run_id, step_id=f"step-{uuid.uuid4()}", step_number=number)


def build_cpu(llm: LLMActivities, agent_id: str, run_id: str, repeats: int, warmup: int) -> list[float]:
    seconds: list[float] = []
    for number in range(warmup + repeats):
        request = step_input(agent_id, run_id, number)
        started = time.thread_time()
        llm._build_request(request)
        seconds.append(time.thread_time() - started)
    return seconds[warmup:]


async def step_cpu(llm: LLMActivities, agent_id: str, run_id: str, repeats: int, warmup: int) -> list[float]:
    environment = ActivityEnvironment()
    seconds: list[float] = []
    for number in range(warmup + repeats):
        request = step_input(agent_id, run_id, number)
        started = time.process_time()
        await environment.run(llm.llm_step, request)
        seconds.append(time.process_time() - started)
    return seconds[warmup:]


def tool_step_replies(count: int) -> list[ScriptedReply]:
    arguments = {"label": "human", "new_string": "The user likes long walks."}
    return [ScriptedReply(tool_calls=[ScriptedToolCall(name="memory_insert", arguments=arguments)])] * count


def ms(values: list[float]) -> dict[str, float]:
    """The mean is the CPU a step costs on average, the garbage collector's pauses included;
    the median, a typical step without them."""
    return {
        "mean": round(statistics.mean(values) * 1000, 3),
        "median": round(statistics.median(values) * 1000, 3),
        "min": round(min(values) * 1000, 3),
        "max": round(max(values) * 1000, 3),
    }


async def measure(db: Database, model_server: ModelProcess, size: int, repeats: int, warmup: int) -> dict[str, object]:
    agent_id, run_id, model = new_agent(db, model_server.base_url)
    grow(db, agent_id, run_id, size)
    model_server.script(model, tool_step_replies(warmup + repeats))
    settings = Settings(
        database_url=db.url,
        temporal_address="",
        temporal_namespace="default",
        task_queue="bench",
        openai_base_url=None,
        scripted_base_url=None,
    )
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http:
        llm = LLMActivities(db, settings, http)
        build = build_cpu(llm, agent_id, run_id, repeats, warmup)
        step = await step_cpu(llm, agent_id, run_id, repeats, warmup)
    return {"messages": size, "build_cpu_ms": ms(build), "step_cpu_ms": ms(step)}


async def main(sizes: list[int], repeats: int, warmup: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp, model_process() as model_server:
        url = f"sqlite:///{tmp}/llm_request.db"
        upgrade_database(url)
        db = get_database(url)
        results = [await measure(db, model_server, size, repeats, warmup) for size in sizes]
    return {"benchmark": "llm_request", "repeats": repeats, "contexts": results}


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.sizes, options.repeats, options.warmup)), indent=1))
