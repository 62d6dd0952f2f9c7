"""Compaction planning: pure functions, so every case is built from plain message lists and counts."""

from __future__ import annotations

import pytest

from perdure.compaction import (
    CLIP_MARKER,
    SUMMARY_PROMPT,
    CompactionPlan,
    clip_summary,
    estimate_next_request,
    needs_compaction,
    plan_all,
    plan_hard_eviction,
    plan_sliding_window,
    summary_message_text,
    summary_request_messages,
    system_prompt_overflows,
)
from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.messages import Message, Role, TextContent, ToolCall, ToolReturn


def msg(role: Role, text: str = "", **fields: object) -> Message:
    ident = f"m{msg.counter}"  # type: ignore[attr-defined]
    msg.counter += 1  # type: ignore[attr-defined]
    content = [TextContent(text=text)] if text else []
    return Message.model_validate({"id": ident, "agent_id": "agent-1", "role": role, "content": content, **fields})


msg.counter = 0  # type: ignore[attr-defined]


def tool_turn(turn: int, calls: int) -> list[Message]:
    """user → assistant with `calls` parallel calls → tool with their returns → assistant reply."""
    ids = [f"call-{turn}-{n}" for n in range(calls)]
    return [
        msg("user", f"question {turn}"),
        msg("assistant", step_id=f"s{turn}a", tool_calls=[ToolCall(id=i, name="lookup") for i in ids]),
        msg(
            "tool",
            step_id=f"s{turn}a",
            tool_returns=[ToolReturn(tool_call_id=i, status="success", func_response="ok") for i in ids],
        ),
        msg("assistant", f"answer {turn}", step_id=f"s{turn}b"),
    ]


def long_conversation(turns: int = 20) -> list[Message]:
    messages = [msg("system", "You are helpful.")]
    for turn in range(turns):
        messages += tool_turn(turn, 1 + turn % 3)
    return messages


def with_pending_approval(messages: list[Message]) -> list[Message]:
    call = ToolCall(id="call-approve", name="delete_everything")
    return messages + [
        msg("user", "please delete"),
        msg("assistant", step_id="s-pending", tool_calls=[call]),
        msg("approval", step_id="s-pending", tool_calls=[call]),
    ]


def assert_pairs_intact(messages: list[Message], plan: CompactionPlan) -> None:
    """Every kept tool return's call is kept too, and the kept part starts a response or a turn."""
    by_id = {m.id: m for m in messages}
    kept = [by_id[i] for i in plan.keep_ids]
    kept_calls = {c.id for m in kept for c in m.tool_calls}
    assert kept[0].role in ("assistant", "user")
    for message in kept:
        for ret in message.tool_returns:
            assert ret.tool_call_id in kept_calls
    assert plan.evict_ids + plan.keep_ids == [m.id for m in messages[1:]]


def test_sliding_window_keeps_about_70_percent_and_cuts_at_turn_starts() -> None:
    messages = long_conversation()
    counts = [100] * len(messages)
    plan = plan_sliding_window(messages, counts, window=9000)
    assert plan is not None and plan.mode == "sliding_window"
    assert plan.tokens_before == 8100
    assert plan.tokens_after_estimate <= 0.7 * 9000
    assert len(plan.keep_ids) == 56  # 70% of the 80 non-system messages
    assert_pairs_intact(messages, plan)


def test_sliding_window_never_separates_a_call_from_its_return() -> None:
    cuts: set[tuple[int, int]] = set()
    for turns in range(3, 21):
        messages = long_conversation(turns)
        counts = [40 + (i * 37) % 150 for i in range(len(messages))]  # uneven but fixed sizes
        for window in range(500, 12000, 101):
            plan = plan_sliding_window(messages, counts, window)
            if plan is None:
                continue
            assert_pairs_intact(messages, plan)
            assert plan.tokens_after_estimate <= 0.7 * window
            kept = sum(c for m, c in zip(messages, counts, strict=True) if m.id in plan.keep_ids)
            assert plan.tokens_after_estimate == counts[0] + kept
            cuts.add((turns, len(plan.evict_ids)))
    assert {evicted % 4 for _, evicted in cuts} == {0, 1, 3}  # before users and both assistants, never before a tool


def chat(n: int) -> list[Message]:
    """A system message and `n` alternating user/assistant messages: every index is a valid cut."""
    return [msg("system", "sys")] + [msg("user" if i % 2 == 0 else "assistant", f"t{i}") for i in range(n)]


@pytest.mark.parametrize(("window", "evicted"), [(1015, 30), (930, 40), (800, 50), (600, 60), (300, 80)])
def test_eviction_grows_in_ten_percent_steps(window: int, evicted: int) -> None:
    messages = chat(100)
    counts = [10] * len(messages)  # kept tokens after evicting f%: 10 + 10 * (100 - f)
    plan = plan_sliding_window(messages, counts, window)
    assert plan is not None
    assert len(plan.evict_ids) == evicted
    assert plan.evict_ids == [m.id for m in messages[1 : evicted + 1]]


def test_small_overflow_evicts_only_the_first_30_percent() -> None:
    """Letta issue 3270: a context just over the threshold must not be wiped."""
    messages = chat(100)
    plan = plan_sliding_window(messages, [10] * len(messages), window=1130)  # 1010 tokens, 89% of the window
    assert plan is not None and len(plan.evict_ids) == 30


