"""The run workflow: one execution per run of an agent's loop, workflow id `agent-{uuid}`.

A run starts with update-with-start `send_message`; the update returns when the run stops or
pauses for a person. Each step is an LLM request activity, one tool activity per call, and one
checkpoint activity that commits the step. Only ids and the step's new messages enter history;
the context stays in the database.

A call that needs approval, or a client-side tool, pauses the run: the step's messages are
committed with the calls held in an approval request, the caller gets `requires_approval`, and
the workflow waits (durably, for as long as it takes) for an answer per call, by signal
(`approve`, `deny`, `client_tool_return`) or by the `answer` update.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from perdure.approvals import pending_message
    from perdure.schemas.approvals import AnswerRequest
    from perdure.schemas.letta import RunStatus, StopReasonType
    from perdure.schemas.run import (
        BeginRunInput,
        BeginRunOutput,
        CompactOutput,
        CompactRequest,
        FinishRunInput,
        RunResult,
        RunState,
        RunWorkflowInput,
        SendMessageRequest,
        StepRecord,
    )

from perdure import names

from workflows import activity_calls, handlers
from workflows.drafts import messages_on_cancel
from workflows.failures import failure_text, reraise_cancellation
from workflows.mcp_tools import with_mcp_tools
from workflows.policies import FIRST_MESSAGE_TIMEOUT
from workflows.run_context import RunContext
from workflows.search_attributes import AGENT_ID, AGENT_NAME, PERDURE_RUN_ID, RUN_STATUS, STOP_REASON
from workflows.step_loop import StepLoop
from workflows.stream_events import STREAM_IN_STORE_PATCH
from workflows.waiting import wait_for

RUN_ID_SEARCH_ATTRIBUTE = "run-id-search-attribute"
AGENT_NAME_SEARCH_ATTRIBUTE = "agent-name-search-attribute"


@workflow.defn(name=names.WORKFLOW)
class AgentRunWorkflow:
    @workflow.init
    def __init__(self, input: RunWorkflowInput) -> None:
        self._run = RunContext(input.agent_id)
        self._finished = False
        self._rejection: ApplicationError | None = None
        self._compacting = False
        self._maintenance_done = False

    @workflow.run
    async def run(self, input: RunWorkflowInput) -> RunResult | None:
        run = self._run
        if not await wait_for(lambda: run.request is not None or self._maintenance_done, FIRST_MESSAGE_TIMEOUT):
            raise ApplicationError(
                "this workflow was started without a send_message update; start runs with `perdure send`",
                non_retryable=True,
            )
        if run.request is None:  # started by `compact` alone: nothing else to do
            await self._wait_for_handlers()
            return None
        assert run.run_id is not None
        cancelled = False
        try:
            await self._run_loop(run.request, run.run_id)
        except asyncio.CancelledError:
            cancelled = True
            await self._on_cancel()
        await self._wait_for_handlers()
        if cancelled:
            raise asyncio.CancelledError(f"run {run.run_id} was cancelled")
        result = run.outcomes.latest
        if result is not None and result.status is RunStatus.failed:
            raise ApplicationError(
                f"run {result.run_id} failed ({result.stop_reason.value}): {result.error}",
                result.model_dump(mode="json"),
                type="RunFailed",
                non_retryable=True,
            )
        return result

    # --- handlers ---------------------------------------------------------------------------

    @workflow.update(name=names.SEND_MESSAGE, description=handlers.SEND_MESSAGE)
    async def send_message(self, request: SendMessageRequest) -> RunResult:
        run = self._run
        run.request = request
        run.stream_tokens = request.stream_tokens
        run.run_id = f"run-{workflow.uuid4()}"
        await workflow.wait_condition(lambda: run.outcomes.count > 0 or self._rejection is not None)
        if self._rejection is not None:
            raise self._rejection
        assert run.outcomes.latest is not None
        return run.outcomes.latest

    @send_message.validator
    def _validate_send_message(self, request: SendMessageRequest) -> None:
        """Reject a message the live run cannot take: the caller learns why, history stays clean."""
        run = self._run
        if run.answers.request is not None:
            raise ApplicationError(pending_message(run.answers.request.calls), type="PendingApproval")
        if self._compacting:
            raise ApplicationError(
                f"agent {run.agent_id} is being compacted; send the message when it is done", type="AgentBusy"
            )
        if self._maintenance_done:
            raise ApplicationError(
                f"agent {run.agent_id} has just been compacted; send the message again", type="RunFinishing"
            )
        if self._finished:
            raise ApplicationError(
                f"agent {run.agent_id} is finishing run {run.run_id}; send the message again", type="RunFinishing"
            )
        if run.request is not None:
            raise ApplicationError(
                f"agent {run.agent_id} is busy with run {run.run_id} ({run.current}); "
                f"wait for it to finish or check `perdure status {run.agent_id}`",
                type="AgentBusy",
            )

    @workflow.update(name=names.COMPACT_UPDATE, description=handlers.COMPACT)
    async def compact(self, request: CompactRequest) -> CompactOutput:
        """Compact the context on demand: between runs, or while a run waits for a person (a
        pending approval is never evicted)."""
        self._compacting, shown = True, self._run.current
        try:
            result = await self._run.compact(request.mode, "requested (perdure compact)")
            if result.system_overflow:
                self._run.error = result.detail
            return result
        finally:
            self._compacting = False
            self._maintenance_done = self._run.request is None
            if self._run.answers.request is not None:
                self._run.show_pending(self._run.answers.request, shown)
            else:
                self._run.show(shown)

    @compact.validator
    def _validate_compact(self, request: CompactRequest) -> None:
        run = self._run
        if self._compacting:
            raise ApplicationError(f"agent {run.agent_id} is already being compacted", type="AgentBusy")
        if self._finished:
            raise ApplicationError(
                f"agent {run.agent_id} is finishing run {run.run_id}; compact again", type="RunFinishing"
            )
        if run.request is not None and run.answers.request is None:
            raise ApplicationError(
                f"agent {run.agent_id} is busy with run {run.run_id} ({run.current}); compact when it has stopped",
                type="AgentBusy",
            )

    @workflow.update(name=names.ANSWER, description=handlers.ANSWER)
    async def answer(self, request: AnswerRequest) -> RunResult:
        """Answer pending calls; returns when the run stops or pauses again."""
        run = self._run
        seen = run.outcomes.count
        run.stream_tokens = run.stream_tokens or request.stream_tokens
        run.answers.record(request.approvals)
        self._show_answers()
        await workflow.wait_condition(lambda: run.outcomes.count > seen)
        assert run.outcomes.latest is not None
        return run.outcomes.latest

    @answer.validator
    def _validate_answer(self, request: AnswerRequest) -> None:
        problem = self._run.answers.problem_with(request.approvals)
        if problem is not None:
            raise ApplicationError(problem, type="InvalidApproval")

    @workflow.signal(name=names.APPROVE_SIGNAL, description=handlers.APPROVE)
    def approve(self, payload: Any = None) -> None:
        """Approve one call (`{"tool_call_id": ...}`), or every pending approval without an id."""
        self._run.answers.receive(names.APPROVE_SIGNAL, payload, workflow.now())
        self._show_answers()

    @workflow.signal(name=names.DENY_SIGNAL, description=handlers.DENY)
    def deny(self, payload: Any = None) -> None:
        """Deny one call: `{"tool_call_id": ..., "reason": ...}`."""
        self._run.answers.receive(names.DENY_SIGNAL, payload, workflow.now())
        self._show_answers()

    @workflow.signal(name=names.CLIENT_TOOL_RETURN_SIGNAL, description=handlers.CLIENT_TOOL_RETURN)
    def client_tool_return(self, payload: Any = None) -> None:
        """A client tool's result: `{"tool_call_id": ..., "status": ..., "tool_return": ...}`."""
        self._run.answers.receive(names.CLIENT_TOOL_RETURN_SIGNAL, payload, workflow.now())
        self._show_answers()

    def _show_answers(self) -> None:
        """While calls still wait, the current details mark the ones answered so far."""
        run = self._run
        if run.answers.request is not None and not run.answers.complete:
            run.show_pending(run.answers.request, run.current)

    @workflow.query(name=names.STATE_QUERY, description=handlers.STATE)
    def state(self) -> RunState:
        return self._run.state()

    # --- the run's life ---------------------------------------------------------------------

    async def _run_loop(self, request: SendMessageRequest, run_id: str) -> None:
        begun = await self._begin(request, run_id)
        if begun is None:
            return
        try:
            begun = await with_mcp_tools(begun, run_id)
        except ActivityError as err:
            reraise_cancellation(err)
            self._run.error = failure_text(err)
            await self._finish(StopReasonType.error, None)
            return
        self._run.agent_name = begun.agent.name
        if workflow.patched(AGENT_NAME_SEARCH_ATTRIBUTE):
            workflow.upsert_search_attributes([AGENT_NAME.value_set(begun.agent.name)])
        self._run.context_window = begun.agent.llm_config.context_window
        ended = await StepLoop(self._run, begun, request, run_id).run()
        assert ended.stop is not None
        if ended.error is not None:
            self._run.error = ended.error
        if ended.error_type is not None:
            self._run.failure_type = ended.error_type
        await self._finish(ended.stop, ended.failed_step)

    async def _begin(self, request: SendMessageRequest, run_id: str) -> BeginRunOutput | None:
        run = self._run
        run.status = RunStatus.running
        attributes = [AGENT_ID.value_set(run.agent_id), RUN_STATUS.value_set(run.status.value)]
        if workflow.patched(RUN_ID_SEARCH_ATTRIBUTE):
            attributes.append(PERDURE_RUN_ID.value_set(run_id))
        run.stream_in_store = workflow.patched(STREAM_IN_STORE_PATCH)
        workflow.upsert_search_attributes(attributes)
        run.show("starting")
        try:
            return await activity_calls.begin_run(
                BeginRunInput(
                    agent_id=run.agent_id, run_id=run_id, request=request, workflow_id=workflow.info().workflow_id
                )
            )
        except (ActivityError, ApplicationError) as err:
            reraise_cancellation(err)
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError) and cause.type in (names.REQUEST_REJECTED, names.ALREADY_SENT):
                # ALREADY_SENT keeps its detail, the earlier run's id, for the client.
                details = cause.details if cause.type == names.ALREADY_SENT else ()
                self._rejection = ApplicationError(cause.message, *details, type=cause.type)
                self._finished = True
                run.show(f"request refused: {cause.message}")
                return None
            run.error = failure_text(err)
            await self._finish(StopReasonType.error, None)
            return None

    async def _on_cancel(self) -> None:
        """Commit what the interrupted step owes the context, then end the run `cancelled`."""
        run = self._run
        run.show("cancelling")
        draft, run.draft = run.draft, None
        answered = run.answers.close() if run.answers.request is not None else None
        if draft is not None:
            messages = messages_on_cancel(draft, answered, run.new_message_id, workflow.now(), run.context_window)
            if messages:
                await run.checkpoint(
                    messages,
                    draft.step.model_copy(update={"status": "cancelled", "stop_reason": StopReasonType.cancelled}),
                )
        await self._finish(StopReasonType.cancelled, None)

    async def _finish(self, stop_reason: StopReasonType, failed_step: StepRecord | None) -> None:
        run = self._run
        assert run.run_id is not None
        run.stop_reason = stop_reason
        run.status = stop_reason.run_status
        self._finished = True
        run.show(f"finished: {stop_reason.value}")
        await activity_calls.finish_run(
            FinishRunInput(
                agent_id=run.agent_id,
                run_id=run.run_id,
                stop_reason=stop_reason,
                usage=run.usage,
                error=run.error,
                finished_at=workflow.now(),
                failed_step=failed_step,
                stream_events=run.outcome_events(stop_reason, final=True) if run.stream_in_store else [],
            )
        )
        workflow.upsert_search_attributes(
            [RUN_STATUS.value_set(run.status.value), STOP_REASON.value_set(stop_reason.value)]
        )
        run.publish(stop_reason, final=True)

    async def _wait_for_handlers(self) -> None:
        """Let the updates that wait for an outcome return; stream subscribers are released
        first (they read the rest through the stream's query once the run has closed)."""
        self._run.outcomes.release_readers()
        await workflow.wait_condition(workflow.all_handlers_finished)
