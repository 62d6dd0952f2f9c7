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
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from perdure.approvals import apply_answers, pending_message
    from perdure.schemas.approvals import AnswerRequest, PendingApproval, PendingCall
    from perdure.providers.base import ContextWindowExceededError
    from perdure.schemas.agent import DEFAULT_CONTEXT_WINDOW
    from perdure.schemas.letta import LettaUsageStatistics, RunStatus, StopReasonType
    from perdure.schemas.messages import Message, TextContent, ToolCall
    from perdure.schemas.run import (
        AgentSnapshot,
        BeginRunInput,
        BeginRunOutput,
        CheckpointInput,
        CompactInput,
        CompactOutput,
        CompactRequest,
        FinishRunInput,
        LLMStepInput,
        LLMStepOutput,
        RunResult,
        RunState,
        RunWorkflowInput,
        SendMessageRequest,
        StepRecord,
    )
    from perdure.store.pending import KEEP_ALIVE
    from perdure.compaction import estimate_next_request, needs_compaction
    from perdure.tool_rules import ToolRulesSolver

from workflows import names
from workflows.answers import AnswerBook
from workflows.decisions import after_text_answer, after_tool_calls, prepare_tool_calls, stop_reason_for_llm_error
from workflows.drafts import (
    StepDraft,
    answered_return,
    approval_request,
    approval_response,
    assistant_message,
    heartbeat,
    messages_on_cancel,
    tool_message,
)
from workflows import activity_calls
from workflows.policies import FIRST_MESSAGE_TIMEOUT
from workflows.tool_runner import ToolRunner
from workflows.search_attributes import AGENT_ID, PERDURE_RUN_ID, RUN_STATUS, STOP_REASON
from workflows.outcomes import RunOutcomes, outcome
from workflows.stream_events import stream_tokens_now

CONTEXT_WINDOW_EXCEEDED = ContextWindowExceededError.error_type
ANSWER_IDS_BEFORE_REQUEST = "answer-ids-before-request"
RUN_ID_SEARCH_ATTRIBUTE = "run-id-search-attribute"
MAX_OVERFLOW_COMPACTIONS = 3
HEARTBEAT_TOKENS = 60


class ContextOverflow(Exception):
    """Compaction cannot make room: the run stops with `stop`."""

    def __init__(self, stop: StopReasonType) -> None:
        super().__init__(stop.value)
        self.stop = stop


