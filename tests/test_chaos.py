"""The chaos check, short: a few agents through worker kills, a server kill and provider faults.

`bench/chaos.py` starts its own dev server, model process and worker process, so these tests
share nothing with the session fixtures; the full-size run is the bench's (see the README).
"""

from __future__ import annotations

from pathlib import Path

from bench.chaos import ChaosOptions, run_chaos
from bench.chaos_check import check_agent
from bench.chaos_model import FINAL_ANSWER, fact_line, rule_reply
from bench.chaos_workload import SendOutcome, make_agents
from perdure.schemas.letta import StopReasonType
from perdure.store import agents
from perdure.store.db import get_database, upgrade_database


async def test_nothing_lost_doubled_or_stuck_through_worker_and_server_kills() -> None:
    report = await run_chaos(ChaosOptions(agents=4, calls=3, worker_kills=2, server_kills=1, seed=15))

    assert (report.worker_kills, report.server_kills) == (2, 1), "every kill landed while runs were under way"
    assert report.failures == []
    assert (report.lost, report.doubled, report.stuck) == (0, 0, 0)
    assert report.end_turn == 4
    assert report.model_requests >= 4 * (3 + 1)


async def test_every_provider_fault_is_recovered() -> None:
    report = await run_chaos(
        ChaosOptions(agents=4, calls=2, worker_kills=0, server_kills=0, provider_faults=0.5, stall_s=2.0, seed=15)
    )

    assert set(report.faults_injected) == {"rate_limit", "server_error", "stall", "cut_body"}
    assert report.streaming_agents == 2, "cut bodies are tried on streamed and plain answers"
    assert report.failures == []
    assert (report.lost, report.doubled, report.stuck) == (0, 0, 0)
    assert report.end_turn == 4


def test_the_stand_in_model_answers_from_the_request_alone() -> None:
    """A request asked again (after a crash or a fault) gets the same answer."""
    user = {"role": "user", "content": "go"}
    tool = {"role": "tool", "content": "ok", "tool_call_id": "call_1"}

    first = rule_reply({"messages": [user]}, 2)
    second = rule_reply({"messages": [user, {"role": "assistant"}, tool]}, 2)
    last = rule_reply({"messages": [user, tool, tool]}, 2)
    next_turn = rule_reply({"messages": [user, tool, tool, {"role": "assistant"}, user]}, 2)

    assert [c.arguments for c in first.tool_calls] == [{"label": "human", "new_string": fact_line(1, 2)}]
    assert [c.arguments for c in second.tool_calls] == [{"label": "human", "new_string": fact_line(2, 2)}]
    assert (last.content, last.tool_calls) == (FINAL_ANSWER, [])
    assert [c.arguments for c in next_turn.tool_calls] == [{"label": "human", "new_string": fact_line(1, 2)}]


def test_the_check_finds_a_lost_turn_and_a_doubled_effect(tmp_path: Path) -> None:
    """The check itself can fail: an agent that never ran has lost its turn, and a memory line
    written twice is doubled."""
    url = f"sqlite:///{tmp_path / 'perdure.db'}"
    upgrade_database(url)
    db = get_database(url)
    never_ran, doubled = make_agents(db, 2, 2, "http://127.0.0.1:9/v1")
    with db.transaction() as session:
        twice_written = [fact_line(1, 2), fact_line(1, 2), fact_line(2, 2)]
        agents.set_block_value(session, doubled, "human", "\n".join(twice_written))
    ended = SendOutcome(stop_reason=StopReasonType.end_turn, errors=[])

    lost = check_agent(db, never_ran, 2, ended, running=False)
    twice = check_agent(db, doubled, 2, ended, running=False)

    assert lost.lost and not lost.doubled and not lost.end_turn
    assert any("user messages: 0 (expected 1)" in problem for problem in lost.problems)
    assert twice.doubled
    assert any(f"line {fact_line(1, 2)!r}: 2 (expected 1)" in problem for problem in twice.problems)
