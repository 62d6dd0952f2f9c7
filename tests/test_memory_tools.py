"""The built-in memory tools, one by one, including every way they refuse.

Most tests call the tools the way the worker does: through the `execute_tool` activity (run in
Temporal's `ActivityEnvironment`) against the real SQLite file, so they see exactly the text the
model would get, and they check that a refused call leaves memory and the system message as they
were. The last tests drive the real loop through the dev server and the scripted model.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.tools import ToolActivities, run_tool_call
from perdure.schemas.agent import AgentState
from perdure.schemas.letta import StopReasonType
from perdure.schemas.messages import Message, Role, TextContent, ToolCall, ToolReturn
from perdure.schemas.run import ToolStepInput, ToolStepOutput
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from perdure.store import agents, messages
from perdure.store import tools as tool_store
from perdure.store.db import Database
from perdure.tools.builtin import ToolError, run_builtin
from perdure.tools.registry import ensure_builtin_tools
from perdure.tools.returns import truncate_function_return
from perdure.tools.schemas import BUILTIN_TOOL_DEFS
from starter.client import PerdureClient
from tests.conftest import AgentFactory
from tests.helpers import call, tool_returns

pytestmark = pytest.mark.both_stores

EDITED = "The core memory block with label `{label}` has been successfully edited."
READ_ONLY = "ValueError: Error This block is read-only and cannot be edited."
LINE_NUMBER_REFUSAL = (
    "ValueError: {field} contains a line number prefix, which is not allowed. Do not include line numbers "
    "when calling memory tools (line numbers are for display purposes only)."
)
TRUNCATION_NOTE = "... [NOTE: function output was truncated since it exceeded the character limit"


# --- helpers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one tool call gave back: the return's status and the tool's own text."""

    status: str
    text: str
    output: ToolStepOutput


def execute(
    db: Database,
    agent_id: str,
    name: str,
    arguments: dict[str, Any] | str,
    *,
    step_id: str | None = None,
    call_id: str | None = None,
) -> Outcome:
    """Run one tool call through the real `execute_tool` activity, as the worker would."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    call = ToolCall(id=call_id or f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=raw)
    step_input = ToolStepInput(
        agent_id=agent_id, run_id="run-test", step_id=step_id or f"step-{uuid.uuid4()}", tool_call=call
    )
    output = ActivityEnvironment().run(ToolActivities(db).execute_tool, step_input)
    envelope = json.loads(output.tool_return.func_response or "")
    # Letta's envelope must agree with the return's status, or the model is told the opposite.
    assert envelope["status"] == ("OK" if output.tool_return.status == "success" else "Failed")
    return Outcome(status=output.tool_return.status, text=envelope["message"], output=output)


def ok(db: Database, agent_id: str, name: str, **arguments: Any) -> str:
    """Run a call that must succeed and return its text."""
    outcome = execute(db, agent_id, name, arguments)
    assert outcome.status == "success", outcome.text
    return outcome.text


def refused(db: Database, agent_id: str, name: str, **arguments: Any) -> str:
    """Run a call that must fail; return its error text without Letta's `Error executing function` prefix."""
    outcome = execute(db, agent_id, name, arguments)
    assert outcome.status == "error", outcome.text
    prefix = f"Error executing function {name}: "
    assert outcome.text.startswith(prefix), outcome.text
    return outcome.text.removeprefix(prefix)


def block_value(db: Database, agent_id: str, label: str) -> str | None:
    with db.transaction() as session:
        block = agents.get_agent(session, agent_id).block(label)
    return None if block is None else block.value


def system_text(db: Database, agent_id: str) -> str:
    """The stored system message (context position 0), which the next LLM request will send."""
    with db.transaction() as session:
        system_id = agents.get_agent(session, agent_id).message_ids[0]
        return messages.load_message(session, system_id).text


@dataclass(frozen=True)
class Memory:
    """An agent's memory at one moment, to prove that a refused call changed nothing."""

    blocks: dict[str, str]
    system: str


def memory_of(db: Database, agent_id: str) -> Memory:
    with db.transaction() as session:
        blocks = {b.label: b.value for b in agents.get_blocks(session, agent_id)}
    return Memory(blocks=blocks, system=system_text(db, agent_id))


def agent_with(make_agent: AgentFactory, **values: str) -> AgentState:
    """An agent whose editable blocks have these labels and values."""
    return make_agent(memory_blocks=[{"label": label, "value": value} for label, value in values.items()])


def message(agent_id: str, role: Role, text: str, at: datetime | None = None) -> Message:
    """A plain text message; without `at` it is stamped when stored."""
    return Message(
        id=f"message-{uuid.uuid4()}", agent_id=agent_id, role=role, content=[TextContent(text=text)], created_at=at
    )


def search_call(agent_id: str, query: str) -> Message:
    """An assistant message that called conversation_search: its arguments contain the query."""
    call = ToolCall(
        id=f"call_{uuid.uuid4().hex[:24]}", name="conversation_search", arguments=json.dumps({"query": query})
    )
    return Message(id=f"message-{uuid.uuid4()}", agent_id=agent_id, role="assistant", tool_calls=[call])