def test_same_inputs_same_plan() -> None:
    messages = long_conversation()
    counts = [40 + (i * 13) % 90 for i in range(len(messages))]
    assert plan_sliding_window(messages, counts, 6000) == plan_sliding_window(messages, counts, 6000)


def test_no_cut_reaches_the_goal_returns_none() -> None:
    messages = long_conversation(3)
    counts = [100] * len(messages)
    counts[-1] = 5000  # the newest message alone exceeds 70% of the window
    assert plan_sliding_window(messages, counts, window=6000) is None
    assert plan_sliding_window(chat(1), [10, 10], window=100) is None  # nothing to cut before


def test_no_valid_cut_inside_a_single_tool_chain_returns_none() -> None:
    call = ToolCall(id="c1", name="lookup")
    messages = [
        msg("system", "s"),
        msg("user", "go"),
        msg("assistant", tool_calls=[call]),
        msg("tool", tool_returns=[ToolReturn(tool_call_id="c1", status="success", func_response="x")]),
    ]
    assert plan_sliding_window(messages, [10, 10, 10, 900], window=1000) is None


def test_pending_approval_is_never_evicted_by_the_sliding_window() -> None:
    messages = with_pending_approval(long_conversation(5))
    counts = [100] * len(messages)
    plan = plan_sliding_window(messages, counts, window=2000)
    assert plan is not None
    assert plan.keep_ids[-2:] == [messages[-2].id, messages[-1].id]
    assert_pairs_intact(messages, plan)
    tight = plan_sliding_window(messages, counts, window=500)  # the cut may go up to the pending step, no further
    assert tight is not None and tight.keep_ids == [messages[-2].id, messages[-1].id]
    assert plan_sliding_window(messages, counts, window=300) is None
    counts[-1] = 1500  # keeping the request alone already breaks the goal: no plan rather than evicting it
    assert plan_sliding_window(messages, counts, window=2000) is None


def test_all_and_hard_eviction_keep_only_a_pending_approval() -> None:
    messages = with_pending_approval(long_conversation(5))
    counts = [100] * len(messages)
    for planner, mode in ((plan_all, "all"), (plan_hard_eviction, "hard_eviction")):
        plan = planner(messages, counts)
        assert plan.mode == mode
        assert plan.keep_ids == [messages[-2].id, messages[-1].id]
        assert plan.evict_ids == [m.id for m in messages[1:-2]]
        assert (plan.tokens_before, plan.tokens_after_estimate) == (100 * len(messages), 300)


def test_all_evicts_everything_when_no_approval_is_pending() -> None:
    messages = with_pending_approval(long_conversation(2))
    answer = msg("approval", approvals=[ApprovalAnswer(tool_call_id="call-approve", approve=True)])
    done = msg("tool", tool_returns=[ToolReturn(tool_call_id="call-approve", status="success", func_response="ok")])
    messages += [answer, done]
    plan = plan_all(messages, [10] * len(messages))
    assert plan.keep_ids == [] and plan.evict_ids == [m.id for m in messages[1:]]
    assert plan.tokens_after_estimate == 10
    assert plan_hard_eviction(messages, [10] * len(messages)).evict_ids == plan.evict_ids


def test_plans_reject_inconsistent_input() -> None:
    messages = chat(4)
    with pytest.raises(ValueError):
        plan_all(messages, [1, 2])
    with pytest.raises(ValueError):
        plan_sliding_window(messages[1:], [1] * 4, 100)


def test_needs_compaction_threshold() -> None:
    assert not needs_compaction(900, 1000)
    assert needs_compaction(901, 1000)
    assert not needs_compaction(950, 1000, threshold=0.95)
    assert needs_compaction(951, 1000, threshold=0.95)


def test_estimate_uses_prompt_tokens_plus_added() -> None:
    """Letta issue 3242: completion tokens are not part of the next request."""
    assert estimate_next_request(last_prompt_tokens=7000, added_tokens=350, counted_context_tokens=9999) == 7350


@pytest.mark.parametrize("prompt_tokens", [None, 0])
def test_estimate_falls_back_to_counted_context_without_usage(prompt_tokens: int | None) -> None:
    assert estimate_next_request(prompt_tokens, added_tokens=350, counted_context_tokens=4200) == 4200


def test_system_prompt_overflow() -> None:
    assert not system_prompt_overflows(3000, 900, 4096)
    assert system_prompt_overflows(3000, 1096, 4096)
    assert system_prompt_overflows(5000, 0, 4096)


def test_summary_request_messages() -> None:
    messages = summary_request_messages("[user] hi {not a field}", limit_words=250)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "250 words" in messages[0]["content"] and "{limit_words}" in SUMMARY_PROMPT
    assert "[user] hi {not a field}" in messages[1]["content"]


def test_clip_summary() -> None:
    assert clip_summary("short", 100) == "short"
    clipped = clip_summary("word " * 100, 60)
    assert clipped.endswith(CLIP_MARKER) and len(clipped) <= 60
    assert len(clip_summary("x" * 100, 5)) == 5


def test_summary_message_text_mentions_the_count_and_search() -> None:
    text = summary_message_text("The user wants a report.", 42)
    assert "42 earlier messages" in text and "conversation_search" in text
    assert text.endswith("The user wants a report.")
    assert "1 earlier message of this conversation was" in summary_message_text("s", 1)
