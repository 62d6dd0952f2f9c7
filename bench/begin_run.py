"""The begin activity's CPU for an agent with many earlier runs, printed as JSON.

Every send is checked against the runs the agent made before (a client's retry of a turn must
not run it twice), in the client and again in the begin activity. This measures the begin
activity alone (thread CPU, SQLite, no Temporal) for an agent with no earlier runs (the floor
of this benchmark) and with `--runs` of them, each earlier request a message with an `otid`
as the clients send it.

    python bench/begin_run.py [--runs 200 1000] [--repeats 30]
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

from activities.runs import RunActivities  # noqa: E402
from perdure.agents import create_agent  # noqa: E402
from perdure.schemas.agent import AgentCreate  # noqa: E402
from perdure.schemas.run import BeginRunInput  # noqa: E402
from perdure.store import runs  # noqa: E402
from perdure.store.db import Database, get_database, upgrade_database  # noqa: E402
from starter.updates import message_request  # noqa: E402


def agent_with_runs(db: Database, count: int) -> str:
    """An agent (as `bench/speed.py` makes) that has made `count` runs."""
    body = {
        "name": "bench",
        "memory_blocks": [{"label": "human", "value": "x" * 1000, "limit": 50000}],
        "llm_config": {"model": "scripted/bench", "endpoint": "http://127.0.0.1:9"},
    }
    agent = create_agent(db, AgentCreate.model_validate(body))
    with db.transaction() as session:
        for number in range(count):
            request = message_request(f"message number {number} of a long conversation")
            runs.create_run(
                session, run_id=f"run-{uuid.uuid4()}", agent_id=agent.id, workflow_id="bench", request=request
            )
    return agent.id


def begin_cpu_ms(db: Database, agent_id: str, repeats: int) -> float:
    """The median thread CPU of `begin_run` for a fresh message (each call records its run)."""
    activities = RunActivities(db)
    seconds: list[float] = []
    for _ in range(repeats):
        run_id = f"run-{uuid.uuid4()}"
        input = BeginRunInput(agent_id=agent_id, run_id=run_id, workflow_id="bench", request=message_request("go"))
        started = time.thread_time()
        activities.begin_run(input)
        seconds.append(time.thread_time() - started)
    return round(statistics.median(seconds) * 1000, 3)


def main(counts: list[int], repeats: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/begin_run.db"
        upgrade_database(url)
        db = get_database(url)
        begin_cpu_ms(db, agent_with_runs(db, 0), repeats)  # warm up
        floor = begin_cpu_ms(db, agent_with_runs(db, 0), repeats)
        measured = {count: begin_cpu_ms(db, agent_with_runs(db, count), repeats) for count in counts}
    return {
        "benchmark": "begin_run",
        "repeats": repeats,
        "no_earlier_runs_cpu_ms": floor,
        "with_earlier_runs": [
            {"earlier_runs": count, "cpu_ms": ms, "ratio": round(ms / floor, 2)} for count, ms in measured.items()
        ],
    }


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--repeats", type=int, default=30)
    options = parser.parse_args()
    print(json.dumps(main(options.runs, options.repeats), indent=1))
