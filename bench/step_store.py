"""The CPU of a step's database work, without Temporal: the tool activity (a `memory_insert`)
and the checkpoint's transaction (messages, in-context list, step row, stream events), each as
the thread CPU time it takes, printed as JSON.

The worker's CPU per step (`bench/speed.py`) moves with the machine's load; this measures the
part that is Perdure's own database code alone, on a SQLite file, so a change to it can be
compared before and after. Agents are renewed every `--steps-per-agent` steps so the context
grows as in a conversation; the first fifth of the steps warms up and is left out.

    python bench/step_store.py [--steps 300] [--steps-per-agent 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from activities.tools import ToolActivities  # noqa: E402
from perdure.agents import create_agent  # noqa: E402
from perdure.schemas.agent import AgentCreate  # noqa: E402
from perdure.schemas.messages import Message, ToolCall  # noqa: E402
from perdure.schemas.run import SendMessageRequest, StepRecord, ToolStepInput  # noqa: E402
from perdure.store import runs, stream_chunks  # noqa: E402
from perdure.store.db import Database, get_database, upgrade_database  # noqa: E402
from perdure.stream_events import step_events  # noqa: E402


def new_run(db: Database) -> tuple[str, str]:
    """An agent with a 1,000-character block (as `bench/speed.py` makes) and a run of it."""
    body = {
        "name": "bench",
        "memory_blocks": [{"label": "human", "value": "x" * 1000, "limit": 50000}],
        "llm_config": {"model": "scripted/bench", "endpoint": "http://127.0.0.1:9"},
    }
    agent = create_agent(db, AgentCreate.model_validate(body))
    run_id = f"run-{uuid.uuid4()}"
    request = SendMessageRequest.model_validate({"messages": [{"role": "user", "content": "go"}]})
    with db.transaction() as session:
        runs.create_run(session, run_id=run_id, agent_id=agent.id, workflow_id=f"agent-{agent.id}", request=request)
    return agent.id, run_id


def measure(db: Database, steps: int, steps_per_agent: int) -> tuple[list[float], list[float]]:
    tools = ToolActivities(db)
    tool_seconds: list[float] = []
    checkpoint_seconds: list[float] = []
    agent_id, run_id = new_run(db)
    for number in range(steps):
        if number and number % steps_per_agent == 0:
            agent_id, run_id = new_run(db)
        step_id = f"step-{uuid.uuid4()}"
        arguments = json.dumps({"label": "human", "new_string": f"fact {number}"})
        call = ToolCall(id=f"call-{number}", name="memory_insert", arguments=arguments)
        started = time.thread_time()
        output = tools.execute_tool(ToolStepInput(agent_id=agent_id, run_id=run_id, step_id=step_id, tool_call=call))
        tool_seconds.append(time.thread_time() - started)
        messages = [
            Message(
                id=f"message-{uuid.uuid4()}",
                agent_id=agent_id,
                role="assistant",
                tool_calls=[call],
                run_id=run_id,
                step_id=step_id,
            ),
            Message(
                id=f"message-{uuid.uuid4()}",
                agent_id=agent_id,
                role="tool",
                tool_returns=[output.tool_return],
                run_id=run_id,
                step_id=step_id,
            ),
        ]
        step = StepRecord(id=step_id, run_id=run_id, agent_id=agent_id, step_number=number + 1, model="bench")
        started = time.thread_time()
        with db.transaction() as session:
            runs.checkpoint_step(session, agent_id, messages, step)
            events = step_events(messages, tokens_streamed=False)
            stream_chunks.append(session, run_id, agent_id, events, dedup_key=f"step:{step_id}")
        checkpoint_seconds.append(time.thread_time() - started)
    return tool_seconds, checkpoint_seconds


def main(steps: int, steps_per_agent: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/step_store.db"
        upgrade_database(url)
        tool_seconds, checkpoint_seconds = measure(get_database(url), steps, steps_per_agent)
    warm = steps // 5
    return {
        "benchmark": "step_store",
        "steps": steps - warm,
        "tool_cpu_ms": round(statistics.mean(tool_seconds[warm:]) * 1000, 3),
        "checkpoint_cpu_ms": round(statistics.mean(checkpoint_seconds[warm:]) * 1000, 3),
    }


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--steps-per-agent", type=int, default=30)
    options = parser.parse_args()
    print(json.dumps(main(options.steps, options.steps_per_agent), indent=1))