@workflow.defn(name=names.WORKFLOW)
class AgentRunWorkflow:
    @workflow.init
    def __init__(self, input: RunWorkflowInput) -> None:
        self._agent_id = input.agent_id
        self._request: SendMessageRequest | None = None
        self._run_id: str | None = None
        self._status = RunStatus.created
        self._step = 0
        self._current = "waiting for a message"
        self._stop_reason: StopReasonType | None = None
        self._usage = LettaUsageStatistics()
        self._error: str | None = None
        self._failure_type: str | None = None
        self._stream_tokens = False
        self._tokens_streamed = False
        """Whether this step's answer went out as token chunks (then it is not published whole)."""
        self._finished = False
        self._rejection: ApplicationError | None = None
        self._answers = AnswerBook()
        self._compacting = False
        self._maintenance_done = False
        self._draft: StepDraft | None = None
        self._context_window = DEFAULT_CONTEXT_WINDOW
        self._solver = ToolRulesSolver([], [])
        self._tools: ToolRunner  # made once the agent is known (_run_loop)
        self._outcomes = RunOutcomes()

    @workflow.run
    async def run(self, input: RunWorkflowInput) -> RunResult | None:
        if not await self._wait(lambda: self._request is not None or self._maintenance_done, FIRST_MESSAGE_TIMEOUT):
            raise ApplicationError(
                "this workflow was started without a send_message update; start runs with `perdure send`",
                non_retryable=True,
            )
        if self._request is None:  # started by `compact` alone: nothing else to do
            await self._wait_for_handlers()
            return None
        assert self._run_id is not None
        cancelled = False
        try:
            await self._run_loop(self._request, self._run_id)
        except asyncio.CancelledError:
            cancelled = True
            await self._on_cancel(self._run_id)
        await self._wait_for_handlers()
        if cancelled:
            raise asyncio.CancelledError(f"run {self._run_id} was cancelled")
        result = self._outcomes.latest
        if result is not None and result.status is RunStatus.failed:
            raise ApplicationError(
                f"run {result.run_id} failed ({result.stop_reason.value}): {result.error}",
                result.model_dump(mode="json"),
                type="RunFailed",
                non_retryable=True,
            )
        return result

    # --- handlers ---------------------------------------------------------------------------

    @workflow.update(name=names.SEND_MESSAGE)
    async def send_message(self, request: SendMessageRequest) -> RunResult:
        self._request = request
        self._stream_tokens = request.stream_tokens
        self._run_id = f"run-{workflow.uuid4()}"
        await workflow.wait_condition(lambda: self._outcomes.count > 0 or self._rejection is not None)
        if self._rejection is not None:
            raise self._rejection
        assert self._outcomes.latest is not None
        return self._outcomes.latest

    @send_message.validator
    def _validate_send_message(self, request: SendMessageRequest) -> None:
        """Reject a message the live run cannot take: the caller learns why, history stays clean."""
        if self._answers.pending is not None:
            raise ApplicationError(pending_message(self._answers.pending.calls), type="PendingApproval")
        if self._compacting:
            raise ApplicationError(f"agent {self._agent_id} is being compacted; send the message when it is done", type="AgentBusy")
        if self._maintenance_done:
            raise ApplicationError(f"agent {self._agent_id} has just been compacted; send the message again", type="RunFinishing")
        if self._finished:
            raise ApplicationError(f"agent {self._agent_id} is finishing run {self._run_id}; send the message again", type="RunFinishing")
        if self._request is not None:
            raise ApplicationError(
                f"agent {self._agent_id} is busy with run {self._run_id} ({self._current}); "
                f"wait for it to finish or check `perdure status {self._agent_id}`",
                type="AgentBusy",
            )

    @workflow.update(name=names.COMPACT_UPDATE)
    async def compact(self, request: CompactRequest) -> CompactOutput:
        """Compact the context on demand: between runs, or while a run waits for a person (a
        pending approval is never evicted)."""
        self._compacting, shown = True, self._current
        try:
            return await self._compact(request.mode, "requested (perdure compact)")
        finally:
            self._compacting = False
            self._maintenance_done = self._request is None
            self._set_current(shown)

    @compact.validator
    def _validate_compact(self, request: CompactRequest) -> None:
        if self._compacting:
            raise ApplicationError(f"agent {self._agent_id} is already being compacted", type="AgentBusy")
        if self._finished:
            raise ApplicationError(f"agent {self._agent_id} is finishing run {self._run_id}; compact again", type="RunFinishing")
        if self._request is not None and self._answers.pending is None:
            raise ApplicationError(
                f"agent {self._agent_id} is busy with run {self._run_id} ({self._current}); compact when it has stopped",
                type="AgentBusy",
            )

    @workflow.update(name=names.ANSWER)
    async def answer(self, request: AnswerRequest) -> RunResult:
        """Answer pending calls; returns when the run stops or pauses again."""
        seen = self._outcomes.count
        self._stream_tokens = self._stream_tokens or request.stream_tokens
        self._answers.record(request.approvals)
        await workflow.wait_condition(lambda: self._outcomes.count > seen)
        assert self._outcomes.latest is not None
        return self._outcomes.latest

    @answer.validator
    def _validate_answer(self, request: AnswerRequest) -> None:
        problem = self._answers.problem_with(request.approvals)
        if problem is not None:
            raise ApplicationError(problem, type="InvalidApproval")

    @workflow.signal(name=names.APPROVE_SIGNAL)
    def approve(self, payload: Any = None) -> None:
        """Approve one call (`{"tool_call_id": ...}`), or every pending approval without an id."""
        self._answers.receive(names.APPROVE_SIGNAL, payload, workflow.now())

    @workflow.signal(name=names.DENY_SIGNAL)
    def deny(self, payload: Any = None) -> None:
        """Deny one call: `{"tool_call_id": ..., "reason": ...}`."""
        self._answers.receive(names.DENY_SIGNAL, payload, workflow.now())

    @workflow.signal(name=names.CLIENT_TOOL_RETURN_SIGNAL)
    def client_tool_return(self, payload: Any = None) -> None:
        """A client tool's result: `{"tool_call_id": ..., "status": ..., "tool_return": ...}`."""
        self._answers.receive(names.CLIENT_TOOL_RETURN_SIGNAL, payload, workflow.now())

    @workflow.query(name=names.STATE_QUERY)
    def state(self) -> RunState:
        return RunState(
            agent_id=self._agent_id,
            run_id=self._run_id,
            status=self._status,
            step=self._step,
            max_steps=self._request.max_steps if self._request else None,
            current=self._current,
            stop_reason=self._stop_reason,
            usage=self._usage,
            error=self._error,
            pending_approval=self._answers.pending,
            rejected=self._answers.rejected,
        )

    # --- the loop ---------------------------------------------------------------------------

    async def _run_loop(self, request: SendMessageRequest, run_id: str) -> None:
        begun = await self._begin(request, run_id)
        if begun is None:
            return
        agent = begun.agent
        self._context_window = agent.llm_config.context_window
        self._solver = ToolRulesSolver(agent.tool_rules, agent.tools)
        self._tools = ToolRunner(agent, self._solver, self._set_current)
        inputs = [self._user_message(m.content, m.otid, run_id) for m in request.user_messages]
        stop: StopReasonType | None = None
        if begun.stored_pending is not None and request.approval is not None:
            # The answers are a step of this run without an LLM call (number 0); the paused step
            # keeps its record in the run whose LLM call made it.
            stored = begun.stored_pending
            step = StepRecord(id=f"step-{workflow.uuid4()}", run_id=run_id, agent_id=self._agent_id, step_number=0)
            # A call was held only if the rules allowed it then; the fresh solver of this run
            # does not know that history, so the held calls join what it allows now.
            allowed = self._solver.allowed_tools()
            allowed += [p.name for p in stored.pending if p.name not in allowed]
            draft = StepDraft(step=step, calls=stored.calls, pending=apply_answers(stored.pending, request.approval.approvals), allowed=allowed)
            self._draft = draft
            stop = await self._after_answers(agent, draft)
        elif begun.answers_already_processed and not inputs:
            inputs = [self._user_message(KEEP_ALIVE, None, run_id)]
        failed: StepRecord | None = None
        for number in range(1, request.max_steps + 1):
            if stop is not None:
                break
            self._step = number
            stop, failed = await self._step_once(agent, request, run_id, number, inputs)
            inputs = []
        await self._finish(run_id, stop or StopReasonType.max_steps, failed, final=True)

    async def _step_once(
        self, agent: AgentSnapshot, request: SendMessageRequest, run_id: str, number: int, inputs: list[Message]
    ) -> tuple[StopReasonType | None, StepRecord | None]:
        """One LLM request and its tool calls. Returns (stop reason or None to go on, failed step)."""
        step = StepRecord(id=f"step-{workflow.uuid4()}", run_id=run_id, agent_id=self._agent_id, step_number=number, model=agent.llm_config.model)
        answer_id, approval_id = self._step_message_ids()
        self._tokens_streamed = stream_tokens_now(self._stream_tokens, workflow.info().get_current_history_length())
        started = workflow.now()
        allowed = self._solver.allowed_tools()
        self._draft = StepDraft(step=step, inputs=[m.model_copy(update={"step_id": step.id}) for m in inputs], allowed=allowed)
        self._set_current(f"llm request, step {number}")
        try:
            llm_input = LLMStepInput(
                agent_id=self._agent_id,
                run_id=run_id,
                step_id=step.id,
                step_number=number,
                pending=self._draft.inputs,
                allowed_tools=allowed,
                force_tool_call=self._solver.should_force_tool_call(),
                parallel_tool_calls=agent.parallel_allowed,
                client_tools=request.client_tools,
                message_id=answer_id,
                approval_message_id=approval_id,
                held_tools=sorted(agent.approval_tools & set(allowed) | {t.name for t in request.client_tools}),
                stream_tokens=self._tokens_streamed,
            )
            output = await self._request_with_room(agent, llm_input)
        except (ActivityError, ContextOverflow) as err:
            _reraise_cancellation(err)
            if isinstance(err, ContextOverflow):
                stop, error_type = err.stop, CONTEXT_WINDOW_EXCEEDED
            else:
                cause = err.cause
                error_type = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
                self._error = _failure_text(err)
                self._failure_type = error_type
                stop = stop_reason_for_llm_error(error_type)
            self._draft = None
            return stop, step.model_copy(update={"status": "failed", "stop_reason": stop, "error_type": error_type, "error": self._error})
        self._usage.add(output.usage.prompt_tokens, output.usage.completion_tokens, output.usage.cached_input_tokens, output.usage.reasoning_tokens)
        self._draft.step = step.model_copy(update={"usage": output.usage, "llm_request_ns": output.llm_request_ns})
        draft = self._draft
        try:
            return await self._act(agent, request, draft, started, output, (answer_id, approval_id)), None
        except (ActivityError, ApplicationError) as err:
            _reraise_cancellation(err)
            # A tool or the checkpoint failed past its retries (e.g. the database is down): end the
            # run with `error` rather than leave it running forever (Letta PR 2846).
            self._error = _failure_text(err)
            failed = draft.step.model_copy(update={"status": "failed", "stop_reason": StopReasonType.error, "error_type": "ActivityError", "error": self._error})
            self._draft = None
            return StopReasonType.error, failed

    async def _act(
        self, agent: AgentSnapshot, request: SendMessageRequest, draft: StepDraft, started: Any, output: LLMStepOutput, ids: tuple[str, str]
    ) -> StopReasonType | None:
        """Run the step's calls (or pause for the ones that need a person), then commit the step."""
        calls = prepare_tool_calls(output.tool_calls, parallel_allowed=agent.parallel_allowed, new_id=lambda: f"call_{workflow.uuid4().hex[:24]}")
        client_names = {t.name for t in request.client_tools}
        draft.allowed = [*draft.allowed, *sorted(client_names - set(draft.allowed))]
        held = [c for c in calls if c.name in draft.allowed and (c.name in client_names or c.name in agent.approval_tools)]
        draft.calls = calls
        if held:
            return await self._pause(agent, draft, output, held, client_names, ids)
        draft.assistant = assistant_message(output, calls, draft.step, ids[0] or self._new_message_id())
        tool_ns = None
        outcome = None
        if calls:
            outcome = await self._tools.run(draft, calls)
            tool_ns = outcome.tool_ns
            messages = [*draft.inputs, draft.assistant, tool_message(draft.calls, draft.returns, draft.step, self._new_message_id)]
            stop = self._after_calls(outcome.executed, outcome.blocked)
        else:
            messages = [*draft.inputs, draft.assistant]
            stop, reason = after_text_answer(output.finish_reason, self._solver.uncalled_required_before_exit())
            if reason is not None:
                messages.append(heartbeat(reason, draft.step, self._new_message_id, workflow.now()))
        step = draft.step.model_copy(update={"stop_reason": stop, "tool_execution_ns": tool_ns, "step_ns": _ns_since(started)})
        await self._checkpoint(messages, step)
        self._draft = None
        if stop is None or stop.run_status is RunStatus.completed:
            added = output.response_tokens + (outcome.tokens if outcome else 0) + (HEARTBEAT_TOKENS if len(messages) > len(draft.inputs) + 2 else 0)
            reported = output.usage.prompt_tokens if output.usage_reported else None
            if needs_compaction(estimate_next_request(reported, added, output.request_tokens + added), agent.llm_config.context_window):
                try:
                    result = await self._compact("sliding_window", "the next request would fill more than 90% of the context window")
                except (ActivityError, ApplicationError) as err:
                    # The step is committed; the run ends here with the reason (Letta: failed
                    # compaction is `error`), and the next run retries on its first overflow.
                    _reraise_cancellation(err)
                    self._error = f"compaction failed: {_failure_text(err)}"
                    return StopReasonType.error
                if result.system_overflow:
                    stop = StopReasonType.context_window_overflow_in_system_prompt
        return stop

    async def _request_with_room(self, agent: AgentSnapshot, llm_input: LLMStepInput) -> LLMStepOutput:
        """Ask the model; when the provider says the request is too long for its window, compact
        and ask again, up to MAX_OVERFLOW_COMPACTIONS times (the second time evicting all)."""
        for attempt in range(MAX_OVERFLOW_COMPACTIONS + 1):
            try:
                return await activity_calls.llm_step(llm_input, agent.llm_config.model_name)
            except ActivityError as err:
                cause = err.cause
                if not (isinstance(cause, ApplicationError) and cause.type == CONTEXT_WINDOW_EXCEEDED) or attempt == MAX_OVERFLOW_COMPACTIONS:
                    raise
                result = await self._compact("sliding_window" if attempt == 0 else "all", "the provider said the request is longer than the context window")
                if result.system_overflow:
                    raise ContextOverflow(StopReasonType.context_window_overflow_in_system_prompt) from err
                if result.evicted == 0:
                    raise  # nothing left to take out: asking again cannot help
        raise AssertionError("unreachable")

    async def _compact(self, mode: str, trigger: str) -> CompactOutput:
        """Compact the context. When even the system prompt does not fit, the error says what to shrink."""
        self._set_current(f"compacting the context ({mode})")
        result = await activity_calls.compact(
            CompactInput(
                agent_id=self._agent_id,
                run_id=self._run_id,
                mode=mode,
                summary_message_id=self._new_message_id(),
                event_message_id=self._new_message_id(),
                trigger=trigger,
            )
        )
        self._outcomes.stored(result.message_ids)
        if result.system_overflow:
            self._error = result.detail
        return result

    def _after_calls(self, executed: list[str], blocked: bool, *, answered_by_people: bool = False) -> StopReasonType | None:
        return after_tool_calls(
            blocked=blocked,
            terminal_ran=any(self._solver.is_terminal(name) for name in executed),
            uncalled_required=self._solver.uncalled_required_before_exit(),
            answered_by_people=answered_by_people,
        )

    async def _pause(
        self, agent: AgentSnapshot, draft: StepDraft, output: LLMStepOutput, held: list[ToolCall], client_names: set[str], ids: tuple[str, str]
    ) -> StopReasonType | None:
        """Commit the response with its held calls, answer the caller, and wait for the answers."""
        others = [c for c in draft.calls if c not in held]
        messages = list(draft.inputs)
        if others or output.content or output.reasoning:
            messages.append(assistant_message(output, others, draft.step, ids[0] or self._new_message_id()))
        client_ids = [c.id for c in held if c.name in client_names]
        messages.append(approval_request(held, client_ids, draft.step, ids[1] or self._new_message_id()))
        step = draft.step.model_copy(update={"stop_reason": StopReasonType.requires_approval})
        await self._checkpoint(messages, step)
        draft.inputs, draft.step = [], step
        draft.pending = [
            PendingCall(tool_call_id=c.id, name=c.name, arguments=c.arguments, kind="client_tool" if c.id in client_ids else "approval")
            for c in held
        ]
        return await self._after_answers(agent, draft)

    async def _after_answers(self, agent: AgentSnapshot, draft: StepDraft) -> StopReasonType | None:
        """Wait until every held call has an answer (or the approval timeout), then run the calls."""
        assert draft.pending is not None and self._request is not None and self._run_id is not None
        timeout_s = self._request.approval_timeout_seconds or agent.approval_timeout_seconds
        now = workflow.now()
        self._answers.pending = PendingApproval(
            since=now,
            step_id=draft.step.id,
            calls=draft.pending,
            timeout_at=now + timedelta(seconds=timeout_s) if timeout_s else None,
        )
        if any(c.answer is None for c in draft.pending):
            self._publish(self._run_id, StopReasonType.requires_approval, final=False)
            workflow.upsert_search_attributes([STOP_REASON.value_set(StopReasonType.requires_approval.value)])
            self._set_current("awaiting approval: " + ", ".join(f"{c.name}({_clip(c.arguments)})" for c in draft.pending))
            if not await self._wait(lambda: self._answers.complete, timedelta(seconds=timeout_s) if timeout_s else None):
                # The request stays in the context for Letta's resume path, which answers every
                # call again in a new run; answers given to this run end with it.
                self._answers.pending = None
                return StopReasonType.requires_approval
        assert self._answers.pending is not None
        draft.pending = self._answers.pending.calls
        self._answers.pending = None
        self._set_current(f"running answered calls, step {draft.step.step_number}")
        now = workflow.now()
        window = agent.llm_config.context_window
        by_id = {c.tool_call_id: c for c in draft.pending}
        for call in draft.calls:
            if call.id in by_id:
                answered_call = answered_return(by_id[call.id], window, now)
                if answered_call is not None:
                    draft.returns[call.id] = answered_call
        to_run = [c for c in draft.calls if c.id not in draft.returns]
        outcome = await self._tools.run(draft, to_run)
        stop = self._after_calls(outcome.executed, outcome.blocked, answered_by_people=len(to_run) < len(draft.calls))
        messages = [approval_response(draft.pending, draft.step, self._new_message_id), tool_message(draft.calls, draft.returns, draft.step, self._new_message_id)]
        await self._checkpoint(messages, draft.step.model_copy(update={"stop_reason": stop, "tool_execution_ns": outcome.tool_ns}))
        self._draft = None
        return stop

    async def _checkpoint(self, messages: list[Message], step: StepRecord) -> None:
        self._set_current(f"checkpoint, step {step.step_number}")
        await activity_calls.checkpoint_step(CheckpointInput(agent_id=self._agent_id, messages=messages, step=step))
        self._outcomes.committed(messages, tokens_streamed=self._tokens_streamed)

    async def _begin(self, request: SendMessageRequest, run_id: str) -> BeginRunOutput | None:
        self._status = RunStatus.running
        attributes = [AGENT_ID.value_set(self._agent_id), RUN_STATUS.value_set(self._status.value)]
        if workflow.patched(RUN_ID_SEARCH_ATTRIBUTE):
            attributes.append(PERDURE_RUN_ID.value_set(run_id))
        workflow.upsert_search_attributes(attributes)
        self._set_current("starting")
        try:
            return await activity_calls.begin_run(BeginRunInput(agent_id=self._agent_id, run_id=run_id, request=request, workflow_id=workflow.info().workflow_id))
        except (ActivityError, ApplicationError) as err:
            _reraise_cancellation(err)
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError) and cause.type == names.REQUEST_REJECTED:
                self._rejection = ApplicationError(cause.message, type=names.REQUEST_REJECTED)
                self._finished = True
                self._set_current(f"request refused: {cause.message}")
                return None
            self._error = _failure_text(err)
            await self._finish(run_id, StopReasonType.error, None, final=True)
            return None

    async def _on_cancel(self, run_id: str) -> None:
        """Commit what the interrupted step owes the context, then end the run `cancelled`."""
        self._set_current("cancelling")
        draft, self._draft = self._draft, None
        if draft is not None and draft.pending is not None and self._answers.pending is not None:
            draft.pending = self._answers.pending.calls  # keep the answers given before the cancel
        self._answers.pending = None
        if draft is not None:
            messages = messages_on_cancel(draft, self._new_message_id, workflow.now(), self._context_window)
            if messages:
                await self._checkpoint(messages, draft.step.model_copy(update={"status": "cancelled", "stop_reason": StopReasonType.cancelled}))
        await self._finish(run_id, StopReasonType.cancelled, None, final=True)

    async def _finish(self, run_id: str, stop_reason: StopReasonType, failed_step: StepRecord | None, *, final: bool) -> None:
        self._stop_reason = stop_reason
        self._status = stop_reason.run_status
        self._finished = final
        self._set_current(f"finished: {stop_reason.value}")
        await activity_calls.finish_run(
            FinishRunInput(
                agent_id=self._agent_id,
                run_id=run_id,
                stop_reason=stop_reason,
                usage=self._usage,
                error=self._error,
                finished_at=workflow.now(),
                failed_step=failed_step,
            )
        )
        workflow.upsert_search_attributes([RUN_STATUS.value_set(self._status.value), STOP_REASON.value_set(stop_reason.value)])
        self._publish(run_id, stop_reason, final=True)

    def _publish(self, run_id: str, stop_reason: StopReasonType, *, final: bool) -> None:
        """Hand the outcome to whoever waits (send_message, answer): a stop, or a pause."""
        status = self._status if final else RunStatus.running
        failure = self._error if final and self._status is RunStatus.failed else None
        result = outcome(run_id, self._agent_id, stop_reason, status, self._usage, self._error)
        self._outcomes.reached(result, self._usage, failure=failure, failure_type=self._failure_type)

    async def _wait_for_handlers(self) -> None:
        """Let the updates that wait for an outcome return; stream subscribers are released
        first (they read the rest through the stream's query once the run has closed)."""
        self._outcomes.release_readers()
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _step_message_ids(self) -> tuple[str, str]:
        """The ids of the step's answer and of its approval request, chosen before the model is
        asked so that streamed chunks carry them. Runs started before this change draw them
        after the answer, where they always did, so their replay gives the same ids ("", "")."""
        if not workflow.patched(ANSWER_IDS_BEFORE_REQUEST):
            return "", ""
        return self._new_message_id(), self._new_message_id()

    def _user_message(self, text: str, otid: str | None, run_id: str) -> Message:
        return Message(id=self._new_message_id(), agent_id=self._agent_id, role="user", content=[TextContent(text=text)], otid=otid, run_id=run_id)

    @staticmethod
    def _new_message_id() -> str:
        return f"message-{workflow.uuid4()}"

    def _set_current(self, text: str) -> None:
        self._current = text
        workflow.set_current_details(f"**{text}**" + (f" — run `{self._run_id}`" if self._run_id else ""))

    @staticmethod
    async def _wait(condition: Callable[[], bool], timeout: timedelta | None) -> bool:
        """Wait for `condition`; False when `timeout` (None: never) passes first."""
        try:
            await workflow.wait_condition(condition, timeout=timeout)
        except TimeoutError:
            return False
        return True


def _ns_since(started: Any) -> int:
    return int((workflow.now() - started).total_seconds() * 1e9)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _reraise_cancellation(error: BaseException) -> None:
    """A cancel that reaches the workflow while it awaits an activity arrives as an ActivityError
    around a CancelledError; it is a cancellation of the run, not a failure of the step."""
    if is_cancelled_exception(error):
        raise asyncio.CancelledError("run cancelled") from error


def _failure_text(error: ActivityError | ApplicationError) -> str:
    """The root cause's message: what a person needs, without Temporal's wrapping.

    A regular activity's failure arrives as an ActivityError around the cause; a local
    activity's as the ApplicationError itself.
    """
    cause = error.cause if isinstance(error, ActivityError) else error
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or error)
