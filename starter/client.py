"""A small Python client: start runs by update-with-start and read their results from the store.

PerdureClient is what the CLI, the HTTP API, the benchmarks and the tests hold; its methods
say what a caller can do. How a run is started or answered is in starter/run_starts.py, how
its stream is read in starter/client_streams.py, and what is read of a run before either in
starter/agent_runs.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError

from perdure.convert import to_letta_messages
from perdure.schemas.approvals import Answer, AnswerRequest, ApprovalCreate, ClientTool, PendingApproval, PendingCall
from perdure.schemas.letta import LettaResponse, LettaStopReason
from perdure.schemas.run import CompactMode, CompactOutput, CompactRequest, RunResult, RunState, SendMessageRequest
from perdure.settings import Settings
from perdure.store import agents, messages
from perdure.store.db import Database, get_database
from starter import agent_runs, client_streams, run_starts
from starter.outages import DEFAULT_TIMEOUT_S, ride_through
from starter.stream import StreamItem
from starter.turns import ended_run_for, stored_outcome, unfinished_line
from starter.updates import AlreadySentError, RunRejectedError, failure_reason, message_request, update_outcome
from worker import connect
from perdure import names


class PerdureClient:
    def __init__(
        self, temporal: Client, db: Database, task_queue: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.temporal = temporal
        self.db = db
        self.task_queue = task_queue
        self.timeout_s = timeout_s
        """How long a send rides through a Temporal outage before it gives up."""

    @classmethod
    async def connect(cls, settings: Settings | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> PerdureClient:
        settings = settings or Settings.from_env()
        return cls.using(await connect(settings), settings, timeout_s=timeout_s)

    @classmethod
    def using(cls, temporal: Client, settings: Settings, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> PerdureClient:
        """A client on a connection the caller already has (`perdure dev` shares its worker's)."""
        return cls(temporal, get_database(settings.database_url), settings.task_queue, timeout_s=timeout_s)

    async def send_message(
        self,
        agent_id: str,
        text: str,
        *,
        max_steps: int | None = None,
        client_tools: list[ClientTool] | None = None,
        approval_timeout_seconds: float | None = None,
    ) -> LettaResponse:
        request = message_request(
            text, max_steps=max_steps, client_tools=client_tools, approval_timeout_seconds=approval_timeout_seconds
        )
        return self.response(await self.start_run(agent_id, request))

    async def answer(self, agent_id: str, answers: list[Answer]) -> LettaResponse:
        """Answer pending calls through the validated update; returns when the run stops or
        pauses again. A bad answer raises RunRejectedError with Letta's wording. When the run
        has ended meanwhile (its approval timeout), the answers open a new request instead
        (Letta's resume path; the begin activity checks them against the stored request).
        Transport errors are retried until `timeout_s`: the same answers are one update id, and
        answers are deduplicated by tool call id, so they are never taken twice."""
        agent_runs.require_agent(self.db, agent_id)

        async def attempt() -> RunResult | None:
            request = AnswerRequest(approvals=answers)
            update = await run_starts.deliver_answers(
                self.temporal, self.db, agent_id, request, WorkflowUpdateStage.COMPLETED
            )
            return None if update is None else await update_outcome(update)

        result = await ride_through(
            attempt,
            timeout_s=self.timeout_s,
            gave_up=lambda err: unfinished_line(self.db, agent_id, None, self.timeout_s, err),
        )
        if result is None:
            result = await self.start_run(agent_id, SendMessageRequest(messages=[ApprovalCreate(approvals=answers)]))
        return self.response(result)

    async def compact(self, agent_id: str, mode: CompactMode = "sliding_window") -> CompactOutput:
        """Compact the agent's context now, through its workflow (so never during a step)."""
        with self.db.transaction(read_only=True) as session:
            agent = agents.get_agent(session, agent_id)
        operation = run_starts.start_operation(self.task_queue, agent_id, agent.name, "compact the context")
        try:
            return await self.temporal.execute_update_with_start_workflow(
                names.COMPACT_UPDATE,
                CompactRequest(mode=mode),
                result_type=CompactOutput,
                start_workflow_operation=operation,
            )
        except WorkflowUpdateFailedError as err:
            raise RunRejectedError(failure_reason(err)) from err

    async def pending_calls(self, agent_id: str) -> list[PendingCall]:
        """What the agent waits for: the live run's pending calls, else a request an ended run
        left unanswered in the context."""
        if await self.has_live_run(agent_id):
            state = await self.state(agent_id)
            return state.pending_approval.calls if state and state.pending_approval else []
        stored = agent_runs.unanswered_request(self.db, agent_id)
        return stored.waiting if stored else []

    async def has_live_run(self, agent_id: str) -> bool:
        return await agent_runs.has_live_run(self.temporal, agent_id)

    async def signal(self, agent_id: str, name: str, payload: dict[str, Any]) -> None:
        """Deliver an answer as a signal and return at once (what `--no-wait` and the UI do)."""
        agent_runs.require_agent(self.db, agent_id)
        handle = self.temporal.get_workflow_handle(names.workflow_id(agent_id))
        try:
            await handle.signal(name, payload)
        except RPCError as err:
            raise RunRejectedError(
                f"agent {agent_id} has no live run to signal; answer without --no-wait to resume a pending request in a new run"
            ) from err

    async def cancel(self, agent_id: str) -> RunState:
        """Cancel the live run and wait until it has ended `cancelled`."""
        agent_runs.require_agent(self.db, agent_id)
        handle = self.temporal.get_workflow_handle(names.workflow_id(agent_id))
        try:
            description = await handle.describe()
        except RPCError as err:
            raise RunRejectedError(f"agent {agent_id} has no run to cancel") from err
        status = description.status
        if status is not WorkflowExecutionStatus.RUNNING:
            last = status.name.lower() if status is not None else "unknown"
            raise RunRejectedError(f"agent {agent_id} has no live run to cancel (its last run is {last})")
        await handle.cancel()
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        state = await self.state(agent_id)
        assert state is not None
        return state

    async def start_run(self, agent_id: str, request: SendMessageRequest) -> RunResult:
        """Start a run and wait until it stops or pauses.

        Sending the same request again (the same `otid`s) never runs its turn twice: while the
        run lives, the update id joins it; once it has ended, its stored outcome is returned.
        Transport errors are retried until `timeout_s`, which is what makes that matter.
        """
        turn = request.turn_key
        earlier = ended_run_for(self.db, agent_id, turn) if turn else None
        if earlier is not None:
            return earlier

        async def attempt() -> RunResult:
            update = await run_starts.start_update(
                self.temporal, self.db, agent_id, request, WorkflowUpdateStage.COMPLETED, task_queue=self.task_queue
            )
            return await update_outcome(update)

        try:
            return await ride_through(
                attempt,
                timeout_s=self.timeout_s,
                gave_up=lambda err: unfinished_line(self.db, agent_id, turn, self.timeout_s, err),
            )
        except AlreadySentError as sent:
            return stored_outcome(self.db, agent_id, sent.run_id)

    async def stream_message(self, agent_id: str, request: SendMessageRequest) -> AsyncIterator[StreamItem]:
        """Start a run and yield its stream until it stops or pauses (`perdure send --stream`)."""
        async for item in await self.open_stream(agent_id, request):
            yield item

    async def open_stream(self, agent_id: str, request: SendMessageRequest) -> AsyncIterator[StreamItem]:
        """Start a run now, so a refusal raises here, and return its stream to read (the HTTP
        API answers a refusal with an error status before any event is sent). A request whose
        turn a run already took (the same `otid`s) returns that run's stream."""
        return await client_streams.open_stream(
            self.temporal, self.db, agent_id, request, task_queue=self.task_queue, timeout_s=self.timeout_s
        )

    async def stream_answer(self, agent_id: str, answers: list[Answer]) -> AsyncIterator[StreamItem]:
        """Answer pending calls and yield the continuation's stream (`perdure approve --stream`)."""
        async for item in await self.open_answer_stream(agent_id, answers):
            yield item

    async def open_answer_stream(
        self, agent_id: str, answers: list[Answer], stream_tokens: bool = True
    ) -> AsyncIterator[StreamItem]:
        """Deliver the answers now (a bad answer raises here) and return the continuation's
        stream. When the run has ended meanwhile (its approval timeout), the answers resume the
        pending request in a new run, as `answer` does."""
        return await client_streams.open_answer_stream(
            self.temporal,
            self.db,
            agent_id,
            answers,
            stream_tokens=stream_tokens,
            task_queue=self.task_queue,
            timeout_s=self.timeout_s,
        )

    def follow(self, agent_id: str, from_offset: int = 0, run_id: str | None = None) -> AsyncIterator[StreamItem]:
        """A run's stream (the latest run, or `run_id`) from `from_offset`: what happened so far,
        then live events until the run stops, or until it waits for a person with nothing more
        to show. A Temporal outage is ridden through: reading resumes after the last event seen,
        until `timeout_s`."""
        return client_streams.follow(self.temporal, self.db, agent_id, from_offset, run_id, timeout_s=self.timeout_s)

    def response(self, result: RunResult) -> LettaResponse:
        """Letta's response shape: the messages this outcome added (since the send or the pause)."""
        with self.db.transaction(read_only=True) as session:
            stored = messages.load_messages(session, result.message_ids)
        return LettaResponse(
            run_id=result.run_id,
            messages=to_letta_messages(stored),
            stop_reason=LettaStopReason(stop_reason=result.stop_reason),
            usage=result.usage,
        )

    async def status(self, agent_id: str) -> RunState | None:
        """The latest run's state; when no run is live but the agent's context holds a request
        an ended run left unanswered (its approval timeout), that request is what is pending."""
        state = await self.state(agent_id)
        if state is None or state.pending_approval is not None or await self.has_live_run(agent_id):
            return state
        stored = agent_runs.unanswered_request(self.db, agent_id)
        if stored is None:
            return state
        pending = PendingApproval(since=stored.since, step_id=stored.step_id, calls=stored.waiting)
        return state.model_copy(update={"pending_approval": pending})

    async def state(self, agent_id: str) -> RunState | None:
        """The latest run's state from its workflow, or None when the agent never ran."""
        return await agent_runs.run_state(self.temporal, agent_id)
