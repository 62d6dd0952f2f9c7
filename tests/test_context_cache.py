"""The cache of parsed context messages the LLM request reads through: it serves a message only
while the stored text is the same, and holds no more stored text than its budget.

(That the next request sees a memory edit, which rewrites the stored system message, is pinned
end to end by `test_run_loop.py::test_loop_runs_tools_until_end_turn`.)
"""

from __future__ import annotations

from perdure.schemas.messages import Message, TextContent
from perdure.store.context import ParsedMessages


def stored(message_id: str, text: str) -> tuple[str, str]:
    message = Message(id=message_id, agent_id="agent-1", role="user", content=[TextContent(text=text)])
    return message_id, message.model_dump_json()


def test_an_unchanged_text_is_served_parsed_and_a_changed_one_is_read_again() -> None:
    cache = ParsedMessages(max_chars=10_000)
    first = cache.parsed([stored("m1", "hello")])["m1"]
    assert cache.parsed([stored("m1", "hello")])["m1"] is first
    changed = cache.parsed([stored("m1", "hello again")])["m1"]
    assert changed.text == "hello again"
    assert cache.parsed([stored("m1", "hello again")])["m1"] is changed


def test_the_least_recently_used_messages_leave_past_the_budget() -> None:
    one = stored("m1", "a" * 100)
    two = stored("m2", "b" * 100)
    three = stored("m3", "c" * 100)
    cache = ParsedMessages(max_chars=len(one[1]) + len(two[1]))
    parsed = cache.parsed([one, two])
    cache.parsed([one])  # m1 is now the most recently used
    cache.parsed([three])  # over budget: m2 leaves
    assert cache.parsed([one])["m1"] is parsed["m1"]
    assert cache.parsed([two])["m2"] is not parsed["m2"]
