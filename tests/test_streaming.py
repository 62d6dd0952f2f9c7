"""Streaming runs: tokens and steps through the run's Workflow Stream, resumable by offset.

Everything runs for real: the scripted model streams SSE over HTTP, the LLM activity publishes
its chunks by signal, the workflow publishes steps, and the client reads by update and query.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from perdure import names
from perdure.schemas.approvals import ApprovalAnswer
from perdure.schemas.letta import AssistantMessage, LettaStopReason, StopReasonType, ToolCallMessage
from perdure.schemas.stream import AttemptStarted, LettaErrorMessage
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.store import messages
from perdure.store.db import Database
from starter.client import PerdureClient
from starter.updates import message_request
from starter.stream import NoRunError, StreamItem, read_stream
from tests.conftest import AgentFactory
from tests.test_approvals import approval_agent
from tests.test_context_window import OVERFLOW, summarizing_agent, warm_up

ANSWER = "Nice to meet you, Ada. I will remember your name and that you like sailing on quiet lakes."
STREAM_TIMEOUT = 60


def call(name: str, call_id: str = "", **arguments: object) -> ScriptedReply:
    tool_call = ScriptedToolCall(name=name, arguments=arguments, **({"id": call_id} if call_id else {}))
    return ScriptedReply(tool_calls=[tool_call])


def kinds(items: list[StreamItem]) -> list[str]:
    """Message types in order, runs of the same type collapsed: tokens arrive as they come, so
    a short answer may be one chunk or several."""
    out: list[str] = []
    for item in items:
        if not out or out[-1] != item.event.message_type:
            out.append(item.event.message_type)
    return out


async def collect(stream: AsyncIterator[StreamItem]) -> list[StreamItem]:
    async def run() -> list[StreamItem]:
        return [item async for item in stream]

    return await asyncio.wait_for(run(), STREAM_TIMEOUT)


def streamed_text(items: list[StreamItem], message_id: str) -> str:
    """What a client shows for a message: its chunks since the last `attempt_started`."""
    text = ""
    for item in items:
        if isinstance(item.event, AttemptStarted):
            text = ""
        elif isinstance(item.event, AssistantMessage) and item.event.id == message_id:
            text += item.event.content
    return text


def stored_answer(db: Database, agent_id: str) -> Any:
    with db.transaction(read_only=True) as session:
        return [m for m in messages.list_messages(session, agent_id) if m.role == "assistant" and m.text][-1]


def assert_the_stored_answer_follows_the_mark(items: list[StreamItem], db: Database, agent_id: str) -> None:
    """After a superseded attempt: what follows its `attempt_started` is the whole stored answer,
    not appended to the partial output, and the run ends as usual."""
    stored = stored_answer(db, agent_id)
    assert stored.text == ANSWER
    assert streamed_text(items, stored.id) == ANSWER, (
        "what follows the mark is the whole stored answer, not prefixed by the void output"
    )
    assert kinds(items)[-2:] == ["stop_reason", "usage_statistics"]


def assert_contiguous(items: list[StreamItem], start: int = 0) -> None:
    assert [i.offset for i in items] == list(range(start, start + len(items)))


async def test_tokens_arrive_as_they_come_then_steps_then_the_finish(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}], tools=["core_memory_append"])
    llm.script(
        model_name,
        [
            call("core_memory_append", "call_remember_ada", label="human", content="Name: Ada."),
            ScriptedReply(content=ANSWER, chunk_delay_s=0.08),
        ],
    )

    items = await collect(client.stream_message(agent.id, message_request("I'm Ada.", stream_tokens=True)))

    assert_contiguous(items)
    stored = stored_answer(db, agent.id)
    chunks = [i.event for i in items if isinstance(i.event, AssistantMessage)]
    assert len(chunks) >= len(ANSWER.split()) // 2, "a slow answer's tokens arrive as they come, not batched"
    assert {c.id for c in chunks} == {stored.id}, "chunks carry the id the answer is stored under"
    assert "".join(c.content for c in chunks) == ANSWER == stored.text
    call_chunks = [i.event for i in items if isinstance(i.event, ToolCallMessage)]
    assert "".join(c.tool_call.arguments for c in call_chunks) == '{"label": "human", "content": "Name: Ada."}'
    assert {c.tool_call.tool_call_id for c in call_chunks} == {"call_remember_ada"}
    order = kinds(items)
    assert order.index("tool_return_message") > order.index("tool_call_message")
    assert order.index("tool_return_message") < order.index("assistant_message")
    assert order[-2:] == ["stop_reason", "usage_statistics"]
    assert items[-2].event == LettaStopReason(stop_reason=StopReasonType.end_turn)
    assert items[-1].event.step_count == 2  # type: ignore[union-attr]
    assert llm.requests(model_name)[0]["stream"] is True
    history = await client.temporal.get_workflow_handle(names.workflow_id(agent.id)).fetch_history()
    signalled = [e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert signalled == [], "tokens travel outside the run's history"


async def test_without_token_streaming_each_step_arrives_whole(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}], tools=["core_memory_append"])
    llm.script(
        model_name,
        [
            call("core_memory_append", label="human", content="Ada"),
            ScriptedReply(content="Hello Ada.", reasoning="Greet her."),
        ],
    )

    items = await collect(client.stream_message(agent.id, message_request("I'm Ada.")))

    assert kinds(items) == [
        "tool_call_message",
        "tool_return_message",
        "reasoning_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    assert "stream" not in llm.requests(model_name)[0], "no token streaming was asked for"
    assert items[3].event.id == stored_answer(db, agent.id).id  # type: ignore[union-attr]


async def test_a_dropped_client_resumes_from_its_offset_with_nothing_lost_or_repeated(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}], tools=["core_memory_append"])
    llm.script(
        model_name,
        [
            call("core_memory_append", label="human", content="Name: Ada."),
            ScriptedReply(content=ANSWER, chunk_delay_s=0.1),
        ],
    )
    sender = client.stream_message(agent.id, message_request("I'm Ada.", stream_tokens=True))
    opening = await anext(sender)  # the run has started
    run = asyncio.create_task(collect(sender))

    first: list[StreamItem] = []
    async for item in client.follow(agent.id):
        first.append(item)
        if isinstance(item.event, AssistantMessage):
            break  # the client drops in the middle of the answer
    assert not run.done(), "the run was still streaming when the client dropped"
    rest = await collect(client.follow(agent.id, first[-1].offset + 1))
    everything = [opening, *await run]

    assert_contiguous(first + rest)
    assert [i.event for i in first + rest] == [i.event for i in everything]
    replay = await collect(client.follow(agent.id))
    assert replay == everything, "a finished run replays the same events from 0"
    assert await collect(client.follow(agent.id, everything[-1].offset + 1)) == []


async def test_a_retried_attempt_is_marked_and_supersedes_the_partial_answer(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = make_agent()
    llm.script(
        model_name,
        [
            ScriptedReply(
                content="This first answer will be cut off before it is done, sadly.",
                chunk_delay_s=0.1,
                drop_after_chunks=6,
            ),
            ScriptedReply(content=ANSWER),
        ],
    )

    items = await collect(client.stream_message(agent.id, message_request("Hi", stream_tokens=True)))

    marks = [i for i in items if isinstance(i.event, AttemptStarted)]
    assert len(marks) == 1 and marks[0].event.attempt == 2  # type: ignore[union-attr]
    before = [i.event for i in items if i.offset < marks[0].offset and isinstance(i.event, AssistantMessage)]
    assert before and "".join(c.content for c in before).startswith("This first answer"), (
        "the partial output was streamed"
    )
    assert_the_stored_answer_follows_the_mark(items, db, agent.id)


async def test_asking_again_after_an_overflow_marks_what_the_first_request_streamed_as_void(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """Some servers report the overflow inside the stream, after tokens went out; the loop
    compacts and asks again, and the new request's output must not be appended to the old."""
    agent = summarizing_agent(make_agent, model_name, llm)
    await warm_up(client, llm, model_name, agent.id, 3)
    llm.script(
        model_name,
        [
            ScriptedReply(content="An answer that the server cuts off", error_after_chunks=3, error=OVERFLOW),
            ScriptedReply(content=ANSWER),
        ],
    )

    items = await collect(client.stream_message(agent.id, message_request("question 3", stream_tokens=True)))

    marks = [i.event for i in items if isinstance(i.event, AttemptStarted)]
    assert [(m.attempt, m.request) for m in marks] == [(1, 2)]  # type: ignore[union-attr]
    assert_the_stored_answer_follows_the_mark(items, db, agent.id)


