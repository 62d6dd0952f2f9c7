"""Tool rules and parallel tool calls in the running loop, end to end.

Letta's `integration_test_agent_tool_graph.py` scenarios (reference §4, §5, §1.5, §11) on the
real stack: the Temporal dev server, the SQLite file and a scripted model over HTTP. The solver
has its own unit tests (`test_tool_rule_solver.py`); these check what the loop does with its
answers: which tools each request offers and forces, which calls run (seen in memory, not in
the call list), what the model is told when it breaks a rule, and when the run stops.

The scripted model ignores `tool_choice`, like a model that disobeys it, so every rule check
here is the loop's own. Expected texts are written out literally (not imported), so a change of
wording that Letta clients match on fails here.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from perdure.schemas.agent import AgentState
from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.letta import (
    ApprovalRequestMessage,
    LettaResponse,
    RunStatus,
    StopReasonType,
    ToolCallMessage,
    ToolReturnMessage,
    UserMessage,
)
from perdure.schemas.run import ToolStepOutput
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store import agents, messages, runs
from perdure.store.db import Database
from perdure.store.errors import InvalidRequestError
from perdure.store.tables import PassageRow, ToolExecutionRow
from starter.client import PerdureClient
from tests.conftest import AgentFactory
from tests.helpers import block_value, call, calls, text, tool_returns, types_of
from tests.test_approvals import wait_finished

HUMAN_START = "Name unknown."
EDIT_SUCCESS_HUMAN = (
    "The core memory block with label `human` has been successfully edited. Your system prompt has been "
    "recompiled with the updated memory contents and is now active in your context. Review the changes and make "
    "sure they are as expected (correct indentation, no duplicate lines, etc). Edit the memory block again if necessary."
)
"""What memory_insert / memory_replace return on the `human` block (Letta's wording)."""
REQUIRED_BEFORE_EXIT = (
    "[This is an automated system message hidden from the user] ToolRuleViolated: "
    "You must call {tools} at least once to exit the loop."
)
DEADLINE_S = 60.0
EXTRA_TOOLS = ["core_memory_append", "archival_memory_insert", "archival_memory_search"]
"""Besides the base tools (conversation_search, memory_replace, memory_insert)."""


# --- scripting ---------------------------------------------------------------------------


def tool(name: str, **arguments: Any) -> ScriptedToolCall:
    return ScriptedToolCall(name=name, arguments=arguments)


def append(content: str, label: str = "human") -> ScriptedReply:
    """core_memory_append: returns "None" and leaves a visible trace in the block."""
    return call("core_memory_append", label=label, content=content)


def insert(new_string: str, label: str = "human") -> ScriptedReply:
    """memory_insert: returns Letta's long success sentence and leaves a visible trace."""
    return call("memory_insert", label=label, new_string=new_string)


def rule_agent(make_agent: AgentFactory, *rules: dict[str, Any], **fields: Any) -> AgentState:
    """An agent with a `human` block, the base tools plus EXTRA_TOOLS, and `rules`.

    Five more tools than any rule mentions, so "offers only the allowed tools" is a real restriction.
    """
    return make_agent(
        memory_blocks=[{"label": "human", "value": HUMAN_START}],
        tools=EXTRA_TOOLS,
        tool_rules=list(rules),
        **fields,
    )


async def send(client: PerdureClient, agent_id: str, message: str = "go", **options: Any) -> LettaResponse:
    """`send_message` with a deadline: a loop that never stops fails instead of hanging."""
    return await asyncio.wait_for(client.send_message(agent_id, message, **options), DEADLINE_S)


async def approve(client: PerdureClient, agent_id: str, request: ApprovalRequestMessage) -> LettaResponse:
    """Approve the request's call and wait, with a deadline, for the run to stop or pause again."""
    return await asyncio.wait_for(
        client.answer(agent_id, [ApprovalAnswer(tool_call_id=request.tool_call.tool_call_id, approve=True)]), DEADLINE_S
    )


# --- reading requests and responses ------------------------------------------------------


def offered(request: dict[str, Any]) -> list[str]:
    """The tool names one chat-completions request offered, in order."""
    return [t["function"]["name"] for t in request.get("tools") or []]


def forced(name: str) -> dict[str, Any]:
    """The `tool_choice` that demands a call of exactly `name`."""
    return {"type": "function", "function": {"name": name}}


def called(response: LettaResponse) -> list[str]:
    """Every tool the model called in the response (run or refused), in order."""
    return [c.name for m in response.messages if isinstance(m, ToolCallMessage) for c in m.tool_calls]


def run_status(db: Database, run_id: str) -> RunStatus:
    with db.transaction() as session:
        return runs.get_run(session, run_id).status


def window(db: Database, step_id: str, tool_call_id: str) -> tuple[datetime, datetime]:
    """When a call ran, from its execution record: written as the call ends, after `duration_ns`."""
    with db.transaction() as session:
        row = session.get(ToolExecutionRow, f"{step_id}:{tool_call_id}")
        assert row is not None, f"no execution recorded for {tool_call_id}"
        ended, duration_ns = row.created_at, ToolStepOutput.model_validate(row.result).duration_ns
    return ended - timedelta(microseconds=duration_ns / 1000), ended


# --- init / child / terminal ---------------------------------------------------------------


async def test_chain_offers_and_forces_one_tool_per_step_and_ends_on_the_terminal_tool(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's 4-hop graph: each request offers only the next tool and names it in tool_choice;
    the terminal tool's call ends the run with `tool_rule` and no further request is made."""
    chain = ["conversation_search", "memory_insert", "core_memory_append", "archival_memory_insert"]
    agent = rule_agent(
        make_agent,
        {"type": "run_first", "tool_name": chain[0]},
        {"type": "constrain_child_tools", "tool_name": chain[0], "children": [chain[1]]},
        {"type": "constrain_child_tools", "tool_name": chain[1], "children": [chain[2]]},
        {"type": "constrain_child_tools", "tool_name": chain[2], "children": [chain[3]]},
        {"type": "exit_loop", "tool_name": chain[3]},
    )
    llm.script(
        model_name,
        [
            call("conversation_search", query="anything"),
            insert("Inserted."),
            append("Appended."),
            call("archival_memory_insert", content="Archived."),
            text("must never be asked for"),
        ],
    )

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.tool_rule
    requests = llm.requests(model_name)
    assert [offered(r) for r in requests] == [[name] for name in chain]
    assert [r["tool_choice"] for r in requests] == [forced(name) for name in chain]
    assert called(response) == chain
    assert [r.status for r in tool_returns(response)] == ["success"] * 4
    assert llm.pending(model_name) == 1, "the loop asked the model again after the terminal tool"
    assert block_value(db, agent.id) == f"{HUMAN_START}\nInserted.\nAppended."
    assert run_status(db, response.run_id) is RunStatus.completed


async def test_call_outside_the_allowed_set_is_refused_with_rule_hints_and_the_loop_goes_on(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A disallowed call is not run; the model gets Letta's ToolConstraintError with the rules
    involved, is asked again under the same rules (a refused call is no step in the graph),
    and a plain answer then ends the turn normally."""
    agent = rule_agent(
        make_agent,
        {"type": "run_first", "tool_name": "conversation_search"},
        {"type": "constrain_child_tools", "tool_name": "conversation_search", "children": ["core_memory_append"]},
    )
    llm.script(model_name, [call("conversation_search", query="x"), insert("Hacked."), text("All done.")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    refused = tool_returns(response)[1]
    assert refused.status == "error"
    assert refused.tool_return == (
        "[ToolConstraintError] Cannot call memory_insert, valid tools include: ['core_memory_append'].\n"
        "** Hint: Possible rules that were violated:\n"
        "\t- <tool_rule>\nAfter using conversation_search, you must use one of these tools: core_memory_append\n</tool_rule>"
    )
    assert block_value(db, agent.id) == HUMAN_START, "the refused call changed memory"
    third = llm.requests(model_name)[2]
    assert third["messages"][-1]["role"] == "tool" and "[ToolConstraintError]" in third["messages"][-1]["content"]
    assert offered(third) == ["core_memory_append"] and third["tool_choice"] == forced("core_memory_append")


async def test_model_recovers_from_a_constraint_error_and_the_chain_proceeds(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """After a refused call (here of the terminal tool, which must therefore not end the run)
    the model calls the allowed tool and the graph continues to its end."""
    agent = rule_agent(
        make_agent,
        {"type": "run_first", "tool_name": "conversation_search"},
        {"type": "constrain_child_tools", "tool_name": "conversation_search", "children": ["core_memory_append"]},
        {"type": "constrain_child_tools", "tool_name": "core_memory_append", "children": ["memory_insert"]},
        {"type": "exit_loop", "tool_name": "memory_insert"},
    )
    llm.script(
        model_name,
        [
            call("conversation_search", query="x"),
            insert("Too early."),
            append("Appended."),
            insert("Inserted."),
            text("never"),
        ],
    )

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.tool_rule
    assert called(response) == ["conversation_search", "memory_insert", "core_memory_append", "memory_insert"]
    returns = tool_returns(response)
    assert [r.status for r in returns] == ["success", "error", "success", "success"]
    assert (returns[1].tool_return or "").startswith("[ToolConstraintError] Cannot call memory_insert")
    assert [offered(r) for r in llm.requests(model_name)] == [
        ["conversation_search"],
        ["core_memory_append"],
        ["core_memory_append"],
        ["memory_insert"],
    ]
    assert block_value(db, agent.id) == f"{HUMAN_START}\nAppended.\nInserted."
    assert llm.pending(model_name) == 1


# --- required before exit ----------------------------------------------------------------


async def test_required_before_exit_turns_a_text_answer_into_a_heartbeat(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A text answer while a required tool is uncalled does not end the turn: Letta's
    ToolRuleViolated heartbeat is stored and sent; once the tool ran, a text answer ends it."""
    agent = rule_agent(make_agent, {"type": "required_before_exit", "tool_name": "core_memory_append"})
    llm.script(model_name, [text("Bye."), append("Required."), text("Bye now.")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert types_of(response) == [
        "user_message",
        "assistant_message",
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    heartbeat = response.messages[2]
    assert isinstance(heartbeat, UserMessage)
    payload = json.loads(heartbeat.content)
    assert payload["type"] == "heartbeat"
    assert payload["reason"] == REQUIRED_BEFORE_EXIT.format(tools="core_memory_append")
    with db.transaction() as session:
        stored = messages.list_messages(session, agent.id, run_id=response.run_id)
    assert heartbeat.id in [m.id for m in stored if m.role == "user"], "the heartbeat was not stored"
    second = llm.requests(model_name)[1]["messages"]
    assert (second[-1]["role"], second[-1]["content"]) == ("user", heartbeat.content)
    assert len(llm.requests(model_name)) == 3
    assert block_value(db, agent.id) == f"{HUMAN_START}\nRequired."


async def test_terminal_tool_does_not_end_the_run_before_the_required_tool(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """exit_loop yields to required_before_exit: the first terminal call runs but the loop goes
    on; after the required tool, the terminal tool ends the run with `tool_rule`."""
    agent = rule_agent(
        make_agent,
        {"type": "required_before_exit", "tool_name": "memory_insert"},
        {"type": "exit_loop", "tool_name": "core_memory_append"},
    )
    llm.script(model_name, [append("First."), insert("Required."), append("Second."), text("never")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.tool_rule
    assert called(response) == ["core_memory_append", "memory_insert", "core_memory_append"]
    assert [r.status for r in tool_returns(response)] == ["success"] * 3
    assert block_value(db, agent.id) == f"{HUMAN_START}\nFirst.\nRequired.\nSecond."
    assert llm.pending(model_name) == 1, "the loop asked the model again after the terminal tool"
    assert not any(isinstance(m, UserMessage) for m in response.messages[1:]), "no heartbeat on the tool-call path"


# --- conditional -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "mapping", "default", "expected"),
    [
        pytest.param(
            append("x"),
            {"true": "archival_memory_insert", "None": "memory_insert"},
            "conversation_search",
            "memory_insert",
            id="None-output-mapped",
        ),
        pytest.param(
            insert("x"),
            {"None": "memory_replace", EDIT_SUCCESS_HUMAN: "core_memory_append"},
            "conversation_search",
            "core_memory_append",
            id="success-sentence-mapped",
        ),
        pytest.param(
            insert("x"),
            {"None": "core_memory_append"},
            "conversation_search",
            "conversation_search",
            id="no-match-default",
        ),
        pytest.param(
            append("x", label="nope"),
            {"None": "memory_insert"},
            "archival_memory_insert",
            "archival_memory_insert",
            id="error-output-default",
        ),
    ],
)
async def test_conditional_rule_picks_the_next_tool_from_the_real_output(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    first: ScriptedReply,
    mapping: dict[str, str],
    default: str,
    expected: str,
) -> None:
    """The mapping is matched against the tool's packaged `message` (core_memory_append says
    "None", memory_insert Letta's success sentence, a failure its error), else default_child."""
    ruled = first.tool_calls[0].name
    agent = rule_agent(
        make_agent,
        {"type": "conditional", "tool_name": ruled, "child_output_mapping": mapping, "default_child": default},
    )
    llm.script(model_name, [first, text("done")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    first_request, second_request = llm.requests(model_name)
    assert ruled in offered(first_request) and first_request["tool_choice"] == "auto"
    assert offered(second_request) == [expected]
    assert second_request["tool_choice"] == forced(expected)


async def test_rules_that_leave_no_tool_fall_back_to_every_tool(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """A strict conditional rule (require_output_mapping) with no matching output allows nothing;
    Letta V3 then offers every tool rather than none, still demanding a call ("required")."""
    agent = rule_agent(
        make_agent,
        {
            "type": "conditional",
            "tool_name": "core_memory_append",
            "child_output_mapping": {"true": "memory_insert"},
            "require_output_mapping": True,
        },
    )
    llm.script(model_name, [append("x"), text("done")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    first_request, second_request = llm.requests(model_name)
    assert offered(second_request) == offered(first_request) and len(offered(second_request)) == 6
    assert second_request["tool_choice"] == "required"


async def test_init_tool_that_fails_still_counts_as_run(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta's graph test: an init tool that errors was still invoked, so run_first is satisfied
    and the next request is no longer restricted to it."""
    agent = rule_agent(make_agent, {"type": "run_first", "tool_name": "core_memory_append"})
    llm.script(model_name, [append("x", label="nope"), insert("After the failure."), text("done")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert [r.status for r in tool_returns(response)] == ["error", "success"]
    assert "Block field nope does not exist" in (tool_returns(response)[0].tool_return or "")
    requests = llm.requests(model_name)
    assert offered(requests[0]) == ["core_memory_append"] and len(offered(requests[1])) == 6
    assert requests[1]["tool_choice"] == "auto"
    assert block_value(db, agent.id) == f"{HUMAN_START}\nAfter the failure."


# --- prefilled arguments -----------------------------------------------------------------


async def test_init_rule_args_override_the_models_arguments(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """run_first `args` win over what the model sends; the model's other arguments stay."""
    agent = rule_agent(
        make_agent, {"type": "run_first", "tool_name": "core_memory_append", "args": {"content": "From the rule."}}
    )
    llm.script(model_name, [append("From the model."), text("done")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert [r.status for r in tool_returns(response)] == ["success"]
    assert block_value(db, agent.id) == f"{HUMAN_START}\nFrom the rule."
    (call_message,) = [m for m in response.messages if isinstance(m, ToolCallMessage)]
    assert json.loads(call_message.tool_call.arguments) == {"label": "human", "content": "From the rule."}


async def test_child_arg_nodes_override_the_models_arguments(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """constrain_child_tools `child_arg_nodes` prefill the child's call right after the parent."""
    agent = rule_agent(
        make_agent,
        {"type": "run_first", "tool_name": "conversation_search"},
        {
            "type": "constrain_child_tools",
            "tool_name": "conversation_search",
            "children": ["core_memory_append"],
            "child_arg_nodes": [{"name": "core_memory_append", "args": {"content": "From the child rule."}}],
        },
    )
    llm.script(
        model_name,
        [call("conversation_search", query="x"), append("From the model."), append("Model again."), text("done")],
    )

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    assert [r.status for r in tool_returns(response)] == ["success"] * 3
    # Only the call right after the parent is prefilled; the next one runs with the model's words.
    assert block_value(db, agent.id) == f"{HUMAN_START}\nFrom the child rule.\nModel again."


@pytest.mark.parametrize(
    ("rules", "script", "expected"),
    [
        pytest.param(
            [{"type": "run_first", "tool_name": "core_memory_append", "args": {"bogus": 1}}],
            [append("From the model.")],
            "Invalid prefilled tool arguments from tool rules (source=InitToolRule(core_memory_append)): "
            "Unknown argument 'bogus' for tool 'core_memory_append'.",
            id="unknown-key",
        ),
        pytest.param(
            [{"type": "run_first", "tool_name": "core_memory_append", "args": {"content": 5}}],
            [append("From the model.")],
            "Invalid prefilled tool arguments from tool rules (source=InitToolRule(core_memory_append)): "
            "Invalid value for 'content': 5 does not match expected schema type 'string'.",
            id="wrong-type",
        ),
        pytest.param(
            [
                {"type": "run_first", "tool_name": "conversation_search"},
                {
                    "type": "constrain_child_tools",
                    "tool_name": "conversation_search",
                    "children": ["core_memory_append"],
                    "child_arg_nodes": [{"name": "core_memory_append", "args": {"label": ["human"]}}],
                },
            ],
            [call("conversation_search", query="x"), append("From the model.")],
            "Invalid prefilled tool arguments from tool rules (source=ChildToolRule(conversation_search->core_memory_append)): "
            "Invalid value for 'label': ['human'] does not match expected schema type 'string'.",
            id="child-wrong-type",
        ),
    ],
)
async def test_invalid_prefilled_args_block_the_call_and_stop_the_run(
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    make_agent: AgentFactory,
    db: Database,
    rules: list[dict[str, Any]],
    script: list[ScriptedReply],
    expected: str,
) -> None:
    """A prefill that does not fit the tool is the author's mistake: the tool does not run, the
    model is not asked again and the run stops `invalid_tool_call` (a failed run)."""
    agent = rule_agent(make_agent, *rules)
    llm.script(model_name, [*script, text("never")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.invalid_tool_call
    last = tool_returns(response)[-1]
    assert (last.status, last.tool_return) == ("error", expected)
    assert block_value(db, agent.id) == HUMAN_START, "the blocked tool ran"
    assert llm.pending(model_name) == 1, "the model was asked again after a blocked prefill"
    assert run_status(db, response.run_id) is RunStatus.failed


# --- max count per step ------------------------------------------------------------------


async def test_max_count_per_step_allows_exactly_n_calls_per_run(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Each call counts once (Letta counts twice, halving the limit): two calls run, then the
    tool is no longer offered and a third call is refused; the next run starts a fresh count."""
    agent = rule_agent(
        make_agent, {"type": "max_count_per_step", "tool_name": "core_memory_append", "max_count_limit": 2}
    )
    llm.script(model_name, [append("One."), append("Two."), append("Three."), text("done")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    requests = llm.requests(model_name)
    assert ["core_memory_append" in offered(r) for r in requests] == [True, True, False, False]
    assert all(len(offered(r)) == 5 for r in requests[2:]), "other tools must still be offered"
    returns = tool_returns(response)
    assert [r.status for r in returns] == ["success", "success", "error"]
    assert (returns[2].tool_return or "").startswith(
        "[ToolConstraintError] Cannot call core_memory_append, valid tools include: ["
    )
    assert (returns[2].tool_return or "").endswith(
        "\t- <tool_rule>\ncore_memory_append: at most 2 use(s) per response\n</tool_rule>"
    )
    assert block_value(db, agent.id) == f"{HUMAN_START}\nOne.\nTwo."

    llm.script(model_name, [text("fresh run")])
    await send(client, agent.id, "again")
    assert "core_memory_append" in offered(llm.requests(model_name)[-1])


# --- rule prompts and creation checks -----------------------------------------------------


async def test_rules_are_rendered_into_the_system_prompt(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """The first request's system message ends with <tool_usage_rules>, grouped in Letta's order
    (continue, child-based in given order, parent, terminal); init, required-before-exit and
    approval rules render nothing."""
    agent = rule_agent(
        make_agent,
        {"type": "exit_loop", "tool_name": "core_memory_append"},
        {"type": "required_before_exit", "tool_name": "memory_insert"},
        {"type": "max_count_per_step", "tool_name": "memory_insert", "max_count_limit": 2},
        {"type": "parent_last_tool", "tool_name": "memory_insert", "children": ["core_memory_append"]},
        {"type": "run_first", "tool_name": "conversation_search"},
        {"type": "constrain_child_tools", "tool_name": "conversation_search", "children": ["memory_insert"]},
        {"type": "continue_loop", "tool_name": "memory_replace"},
        {"type": "requires_approval", "tool_name": "archival_memory_insert"},
    )
    llm.script(model_name, [text("hello")])

    response = await send(client, agent.id, max_steps=1)

    assert response.stop_reason.stop_reason is StopReasonType.max_steps
    system = llm.requests(model_name)[0]["messages"][0]
    assert system["role"] == "system"
    assert system["content"].endswith(
        "<tool_usage_rules>\n"
        "<tool_rule>\nmemory_replace requires continuing your response when called\n</tool_rule>\n"
        "<tool_rule>\nmemory_insert: at most 2 use(s) per response\n</tool_rule>\n"
        "<tool_rule>\nAfter using conversation_search, you must use one of these tools: memory_insert\n</tool_rule>\n"
        "<tool_rule>\ncore_memory_append can only be used after memory_insert\n</tool_rule>\n"
        "<tool_rule>\ncore_memory_append ends your response (yields control) when called\n</tool_rule>\n"
        "</tool_usage_rules>"
    )


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        pytest.param(
            [{"type": "run_first", "tool_name": "memory_insert"}, {"type": "exit_loop", "tool_name": "memory_insert"}],
            "Tool 'memory_insert' cannot be both run_first and exit_loop: the rules contradict each other.",
            id="first-and-exit",
        ),
        pytest.param(
            [
                {"type": "continue_loop", "tool_name": "memory_insert"},
                {"type": "exit_loop", "tool_name": "memory_insert"},
            ],
            "Tool 'memory_insert' cannot be both exit_loop and continue_loop: the rules contradict each other.",
            id="exit-and-continue",
        ),
        pytest.param(
            [
                {"type": "max_count_per_step", "tool_name": "memory_insert", "max_count_limit": 2},
                {"type": "max_count_per_step", "tool_name": "memory_insert", "max_count_limit": 1},
            ],
            "Tool 'memory_insert' has max_count_per_step rules with different limits: [1, 2].",
            id="two-limits",
        ),
        pytest.param(
            [{"type": "exit_loop", "tool_name": "launch_rockets"}],
            "tool rules name tool(s) the agent does not have: launch_rockets",
            id="unknown-tool",
        ),
        pytest.param(
            [{"type": "exit_loop", "tool_name": "core_memory_append"}],
            "tool rules name tool(s) the agent does not have: core_memory_append",
            id="tool-the-agent-lacks",
        ),
        pytest.param(
            [{"type": "constrain_child_tools", "tool_name": "memory_insert", "children": ["launch_rockets"]}],
            "Tool rule constrain_child_tools on 'memory_insert' refers to tool 'launch_rockets', which the agent "
            "does not have (its tools: conversation_search, memory_replace, memory_insert).",
            id="unknown-child",
        ),
        pytest.param(
            [
                {
                    "type": "conditional",
                    "tool_name": "memory_insert",
                    "child_output_mapping": {"None": "memory_replace"},
                    "default_child": "ghost",
                }
            ],
            "Tool rule conditional on 'memory_insert' refers to tool 'ghost', which the agent "
            "does not have (its tools: conversation_search, memory_replace, memory_insert).",
            id="unknown-default-child",
        ),
        pytest.param(
            [
                {
                    "type": "constrain_child_tools",
                    "tool_name": "conversation_search",
                    "children": ["memory_insert"],
                    "child_arg_nodes": [{"name": "memory_replace", "args": {"label": "human"}}],
                }
            ],
            "Tool rule constrain_child_tools on 'conversation_search' prefills arguments for 'memory_replace', "
            "which is not in children ['memory_insert'].",
            id="prefill-for-a-non-child",
        ),
    ],
)
def test_agent_creation_refuses_rules_that_cannot_work(
    make_agent: AgentFactory, db: Database, rules: list[dict[str, Any]], message: str
) -> None:
    """A broken rule graph is refused up front with a sentence naming the problem, and no agent
    is stored, instead of the rules being silently relaxed mid-run."""
    with db.transaction() as session:
        before = len(agents.list_agents(session))
    with pytest.raises(InvalidRequestError) as refused:
        make_agent(tool_rules=rules)
    assert str(refused.value) == message
    with db.transaction() as session:
        assert len(agents.list_agents(session)) == before


# --- parallel tool calls -----------------------------------------------------------------


async def test_parallel_calls_all_run_when_enabled_and_no_rules(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """parallel_tool_calls on and no rules: the request allows several calls and every call of
    the response runs, in the model's order, answered in one tool message."""
    agent = rule_agent(make_agent, llm_config={"parallel_tool_calls": True})
    first, second = (
        tool("memory_insert", label="human", new_string="One."),
        tool("memory_insert", label="human", new_string="Two."),
    )
    llm.script(model_name, [calls(first, second), text("ok")])

    response = await send(client, agent.id)

    assert llm.requests(model_name)[0]["parallel_tool_calls"] is True
    (returns_message,) = [m for m in response.messages if isinstance(m, ToolReturnMessage)]
    assert [r.tool_call_id for r in returns_message.tool_returns] == [first.id, second.id]
    assert [r.status for r in returns_message.tool_returns] == ["success", "success"]
    assert block_value(db, agent.id) == f"{HUMAN_START}\nOne.\nTwo."


async def test_a_rule_other_than_approval_turns_parallel_calls_off(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Letta: with any rule but requires_approval the request says parallel_tool_calls false and
    only the first call of a response is kept."""
    agent = rule_agent(
        make_agent,
        {"type": "exit_loop", "tool_name": "archival_memory_insert"},
        llm_config={"parallel_tool_calls": True},
    )
    first, second = (
        tool("memory_insert", label="human", new_string="One."),
        tool("memory_insert", label="human", new_string="Two."),
    )
    llm.script(model_name, [calls(first, second), text("ok")])

    response = await send(client, agent.id)

    assert llm.requests(model_name)[0]["parallel_tool_calls"] is False
    (call_message,) = [m for m in response.messages if isinstance(m, ToolCallMessage)]
    assert [c.tool_call_id for c in call_message.tool_calls] == [first.id]
    assert [r.tool_call_id for r in tool_returns(response)] == [first.id]
    assert block_value(db, agent.id) == f"{HUMAN_START}\nOne."


async def test_approval_rules_alone_keep_parallel_calls_on(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """requires_approval is the one rule that does not disable parallel calls."""
    agent = rule_agent(
        make_agent,
        {"type": "requires_approval", "tool_name": "archival_memory_insert"},
        llm_config={"parallel_tool_calls": True},
    )
    llm.script(model_name, [text("ok")])
    await send(client, agent.id)
    assert llm.requests(model_name)[0]["parallel_tool_calls"] is True


SLOW_ARCHIVE = 6_000
"""Passages in the archive, so each archival search scans long enough that two run side by side
for a while; the scan is in Python, so with the GIL shared each takes longer, never shorter."""


def fill_archive(db: Database, agent_id: str, count: int) -> None:
    with db.transaction() as session:
        session.add_all(
            PassageRow(
                id=f"passage-{agent_id}-{i}", agent_id=agent_id, text=f"note {i} about sailing and tea {i % 7}", tags=[]
            )
            for i in range(count)
        )


async def test_parallel_safe_calls_overlap_and_serial_calls_follow_them(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Tools marked enable_parallel_execution (the searches) run concurrently: their recorded
    windows overlap. The serial memory_insert runs after both, though the model named it first,
    and the returns keep the model's order in one tool message."""
    agent = rule_agent(make_agent, llm_config={"parallel_tool_calls": True})
    fill_archive(db, agent.id, SLOW_ARCHIVE)
    serial = tool("memory_insert", label="human", new_string="Serial.")
    search_a = tool("archival_memory_search", query="sailing")
    search_b = tool("archival_memory_search", query="tea")
    llm.script(model_name, [calls(serial, search_a, search_b), text("ok")])

    response = await send(client, agent.id)

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    (returns_message,) = [m for m in response.messages if isinstance(m, ToolReturnMessage)]
    assert [r.tool_call_id for r in returns_message.tool_returns] == [serial.id, search_a.id, search_b.id]
    assert [r.status for r in returns_message.tool_returns] == ["success"] * 3
    step_id = returns_message.step_id
    assert step_id is not None
    a_start, a_end = window(db, step_id, search_a.id)
    b_start, b_end = window(db, step_id, search_b.id)
    serial_start, _ = window(db, step_id, serial.id)
    assert a_start < b_end and b_start < a_end, "the two searches did not run at the same time"
    assert serial_start >= max(a_end, b_end), "the serial call started before the searches ended"
    assert block_value(db, agent.id) == f"{HUMAN_START}\nSerial."


# --- approvals under rules -----------------------------------------------------------------


async def test_call_needing_approval_but_not_allowed_is_refused_not_held(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """The rules come first: a call of an approval tool that the rules do not allow at that
    point gets the constraint error at once instead of waiting for a person. Once the rules
    allow it, the same tool is held for approval as usual."""
    agent = rule_agent(
        make_agent,
        {"type": "run_first", "tool_name": "memory_insert"},
        {"type": "requires_approval", "tool_name": "core_memory_append"},
    )
    llm.script(model_name, [append("Too early."), insert("Inserted."), append("Now allowed.")])

    paused = await send(client, agent.id)

    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    refused = tool_returns(paused)[0]
    assert refused.status == "error"
    assert (
        refused.tool_return
        == "[ToolConstraintError] Cannot call core_memory_append, valid tools include: ['memory_insert']."
    )
    requests_made = [m for m in paused.messages if isinstance(m, ApprovalRequestMessage)]
    assert [[c.name for c in m.tool_calls] for m in requests_made] == [["core_memory_append"]]
    assert requests_made[0].tool_call.arguments == json.dumps({"label": "human", "content": "Now allowed."})
    assert block_value(db, agent.id) == f"{HUMAN_START}\nInserted."

    llm.script(model_name, [text("done")])
    done = await approve(client, agent.id, requests_made[0])
    assert done.stop_reason.stop_reason is StopReasonType.end_turn
    assert block_value(db, agent.id) == f"{HUMAN_START}\nInserted.\nNow allowed."


async def test_approved_terminal_call_ends_the_run_with_tool_rule(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """An approved call is still under the rules after it runs: a terminal tool approved by a
    person ends the run `tool_rule` without asking the model again."""
    agent = rule_agent(
        make_agent,
        {"type": "exit_loop", "tool_name": "core_memory_append"},
        {"type": "requires_approval", "tool_name": "core_memory_append"},
    )
    llm.script(model_name, [append("Approved."), text("never")])
    paused = await send(client, agent.id)
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    (request,) = [m for m in paused.messages if isinstance(m, ApprovalRequestMessage)]

    done = await approve(client, agent.id, request)

    assert done.stop_reason.stop_reason is StopReasonType.tool_rule
    assert block_value(db, agent.id) == f"{HUMAN_START}\nApproved."
    assert llm.pending(model_name) == 1


async def test_approved_call_resumed_in_a_new_run_is_judged_by_the_rules_of_its_own_step(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A call the rules allowed when the model made it, held for approval past the approval
    timeout and approved afterwards (Letta's resume path, a new run), must run: the person said
    yes to a legal call. The new run's fresh rule state (run_first not yet satisfied) is about
    the new run's first model request, not about a call from the earlier step."""
    agent = rule_agent(
        make_agent,
        {"type": "run_first", "tool_name": "memory_insert"},
        {"type": "requires_approval", "tool_name": "core_memory_append"},
    )
    llm.script(model_name, [insert("Inserted."), append("Approved later.")])
    paused = await send(client, agent.id, approval_timeout_seconds=1)
    assert paused.stop_reason.stop_reason is StopReasonType.requires_approval
    (request,) = [m for m in paused.messages if isinstance(m, ApprovalRequestMessage)]

    await wait_finished(client, agent.id)
    llm.script(model_name, [call("memory_insert", label="human", new_string="Next run."), text("done")])

    resumed = await approve(client, agent.id, request)

    approved = [r for r in tool_returns(resumed) if r.tool_call_id == request.tool_call.tool_call_id]
    assert [r.status for r in approved] == ["success"], approved
    assert block_value(db, agent.id).startswith(f"{HUMAN_START}\nInserted.\nApproved later.")