def store(db: Database, *stored: Message) -> None:
    """Store messages in this order (the search returns the newest first)."""
    with db.transaction() as session:
        messages.insert_messages(session, list(stored))


def found(text: str) -> list[tuple[str, str]]:
    """(role, content) of each conversation_search result, in the order returned."""
    return [(r["role"], r["content"]) for r in json.loads(text)["results"]]


def archived(text: str) -> list[str]:
    """The contents of each archival_memory_search result, in the order returned."""
    return [r["content"] for r in json.loads(text)]


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A fixed UTC time in March 2026, so date filters have known answers."""
    return datetime(2026, 3, day, hour, minute, tzinfo=timezone.utc)


@contextmanager
def return_limit(db: Database, limit: int) -> Iterator[None]:
    """Store the built-in tool definitions with a small `return_char_limit`, then restore them.

    The built-ins' real limit (50,000) is far above anything a memory tool returns, so this is the
    only way to see the activity apply the stored limit. Create agents before entering: agent
    creation rewrites the built-in definitions.
    """
    with db.transaction() as session:
        tool_store.upsert_tools(
            session, [d.model_copy(update={"return_char_limit": limit}) for d in BUILTIN_TOOL_DEFS.values()]
        )
    try:
        yield
    finally:
        with db.transaction() as session:
            ensure_builtin_tools(session)


# --- memory_replace ------------------------------------------------------------------------------


def test_memory_replace_edits_the_block_and_recompiles_the_system_message(
    db: Database, make_agent: AgentFactory
) -> None:
    """The next LLM request reads memory from the system message, so the edit must land there too."""
    agent = agent_with(make_agent, human="Name unknown.\nLikes tea.")
    assert "<value>\nName unknown.\nLikes tea.\n</value>" in system_text(db, agent.id)

    text = ok(db, agent.id, "memory_replace", label="human", old_string="Name unknown.", new_string="Name: Ada.")

    assert text.startswith(EDITED.format(label="human"))
    assert block_value(db, agent.id, "human") == "Name: Ada.\nLikes tea."
    system = system_text(db, agent.id)
    assert "<value>\nName: Ada.\nLikes tea.\n</value>" in system
    assert "Name unknown." not in system


def test_memory_replace_with_empty_new_string_deletes_the_text(db: Database, make_agent: AgentFactory) -> None:
    """The schema says new_string may be empty to delete; that must not be mistaken for a no-op."""
    agent = agent_with(make_agent, human="Likes tea. Likes coffee.")
    ok(db, agent.id, "memory_replace", label="human", old_string=" Likes coffee.", new_string="")
    assert block_value(db, agent.id, "human") == "Likes tea."


def test_memory_replace_refuses_text_that_is_not_in_the_block(db: Database, make_agent: AgentFactory) -> None:
    """Letta's exact sentence, so prompts tuned on Letta still recognise it; nothing is written."""
    agent = agent_with(make_agent, human="Name unknown.")
    before = memory_of(db, agent.id)

    error = refused(db, agent.id, "memory_replace", label="human", old_string="Name: Bob.", new_string="Name: Ada.")

    assert error == (
        "ValueError: No replacement was performed, old_string `Name: Bob.` did not appear verbatim in memory "
        "block with label `human`."
    )
    assert memory_of(db, agent.id) == before


def test_memory_replace_refuses_an_empty_old_string(db: Database, make_agent: AgentFactory) -> None:
    """An empty string 'occurs' everywhere; replacing it would scatter new_string through the block."""
    agent = agent_with(make_agent, human="abc")
    error = refused(db, agent.id, "memory_replace", label="human", old_string="", new_string="X")
    assert error.startswith("ValueError: No replacement was performed, old_string `` did not appear verbatim")
    assert block_value(db, agent.id, "human") == "abc"


def test_memory_replace_refuses_an_ambiguous_match_and_names_its_lines(db: Database, make_agent: AgentFactory) -> None:
    """Replacing one of several copies would be a guess; the line numbers let the model disambiguate."""
    agent = agent_with(make_agent, human="likes tea\nlikes coffee\nlikes tea")
    before = memory_of(db, agent.id)

    error = refused(db, agent.id, "memory_replace", label="human", old_string="likes tea", new_string="likes water")

    assert error == (
        "ValueError: No replacement was performed. Multiple occurrences of old_string `likes tea` in lines [1, 3]. "
        "Please ensure it is unique."
    )
    assert memory_of(db, agent.id) == before


@pytest.mark.parametrize(
    ("field", "arguments"),
    [
        ("old_string", {"old_string": "1→ Name unknown.", "new_string": "Name: Ada."}),
        ("new_string", {"old_string": "Name unknown.", "new_string": "Name: Ada.\n2→ Likes tea."}),
    ],
)
def test_memory_replace_rejects_line_number_prefixes(
    db: Database, make_agent: AgentFactory, field: str, arguments: dict[str, str]
) -> None:
    """Display line numbers copied into an edit would corrupt the block; they are refused in either string."""
    agent = agent_with(make_agent, human="Name unknown.")
    before = memory_of(db, agent.id)
    assert refused(db, agent.id, "memory_replace", label="human", **arguments) == LINE_NUMBER_REFUSAL.format(
        field=field
    )
    assert memory_of(db, agent.id) == before