async def test_a_stream_across_an_approval_pause_and_its_continuation(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(
        model_name,
        [call("core_memory_append", "call_ask", label="human", content="Ada"), ScriptedReply(content="Saved.")],
    )

    paused = await collect(client.stream_message(agent.id, message_request("Remember me as Ada", stream_tokens=True)))
    assert kinds(paused)[-3:] == ["approval_request_message", "stop_reason", "usage_statistics"]
    assert "tool_call_message" not in kinds(paused), "a held call streams as the approval request, as in Letta"
    with db.transaction(read_only=True) as session:
        [stored_request] = [m for m in messages.list_messages(session, agent.id) if m.role == "approval"]
    chunks = [i.event for i in paused if i.event.message_type == "approval_request_message"]
    assert {c.id for c in chunks} == {stored_request.id}  # type: ignore[union-attr]
    assert "".join(c.tool_call.arguments for c in chunks) == stored_request.tool_calls[0].arguments  # type: ignore[union-attr]
    assert paused[-2].event == LettaStopReason(stop_reason=StopReasonType.requires_approval)
    assert await collect(client.follow(agent.id, paused[-1].offset + 1)) == [], (
        "follow returns at a pause with nothing new"
    )

    resumed = await collect(client.stream_answer(agent.id, [ApprovalAnswer(tool_call_id="call_ask", approve=True)]))

    assert resumed[0].offset == paused[-1].offset + 1, "the continuation reads on in the same stream"
    assert kinds(resumed) == [
        "approval_response_message",
        "tool_return_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    assert resumed[-2].event == LettaStopReason(stop_reason=StopReasonType.end_turn)
    whole = await collect(client.follow(agent.id))
    assert whole == paused + resumed, "follow from 0 replays through the pause to the end"


@pytest.mark.parametrize("tokens", [True, False])
async def test_an_error_mid_stream_ends_with_a_stop_reason_and_an_error_event(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, tokens: bool
) -> None:
    """With tokens, the provider fails after its first chunks; without, before any (HTTP 400)."""
    agent = make_agent()
    error = {"message": "the prompt broke a rule", "type": "invalid_request_error"}
    if tokens:
        llm.script(
            model_name,
            [
                ScriptedReply(
                    content="Starting to answer and then failing.", error_after_chunks=3, error=error, chunk_delay_s=0.1
                )
            ],
        )
    else:
        llm.script(model_name, [ScriptedReply(status=400, error={"error": error})])

    items = await collect(client.stream_message(agent.id, message_request("Hi", stream_tokens=tokens)))

    if tokens:
        assert "".join(i.event.content for i in items if isinstance(i.event, AssistantMessage)).startswith("Starting")
    assert kinds(items)[-2:] == ["stop_reason", "error_message"]
    assert items[-2].event == LettaStopReason(stop_reason=StopReasonType.llm_api_error)
    failure = items[-1].event
    assert isinstance(failure, LettaErrorMessage)
    assert failure.error_type == "llm_error" and failure.message == "An error occurred during agent execution."
    assert failure.detail is not None and "the prompt broke a rule" in failure.detail
    assert await collect(client.follow(agent.id)) == items, "the failed run's stream can still be read"


async def test_follow_needs_a_run(client: PerdureClient, make_agent: AgentFactory) -> None:
    agent = make_agent()
    with pytest.raises(NoRunError, match="has no run yet"):
        await collect(client.follow(agent.id))


async def test_reading_a_run_by_id_from_an_offset(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content="One answer.")])
    everything = await collect(client.stream_message(agent.id, message_request("Hi")))

    tail = await collect(read_stream(client.temporal, client.db, agent.id, 1))

    assert tail == everything[1:]


