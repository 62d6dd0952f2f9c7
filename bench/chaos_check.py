"""The chaos check's verdict on each agent, read from the store once the sends have ended.

What a turn of K memory_insert calls must leave, exactly once whatever was killed or spoiled on
the way: one user message, K calls with one return each, one answer, each memory line once, the
context being the stored history, one run ended by end_turn, and no workflow left running.
Anything short of that is lost, anything beyond it doubled, anything unfinished stuck.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import suppress

from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from bench.chaos_model import FINAL_ANSWER, fact_line
from bench.chaos_workload import SendOutcome
from perdure.names import workflow_id
from perdure.schemas.letta import RunStatus, StopReasonType
from perdure.store import agents, messages, runs
from perdure.store.db import Database

SETTLE_TIMEOUT_S = 120.0


class AgentVerdict(BaseModel):
    end_turn: bool
    lost: bool = False
    doubled: bool = False
    stuck: bool = False
    problems: list[str] = Field(default_factory=list)


async def settle(temporal: Client, agent_ids: list[str]) -> set[str]:
    """The agents whose workflow still runs after `SETTLE_TIMEOUT_S`."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    running = set(agent_ids)
    while running and time.monotonic() < deadline:
        for agent_id in sorted(running):
            with suppress(RPCError):
                description = await temporal.get_workflow_handle(workflow_id(agent_id)).describe()
                if description.status is not WorkflowExecutionStatus.RUNNING:
                    running.discard(agent_id)
        if running:
            await asyncio.sleep(1.0)
    return running


def check_agent(db: Database, agent_id: str, calls: int, outcome: SendOutcome, running: bool) -> AgentVerdict:
    """What the store says the turn did, against what it should have done exactly once."""
    with db.transaction(read_only=True) as session:
        stored = messages.list_messages(session, agent_id)
        state = agents.get_agent(session, agent_id)
        agent_runs = runs.list_runs(session, agent_id)
    block = state.block("human")
    lines = [line for line in (block.value if block else "").split("\n") if line]
    tool_calls = [c for m in stored if m.role == "assistant" for c in m.tool_calls]
    returns = Counter(r.tool_call_id for m in stored if m.role == "tool" for r in m.tool_returns)
    answers = [m for m in stored if m.role == "assistant" and not m.tool_calls and m.text == FINAL_ANSWER]
    counts = {
        "user messages": (sum(1 for m in stored if m.role == "user"), 1),
        "tool calls": (len(tool_calls), calls),
        "answers": (len(answers), 1),
        "runs": (len(agent_runs), 1),
    }
    counts |= {f"returns of {c.id}": (returns[c.id], 1) for c in tool_calls}
    counts |= {f"line {fact_line(n, calls)!r}": (lines.count(fact_line(n, calls)), 1) for n in range(1, calls + 1)}
    problems = [
        f"{what}: {found} (expected {expected})" for what, (found, expected) in counts.items() if found != expected
    ]
    stray = set(returns) - {c.id for c in tool_calls}
    problems += [f"a return for unknown call {call_id}" for call_id in sorted(stray)]
    if lines != [fact_line(n, calls) for n in range(1, calls + 1)]:
        problems.append(f"memory block lines {lines}")
    if state.message_ids != [m.id for m in stored] or len({m.id for m in stored}) != len(stored):
        problems.append("the context is not the stored history, each message once")
    unfinished = [r.id for r in agent_runs if r.status in (RunStatus.created, RunStatus.running)]
    ended_well = all(r.stop_reason is StopReasonType.end_turn for r in agent_runs) and bool(agent_runs)
    if not ended_well:
        problems.append(f"runs ended {[(r.status.value, r.stop_reason, r.error) for r in agent_runs]}")
    if outcome.stop_reason is not StopReasonType.end_turn:
        problems.append(f"the send got {outcome.stop_reason}")
    return AgentVerdict(
        end_turn=ended_well and outcome.stop_reason is StopReasonType.end_turn,
        lost=any(found < expected for found, expected in counts.values()),
        doubled=any(found > expected for found, expected in counts.values()) or bool(stray),
        stuck=running or bool(unfinished),
        problems=[f"{agent_id}: {problem}" for problem in problems],
    )