# --- errors every block-editing tool shares ------------------------------------------------------

EDITS: dict[str, dict[str, Any]] = {
    "memory_replace": {"old_string": "I am fixed.", "new_string": "I am changed."},
    "memory_insert": {"new_string": "I am changed."},
    "memory_rethink": {"new_memory": "I am changed."},
    "core_memory_append": {"content": "I am changed."},
    "core_memory_replace": {"old_content": "I am fixed.", "new_content": "I am changed."},
}


@pytest.mark.parametrize("tool", [name for name in EDITS if name != "memory_rethink"])
def test_an_unknown_label_names_the_available_blocks(db: Database, make_agent: AgentFactory, tool: str) -> None:
    """Letta's KeyError text lists the labels, so the model can retry with a real one.

    memory_rethink is left out: it creates a missing block instead (tested below).
    """
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": "I am fixed."}, {"label": "persona", "value": "A helper."}]
    )
    before = memory_of(db, agent.id)

    error = refused(db, agent.id, tool, label="nope", **EDITS[tool])

    assert error == "KeyError: Block field nope does not exist (available sections = human, persona)"
    assert memory_of(db, agent.id) == before


@pytest.mark.parametrize("tool", list(EDITS))
def test_a_read_only_block_cannot_be_edited(db: Database, make_agent: AgentFactory, tool: str) -> None:
    """Read-only blocks (e.g. a persona set by the operator) must survive any edit tool the model tries."""
    agent = make_agent(memory_blocks=[{"label": "persona", "value": "I am fixed.", "read_only": True}])
    before = memory_of(db, agent.id)

    assert refused(db, agent.id, tool, label="persona", **EDITS[tool]) == READ_ONLY
    assert memory_of(db, agent.id) == before


# --- memory_insert -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("insert_line", "expected"),
    [
        (None, "a\nb\nc\nnew"),
        (-1, "a\nb\nc\nnew"),
        (0, "new\na\nb\nc"),
        (1, "a\nnew\nb\nc"),
        (2, "a\nb\nnew\nc"),
        (3, "a\nb\nc\nnew"),
    ],
)
def test_memory_insert_puts_the_text_after_the_given_line(
    db: Database, make_agent: AgentFactory, insert_line: int | None, expected: str
) -> None:
    """0 is the top, n inserts after line n, -1 (the default) appends: Letta's numbering."""
    agent = agent_with(make_agent, human="a\nb\nc")
    arguments: dict[str, Any] = {"label": "human", "new_string": "new"}
    if insert_line is not None:
        arguments["insert_line"] = insert_line

    assert ok(db, agent.id, "memory_insert", **arguments).startswith(EDITED.format(label="human"))

    assert block_value(db, agent.id, "human") == expected
    assert f"<value>\n{expected}\n</value>" in system_text(db, agent.id)


def test_memory_insert_of_several_lines_keeps_them_together(db: Database, make_agent: AgentFactory) -> None:
    agent = agent_with(make_agent, human="a\nb")
    ok(db, agent.id, "memory_insert", label="human", new_string="x\ny", insert_line=1)
    assert block_value(db, agent.id, "human") == "a\nx\ny\nb"


@pytest.mark.parametrize("insert_line", [4, -2])
def test_memory_insert_refuses_a_line_outside_the_block(
    db: Database, make_agent: AgentFactory, insert_line: int
) -> None:
    """The range in the message tells the model which lines exist."""
    agent = agent_with(make_agent, human="a\nb\nc")
    before = memory_of(db, agent.id)

    error = refused(db, agent.id, "memory_insert", label="human", new_string="new", insert_line=insert_line)

    assert error == (
        f"ValueError: Invalid `insert_line` parameter: {insert_line}. It should be within the range of lines of the "
        "memory block: [0, 3], or -1 to append to the end of the memory block."
    )
    assert memory_of(db, agent.id) == before


def test_memory_insert_into_an_empty_block_adds_no_blank_line(db: Database, make_agent: AgentFactory) -> None:
    """An empty block has no lines: a first insert must not start the block with an empty line."""
    agent = agent_with(make_agent, human="")
    ok(db, agent.id, "memory_insert", label="human", new_string="first")
    assert block_value(db, agent.id, "human") == "first"
    ok(db, agent.id, "memory_insert", label="human", new_string="second")
    assert block_value(db, agent.id, "human") == "first\nsecond"


def test_memory_insert_into_an_empty_block_only_accepts_line_zero(db: Database, make_agent: AgentFactory) -> None:
    agent = agent_with(make_agent, human="")
    error = refused(db, agent.id, "memory_insert", label="human", new_string="x", insert_line=1)
    assert "Invalid `insert_line` parameter: 1" in error and "[0, 0]" in error
    assert block_value(db, agent.id, "human") == ""


def test_memory_insert_rejects_line_number_prefixes(db: Database, make_agent: AgentFactory) -> None:
    agent = agent_with(make_agent, human="a")
    error = refused(db, agent.id, "memory_insert", label="human", new_string="2→ b")
    assert error == LINE_NUMBER_REFUSAL.format(field="new_string")
    assert block_value(db, agent.id, "human") == "a"


# --- memory_rethink ------------------------------------------------------------------------------