async def test_with_parallel_calls_off_only_the_call_that_runs_is_streamed(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory, db: Database
) -> None:
    """A server that ignores `parallel_tool_calls: false` sends two calls; the loop keeps one."""
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}], tools=["core_memory_append"])
    first = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "Ada"}, id="")
    second = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "Bob"}, id="")
    llm.script(model_name, [ScriptedReply(tool_calls=[first, second]), ScriptedReply(content="Done.")])

    items = await collect(client.stream_message(agent.id, message_request("Remember", stream_tokens=True)))

    with db.transaction(read_only=True) as session:
        [kept] = [c for m in messages.list_messages(session, agent.id) for c in m.tool_calls]
    call_chunks = [i.event for i in items if isinstance(i.event, ToolCallMessage)]
    assert {c.tool_call.tool_call_id for c in call_chunks} == {kept.id}, (
        "the id made for an id-less call is the stored one"
    )
    assert "".join(c.tool_call.arguments for c in call_chunks) == kept.arguments


async def test_answers_to_a_timed_out_pause_stream_the_resumed_run(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    agent = approval_agent(make_agent, "core_memory_append")
    llm.script(
        model_name,
        [
            call("core_memory_append", "call_late", label="human", content="Ada"),
            ScriptedReply(content="Saved at last."),
        ],
    )
    paused = await collect(
        client.stream_message(
            agent.id, message_request("Remember me", approval_timeout_seconds=0.5, stream_tokens=True)
        )
    )
    assert paused[-2].event == LettaStopReason(stop_reason=StopReasonType.requires_approval)
    await client.temporal.get_workflow_handle(f"{agent.id}").result()  # the run ends at its timeout

    resumed = await collect(client.stream_answer(agent.id, [ApprovalAnswer(tool_call_id="call_late", approve=True)]))

    assert resumed[0].offset == 0, "a new run, so a new stream"
    assert kinds(resumed) == [
        "approval_response_message",
        "tool_return_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    assert "".join(i.event.content for i in resumed if isinstance(i.event, AssistantMessage)) == "Saved at last."


async def test_follow_a_named_run_after_the_next_has_started(
    client: PerdureClient, llm: ScriptedLLMServer, model_name: str, make_agent: AgentFactory
) -> None:
    """Offsets count within a run: a client resuming run 1 after run 2 began names run 1."""
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content="First answer."), ScriptedReply(content="Second answer.")])
    first = await collect(client.stream_message(agent.id, message_request("one")))
    second = await collect(client.stream_message(agent.id, message_request("two")))
    first_run = first[-1].event.run_ids[0]  # type: ignore[union-attr]

    resumed = await collect(client.follow(agent.id, 1, run_id=first_run))

    assert resumed == first[1:]
    assert await collect(client.follow(agent.id, 1)) == second[1:], "without --run: the latest run"
    with pytest.raises(NoRunError, match="has no run run-missing"):
        await collect(client.follow(agent.id, run_id="run-missing"))