def test_memory_rethink_replaces_the_whole_block(db: Database, make_agent: AgentFactory) -> None:
    agent = agent_with(make_agent, human="old line 1\nold line 2", persona="A helper.")

    text = ok(db, agent.id, "memory_rethink", label="human", new_memory="Name: Ada.\nLikes sailing.")

    assert text.startswith(EDITED.format(label="human"))
    assert block_value(db, agent.id, "human") == "Name: Ada.\nLikes sailing."
    assert block_value(db, agent.id, "persona") == "A helper."
    system = system_text(db, agent.id)
    assert "<value>\nName: Ada.\nLikes sailing.\n</value>" in system and "old line" not in system


def test_memory_rethink_creates_a_missing_block(db: Database, make_agent: AgentFactory) -> None:
    """Letta's memory_rethink is also how a model opens a new block; it must appear in the prompt."""
    agent = agent_with(make_agent, human="Name: Ada.")

    text = ok(db, agent.id, "memory_rethink", label="projects", new_memory="Building a boat.")

    assert text.startswith(EDITED.format(label="projects"))
    with db.transaction() as session:
        blocks = agents.get_blocks(session, agent.id)
    assert [(b.label, b.value, b.read_only) for b in blocks] == [
        ("human", "Name: Ada.", False),
        ("projects", "Building a boat.", False),
    ]
    assert "<projects>" in system_text(db, agent.id) and "Building a boat." in system_text(db, agent.id)


def test_memory_rethink_refuses_a_label_a_block_cannot_have(db: Database, make_agent: AgentFactory) -> None:
    """A bad label must come back to the model as a tool error, not crash the activity (and the run)."""
    agent = agent_with(make_agent, human="Name: Ada.")
    before = memory_of(db, agent.id)

    error = refused(db, agent.id, "memory_rethink", label="my notes", new_memory="x")

    assert error.startswith("ValueError: Cannot create memory block with label `my notes`")
    assert memory_of(db, agent.id) == before


def test_memory_rethink_rejects_line_number_prefixes(db: Database, make_agent: AgentFactory) -> None:
    agent = agent_with(make_agent, human="a")
    assert refused(db, agent.id, "memory_rethink", label="human", new_memory="1→ a") == LINE_NUMBER_REFUSAL.format(
        field="new_memory"
    )
    assert block_value(db, agent.id, "human") == "a"


# --- core_memory_append / core_memory_replace ----------------------------------------------------


def test_core_memory_append_adds_a_line_and_returns_none(db: Database, make_agent: AgentFactory) -> None:
    """Letta's core tools return None, which the model sees as the text "None"."""
    agent = agent_with(make_agent, human="Name: Ada.")

    assert ok(db, agent.id, "core_memory_append", label="human", content="Likes sailing.") == "None"

    assert block_value(db, agent.id, "human") == "Name: Ada.\nLikes sailing."
    assert "Name: Ada.\nLikes sailing." in system_text(db, agent.id)


def test_core_memory_replace_replaces_every_occurrence(db: Database, make_agent: AgentFactory) -> None:
    """Unlike memory_replace, the older core tool replaces all copies (Letta's str.replace)."""
    agent = agent_with(make_agent, human="likes tea\nlikes coffee\nlikes tea")

    assert ok(db, agent.id, "core_memory_replace", label="human", old_content="tea", new_content="water") == "None"

    assert block_value(db, agent.id, "human") == "likes water\nlikes coffee\nlikes water"
    assert "likes tea" not in system_text(db, agent.id)


@pytest.mark.parametrize("old_content", ["Name: Bob.", ""])
def test_core_memory_replace_refuses_content_that_is_not_there(
    db: Database, make_agent: AgentFactory, old_content: str
) -> None:
    agent = agent_with(make_agent, human="Name: Ada.")
    before = memory_of(db, agent.id)

    error = refused(db, agent.id, "core_memory_replace", label="human", old_content=old_content, new_content="x")

    assert error == f"ValueError: Old content '{old_content}' not found in memory block 'human'"
    assert memory_of(db, agent.id) == before


def test_tool_error_prints_as_kind_and_message(db: Database, make_agent: AgentFactory) -> None:
    """run_builtin raises ToolError; its text is what the activity puts after `Error executing function`."""
    agent = agent_with(make_agent, human="x")
    with pytest.raises(ToolError) as raised, db.transaction() as session:
        run_builtin(session, agent.id, "core_memory_append", {"label": "nope", "content": "y"})
    assert raised.value.kind == "KeyError"
    assert str(raised.value) == "KeyError: Block field nope does not exist (available sections = human)"


# --- conversation_search -------------------------------------------------------------------------


def test_conversation_search_finds_user_and_assistant_text_ignoring_case(
    db: Database, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    store(
        db,
        message(agent.id, "user", "I went SAILING on Sunday", at(1, 9)),
        message(agent.id, "assistant", "Sailing sounds fun!", at(1, 10)),
        message(agent.id, "user", "Also I bake bread", at(1, 11)),
    )

    text = ok(db, agent.id, "conversation_search", query="sailing")

    assert json.loads(text)["message"] == "Showing 2 results:"
    assert found(text) == [("assistant", "Sailing sounds fun!"), ("user", "I went SAILING on Sunday")]
    assert json.loads(text)["results"][0]["timestamp"] == "2026-03-01T10:00:00+00:00"


def test_conversation_search_only_sees_this_agents_messages(db: Database, make_agent: AgentFactory) -> None:
    agent, other = make_agent(), make_agent()
    store(db, message(other.id, "user", "sailing with the other agent"))
    assert found(ok(db, agent.id, "conversation_search", query="sailing")) == []


def test_conversation_search_respects_limit_and_roles(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent()
    store(db, *(message(agent.id, "user" if i % 2 == 0 else "assistant", f"note {i}") for i in range(8)))

    assert [c for _, c in found(ok(db, agent.id, "conversation_search", query="note"))] == [
        f"note {i}" for i in (7, 6, 5, 4, 3)
    ]
    assert [c for _, c in found(ok(db, agent.id, "conversation_search", query="note", limit=2))] == ["note 7", "note 6"]
    assert found(ok(db, agent.id, "conversation_search", query="note", roles=["user"], limit=3)) == [
        ("user", "note 6"),
        ("user", "note 4"),
        ("user", "note 2"),
    ]
    assert {r for r, _ in found(ok(db, agent.id, "conversation_search", roles=["assistant"], limit=10))} == {
        "assistant"
    }


def test_conversation_search_refuses_a_limit_below_one(db: Database, make_agent: AgentFactory) -> None:
    """A negative LIMIT means 'no limit' to SQLite; the model asked for something meaningless, so say so."""
    agent = make_agent()
    store(db, message(agent.id, "user", "note"))
    assert (
        refused(db, agent.id, "conversation_search", limit=0)
        == "ValueError: Invalid `limit` parameter: 0. It must be a positive integer."
    )
    assert refused(db, agent.id, "conversation_search", limit=-1).startswith(
        "ValueError: Invalid `limit` parameter: -1."
    )


def test_conversation_search_leaves_out_tool_returns_and_the_system_message(
    db: Database, make_agent: AgentFactory
) -> None:
    """By default only user and assistant messages are searched (the system prompt holds memory, not history)."""
    agent = agent_with(make_agent, human="sailing is in memory")
    tool_message = Message(
        id=f"message-{uuid.uuid4()}",
        agent_id=agent.id,
        role="tool",
        tool_returns=[ToolReturn(tool_call_id="call_x", status="success", func_response="sailing in a tool return")],
    )
    store(db, tool_message)
    assert json.loads(ok(db, agent.id, "conversation_search", query="sailing")) == {
        "message": "No results found.",
        "results": [],
    }


def test_conversation_search_filters_by_date(db: Database, make_agent: AgentFactory) -> None:
    """A date alone is a whole day (an end date includes that day); an offset is converted to UTC."""
    agent = make_agent()
    store(
        db,
        message(agent.id, "user", "Lisbon trip planned", at(1, 8)),
        message(agent.id, "assistant", "Lisbon trip booked", at(2, 23, 30)),
        message(agent.id, "user", "back from Lisbon", at(5, 12)),
    )

    def search(**dates: str) -> list[str]:
        return [c for _, c in found(ok(db, agent.id, "conversation_search", query="lisbon", **dates))]

    assert search(start_date="2026-03-02") == ["back from Lisbon", "Lisbon trip booked"]
    assert search(end_date="2026-03-02") == ["Lisbon trip booked", "Lisbon trip planned"]
    assert search(start_date="2026-03-02", end_date="2026-03-02") == ["Lisbon trip booked"]
    assert search(start_date="2026-03-01T08:00", end_date="2026-03-01T08:00") == ["Lisbon trip planned"]
    # 00:30 at +02:00 is 22:30 UTC the day before, so the 23:30 UTC message is after it ...
    assert search(start_date="2026-03-03T00:30+02:00") == ["back from Lisbon", "Lisbon trip booked"]
    # ... and 09:30 at +02:00 is 07:30 UTC, before the first message.
    assert search(end_date="2026-03-01T09:30+02:00") == []


@pytest.mark.parametrize("field", ["start_date", "end_date"])
def test_conversation_search_refuses_a_date_it_cannot_read(db: Database, make_agent: AgentFactory, field: str) -> None:
    agent = make_agent()
    error = refused(db, agent.id, "conversation_search", query="x", **{field: "last tuesday"})
    assert (
        error
        == f"ValueError: Invalid {field} format: last tuesday. Use ISO 8601 format (YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
    )


def test_conversation_search_says_when_nothing_matches(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent()
    store(db, message(agent.id, "user", "I like tea"))
    assert json.loads(ok(db, agent.id, "conversation_search", query="coffee")) == {
        "message": "No results found.",
        "results": [],
    }


def test_conversation_search_skips_earlier_searches(db: Database, make_agent: AgentFactory) -> None:
    """A stored search call contains its query, so it would match itself; Letta leaves such calls out.

    They must also not use up the limit: with limit=1 the one real match must still be found
    behind newer search calls for the same words.
    """
    agent = make_agent()
    store(
        db,
        message(agent.id, "user", "I love sailing"),
        search_call(agent.id, "sailing"),
        search_call(agent.id, "sailing"),
        message(agent.id, "assistant", "Noted: sailing."),
        search_call(agent.id, "sailing"),
    )

    assert found(ok(db, agent.id, "conversation_search", query="sailing")) == [
        ("assistant", "Noted: sailing."),
        ("user", "I love sailing"),
    ]
    assert found(ok(db, agent.id, "conversation_search", query="sailing", limit=1)) == [
        ("assistant", "Noted: sailing.")
    ]
    assert found(ok(db, agent.id, "conversation_search", query="love", limit=1)) == [("user", "I love sailing")]
    assert found(ok(db, agent.id, "conversation_search", query="conversation_search")) == []


def test_conversation_search_shows_other_tool_calls(db: Database, make_agent: AgentFactory) -> None:
    """An assistant message with only a (non-search) tool call is shown as the call, so edits can be found."""
    agent = make_agent()
    call = ToolCall(
        id="call_1", name="memory_insert", arguments=json.dumps({"label": "human", "new_string": "likes kites"})
    )
    store(db, Message(id=f"message-{uuid.uuid4()}", agent_id=agent.id, role="assistant", tool_calls=[call]))
    (result,) = found(ok(db, agent.id, "conversation_search", query="kites"))
    assert result == ("assistant", f"memory_insert({call.arguments})")


# --- archival memory -----------------------------------------------------------------------------


def archive(db: Database, agent_id: str, content: str, tags: list[str] | None = None) -> None:
    """Store a passage through archival_memory_insert, which returns None like Letta's."""
    arguments: dict[str, Any] = {"content": content}
    if tags is not None:
        arguments["tags"] = tags
    assert ok(db, agent_id, "archival_memory_insert", **arguments) == "None"


def test_archival_search_ranks_by_matching_keywords(db: Database, make_agent: AgentFactory) -> None:
    """More of the query's words ranks higher; no shared word is no result; ties go newest first."""
    agent = make_agent()
    archive(db, agent.id, "The user drinks green tea every morning.")
    archive(db, agent.id, "Green tea with jasmine is a favourite.")
    archive(db, agent.id, "The user dislikes coffee.")
    archive(db, agent.id, "Morning walks by the river.")

    text = ok(db, agent.id, "archival_memory_search", query="GREEN tea, morning?")

    assert archived(text) == [
        "The user drinks green tea every morning.",
        "Green tea with jasmine is a favourite.",
        "Morning walks by the river.",
    ]
    first = json.loads(text)[0]
    assert first["tags"] == []
    assert datetime.fromisoformat(first["timestamp"]).tzinfo is not None, "the model must be told the time zone"


def test_archival_search_only_sees_this_agents_passages(db: Database, make_agent: AgentFactory) -> None:
    agent, other = make_agent(), make_agent()
    archive(db, other.id, "a secret about sailing")
    assert archived(ok(db, agent.id, "archival_memory_search", query="sailing")) == []


def test_archival_search_filters_by_tags(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent()
    archive(db, agent.id, "note a", ["work", "urgent"])
    archive(db, agent.id, "note b", ["work"])
    archive(db, agent.id, "note c", ["home"])

    def search(**arguments: Any) -> list[str]:
        return archived(ok(db, agent.id, "archival_memory_search", query="note", **arguments))

    assert search() == ["note c", "note b", "note a"]
    assert search(tags=["work"]) == ["note b", "note a"]
    assert search(tags=["urgent", "home"]) == ["note c", "note a"]
    assert search(tags=["urgent", "home"], tag_match_mode="any") == ["note c", "note a"]
    assert search(tags=["work", "urgent"], tag_match_mode="all") == ["note a"]
    assert search(tags=["work", "home"], tag_match_mode="all") == []
    assert json.loads(ok(db, agent.id, "archival_memory_search", query="note", tags=["urgent"]))[0]["tags"] == [
        "work",
        "urgent",
    ]


def test_archival_search_returns_top_k(db: Database, make_agent: AgentFactory) -> None:
    agent = make_agent()
    for i in range(7):
        archive(db, agent.id, f"note {i}")

    assert archived(ok(db, agent.id, "archival_memory_search", query="note")) == [f"note {i}" for i in (6, 5, 4, 3, 2)]
    assert archived(ok(db, agent.id, "archival_memory_search", query="note", top_k=2)) == ["note 6", "note 5"]
    assert len(archived(ok(db, agent.id, "archival_memory_search", query="note", top_k=50))) == 7
    # top_k=-1 used to slice off the last result and 0 silently meant 5.
    for bad in (0, -1):
        error = refused(db, agent.id, "archival_memory_search", query="note", top_k=bad)
        assert error == f"ValueError: Invalid `top_k` parameter: {bad}. It must be a positive integer."


def test_archival_search_filters_by_time(db: Database, make_agent: AgentFactory) -> None:
    """Times with an offset are compared as the instant they name, not as wall-clock text."""
    agent = make_agent()
    now = datetime.now(timezone.utc)  # taken first, so the passage is never older than `now`
    archive(db, agent.id, "note stored now")
    plus_five = timezone(timedelta(hours=5))

    def search(**dates: str) -> list[str]:
        return archived(ok(db, agent.id, "archival_memory_search", query="note", **dates))

    assert search(start_datetime=(now - timedelta(minutes=5)).isoformat()) == ["note stored now"]
    assert search(start_datetime=(now - timedelta(minutes=5)).astimezone(plus_five).isoformat()) == ["note stored now"]
    assert search(start_datetime=(now + timedelta(hours=1)).isoformat()) == []
    assert search(end_datetime=(now - timedelta(days=1)).date().isoformat()) == []
    assert search(end_datetime=(now + timedelta(days=1)).date().isoformat()) == ["note stored now"]
    assert refused(db, agent.id, "archival_memory_search", query="note", end_datetime="soon") == (
        "ValueError: Invalid end_datetime format: soon. Use ISO 8601 format (YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
    )


# --- the execute_tool activity: arguments, retries, truncation -----------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "problem"),
    [
        (
            "memory_insert",
            {"label": "human", "new_string": "x", "position": 2},
            "Unknown argument 'position' for tool 'memory_insert'; expected arguments: ['insert_line', 'label', 'new_string'].",
        ),
        (
            "memory_replace",
            {"label": "human", "old_string": "Name: Ada."},
            "Missing required argument(s) for tool 'memory_replace': new_string.",
        ),
        ("memory_rethink", {"new_memory": "x"}, "Missing required argument(s) for tool 'memory_rethink': label."),
        (
            "memory_insert",
            {"label": "human", "new_string": "x", "insert_line": "1"},
            "Invalid value for 'insert_line': '1' does not match expected schema type 'integer'.",
        ),
        (
            "memory_insert",
            {"label": "human", "new_string": "x", "insert_line": True},
            "Invalid value for 'insert_line': True does not match expected schema type 'integer'.",
        ),
        (
            "core_memory_append",
            {"label": "human", "content": ["x"]},
            "Invalid value for 'content': ['x'] does not match expected schema type 'string'.",
        ),
        (
            "archival_memory_insert",
            {"content": "x", "tags": ["ok", 3]},
            "Invalid value for 'tags': item 1: 3 does not match expected schema type 'string'.",
        ),
        (
            "archival_memory_search",
            {"query": "x", "tag_match_mode": "some"},
            "Invalid value for 'tag_match_mode': 'some' is not one of ['any', 'all'].",
        ),
    ],
)
def test_arguments_that_do_not_fit_the_schema_are_refused_before_the_tool_runs(
    db: Database, make_agent: AgentFactory, tool: str, arguments: dict[str, Any], problem: str
) -> None:
    """The model gets one precise sentence instead of a Python TypeError, and nothing is written."""
    agent = agent_with(make_agent, human="Name: Ada.")
    before = memory_of(db, agent.id)

    outcome = execute(db, agent.id, tool, arguments)

    assert outcome.status == "error"
    assert outcome.text == f"Error executing function {tool}: TypeError: {problem}"
    assert memory_of(db, agent.id) == before
    assert archived(ok(db, agent.id, "archival_memory_search", query="x")) == []


@pytest.mark.parametrize(
    ("tool", "raw_arguments", "expected"),
    [
        ("launch_rockets", "{}", "Tool not found: launch_rockets"),
        ("memory_insert", '{"label": "human", ', "Error: the arguments for memory_insert are not valid JSON"),
        (
            "memory_insert",
            '["human", "x"]',
            "Error: the arguments for memory_insert must be a JSON object, got list; the tool was not called.",
        ),
    ],
)
def test_calls_that_cannot_run_say_why(
    db: Database, make_agent: AgentFactory, tool: str, raw_arguments: str, expected: str
) -> None:
    agent = agent_with(make_agent, human="Name: Ada.")
    outcome = execute(db, agent.id, tool, raw_arguments)
    assert outcome.status == "error" and outcome.text.startswith(expected)
    assert block_value(db, agent.id, "human") == "Name: Ada."


def test_a_retried_call_returns_the_recorded_result_and_edits_once(db: Database, make_agent: AgentFactory) -> None:
    """Temporal retries an activity whose completion was lost; the insert must not happen twice."""
    agent = agent_with(make_agent, human="Name: Ada.")
    arguments = {"label": "human", "new_string": "Likes sailing."}

    step_id, call_id = f"step-{uuid.uuid4()}", "call_retry"

    first = execute(db, agent.id, "memory_insert", arguments, step_id=step_id, call_id=call_id)
    retried = execute(db, agent.id, "memory_insert", arguments, step_id=step_id, call_id=call_id)

    assert first.status == "success"
    assert retried.output == first.output, "the retry must return the recorded result, time included"
    assert block_value(db, agent.id, "human") == "Name: Ada.\nLikes sailing."

    # The same call id in another step is another call, and runs.
    execute(db, agent.id, "memory_insert", arguments, step_id=f"step-{uuid.uuid4()}", call_id=call_id)
    assert block_value(db, agent.id, "human") == "Name: Ada.\nLikes sailing.\nLikes sailing."


def test_a_retried_refusal_is_also_replayed(db: Database, make_agent: AgentFactory) -> None:
    """A recorded error stays that call's result even if memory changed in between."""
    agent = agent_with(make_agent, human="Name: Ada.")
    arguments = {"label": "human", "old_string": "Likes tea.", "new_string": "Likes coffee."}
    ids = {"step_id": f"step-{uuid.uuid4()}", "call_id": "call_refused"}

    first = execute(db, agent.id, "memory_replace", arguments, **ids)
    ok(db, agent.id, "core_memory_append", label="human", content="Likes tea.")
    retried = execute(db, agent.id, "memory_replace", arguments, **ids)

    assert first.status == "error" and retried.output == first.output
    assert block_value(db, agent.id, "human") == "Name: Ada.\nLikes tea."


def test_truncate_function_return_clips_at_the_limit_and_says_so() -> None:
    assert truncate_function_return("x" * 10, 10) == "x" * 10
    clipped = truncate_function_return("abcdefghijk", 10)
    assert clipped.startswith("abcdefghij" + TRUNCATION_NOTE)
    assert "11 > 10" in clipped and "k" not in clipped


def test_the_activity_applies_the_stored_return_limit_except_to_searches(
    db: Database, make_agent: AgentFactory
) -> None:
    """Search results are exempt (as in Letta): clipping JSON would hand the model a broken document."""
    agent = agent_with(make_agent, human="")
    store(db, message(agent.id, "user", "a long message about sailing " * 5))
    archive(db, agent.id, "a long passage about sailing " * 5)
    limit = 60

    with return_limit(db, limit):
        inserted = ok(db, agent.id, "memory_insert", label="human", new_string="Likes sailing.")
        conversation = ok(db, agent.id, "conversation_search", query="sailing")
        archival = ok(db, agent.id, "archival_memory_search", query="sailing")

    full = EDITED.format(label="human")
    assert inserted.startswith(full[:limit] + TRUNCATION_NOTE) and f"> {limit}" in inserted
    assert block_value(db, agent.id, "human") == "Likes sailing.", "a clipped return still means the edit happened"
    assert len(conversation) > limit and TRUNCATION_NOTE not in conversation
    assert found(conversation) == [("user", "a long message about sailing " * 5)]
    assert len(archival) > limit and archived(archival) == ["a long passage about sailing " * 5]


def test_a_tool_edit_commits_only_with_its_recorded_result(db: Database, make_agent: AgentFactory) -> None:
    """execute_tool's exactly-once promise needs the edit to roll back if recording the result fails."""
    agent = agent_with(make_agent, human="Name: Ada.")
    call = ToolCall(
        id="call_atomic", name="core_memory_append", arguments=json.dumps({"label": "human", "content": "twice?"})
    )

    with pytest.raises(RuntimeError), db.transaction() as session:
        assert run_tool_call(session, agent.id, call) == (True, "None")
        raise RuntimeError("the worker died before the result was recorded")

    assert block_value(db, agent.id, "human") == "Name: Ada."


# --- through the real loop -----------------------------------------------------------------------


async def test_a_memory_tool_error_reaches_the_model_and_the_run_ends_its_turn(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A refused edit is an ordinary turn: the model reads the error, corrects itself, and answers."""
    agent = agent_with(make_agent, human="Name unknown.")
    llm.script(
        model_name,
        [
            call("memory_replace", label="human", old_string="Name: unknown", new_string="Name: Ada."),
            call("memory_replace", label="human", old_string="Name unknown.", new_string="Name: Ada."),
            ScriptedReply(content="Hello Ada."),
        ],
    )

    response = await client.send_message(agent.id, "I'm Ada.")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert response.usage.step_count == 3
    returns = tool_returns(response)
    assert [r.status for r in returns] == ["error", "success"]
    expected = (
        "Error executing function memory_replace: ValueError: No replacement was performed, old_string "
        "`Name: unknown` did not appear verbatim in memory block with label `human`."
    )
    assert returns[0].tool_return == expected
    # The model's next request carries the error as the tool message answering its call.
    second = llm.requests(model_name)[1]["messages"]
    assert second[-1]["role"] == "tool"
    assert second[-1]["tool_call_id"] == second[-2]["tool_calls"][0]["id"]
    envelope = json.loads(second[-1]["content"])
    assert envelope["status"] == "Failed" and envelope["message"] == expected
    assert "Name unknown." in second[0]["content"]
    # The corrected call worked, and the last request's system prompt shows it.
    assert block_value(db, agent.id, "human") == "Name: Ada."
    assert "Name: Ada." in llm.requests(model_name)[2]["messages"][0]["content"]


async def test_conversation_search_in_a_later_run_is_not_hidden_by_an_earlier_search(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """The stored call of an earlier search matches the same query; it must not take the only result slot."""
    agent = make_agent()
    search = call("conversation_search", query="sailing", limit=1)
    llm.script(
        model_name,
        [
            ScriptedReply(content="Noted."),
            search,
            ScriptedReply(content="That one."),
            search,
            ScriptedReply(content="Still that one."),
        ],
    )

    await client.send_message(agent.id, "I love sailing")
    first = await client.send_message(agent.id, "What do I love?")
    second = await client.send_message(agent.id, "Remind me again?")

    for response in (first, second):
        (result,) = tool_returns(response)
        assert result.status == "success"
        assert result.tool_return is not None
        assert found(result.tool_return) == [("user", "I love sailing")]
