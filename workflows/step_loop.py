"""The agent loop of one run: LLM request, tool calls, checkpoint, until something stops it.

A step asks the model (compacting and asking again when the provider says the request is too
long), runs the calls the rules allow, or pauses for the ones that need a person, and commits
its messages in one checkpoint. After a step the context is compacted when the next request
would fill more than 90% of the window.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from perdure.approvals import apply_answers
    from perdure.compaction import estimate_next_request, needs_compaction
    from perdure.schemas.approvals import PendingApproval, PendingCall
    from perdure.schemas.letta import RunStatus, StopReasonType
    from perdure.schemas.messages import Message, TextContent, ToolCall
    from perdure.schemas.run import BeginRunOutput, LLMStepInput, LLMStepOutput, MessageCreate, SendMessageRequest
    from perdure.schemas.run import StepRecord
    from perdure.approvals import KEEP_ALIVE
    from perdure.tool_rules import ToolRulesSolver

from workflows import activity_calls
from workflows.decisions import after_text_answer, after_tool_calls
from workflows.drafts import (
    StepDraft,
    StepMessageIds,
    answered_return,
    approval_request,
    approval_response,
    assistant_message,
    keep_going_message,
    tool_message,
)
from workflows.failures import failure_text, reraise_cancellation
from workflows.metrics import person_answered, step_taken
from workflows.run_context import RunContext
from workflows.step_results import CONTEXT_WINDOW_EXCEEDED, ContextOverflow, StepResult, failed_request
from workflows.search_attributes import STOP_REASON
from workflows.stream_events import stream_tokens_now
from workflows.tool_runner import CallsCancelled, CallsOutcome, ToolRunner
from workflows.waiting import wait_for

ANSWER_IDS_BEFORE_REQUEST = "answer-ids-before-request"
CLEAR_STOP_REASON_ON_ANSWERS = "clear-stop-reason-on-answers"
MAX_OVERFLOW_COMPACTIONS = 3


class StepLoop:
    """One run's steps, for the agent and context `begin_run` loaded.

    The request and run id are the context's too; held here as set, not optional, values.
    """

    def __init__(self, ctx: RunContext, begun: BeginRunOutput, request: SendMessageRequest, run_id: str) -> None:
        self._ctx = ctx
        self._begun = begun
        self._agent = begun.agent
        self._request = request
        self._run_id = run_id
        self._solver = ToolRulesSolver(begun.agent.tool_rules, begun.agent.tools)
        self._tools = ToolRunner(begun.agent, self._solver, ctx.show)
        self._approval_tools = begun.agent.approval_tools
        self._client_names = {t.name for t in request.client_tools}

    async def run(self) -> StepResult:
        """Step until a stop reason; the result's `stop` is never None."""
        request, begun = self._request, self._begun
        inputs = [self._user_message(m) for m in request.user_messages]
        result = StepResult(stop=None)
        if begun.unanswered is not None and request.approval is not None:
            # The answers are a step of this run without an LLM call (number 0); the paused step
            # keeps its record in the run whose LLM call made it.
            unanswered = begun.unanswered
            step = StepRecord(
                id=f"step-{workflow.uuid4()}", run_id=self._run_id, agent_id=self._ctx.agent_id, step_number=0
            )
            # A call was held only if the rules allowed it then; the fresh solver of this run
            # does not know that history, so the held calls join what it allows now.
            allowed = self._solver.allowed_tools()
            allowed += [p.name for p in unanswered.waiting if p.name not in allowed]
            waiting = apply_answers(unanswered.waiting, request.approval.approvals)
            draft = self._draft(StepDraft(step=step, calls=unanswered.calls, waiting=waiting, allowed=allowed))
            result = StepResult(stop=await self._after_answers(draft))
        elif begun.answers_already_processed and not inputs:
            inputs = [self._user_message(MessageCreate(content=KEEP_ALIVE))]
        for number in range(1, request.max_steps + 1):
            if result.stop is not None:
                break
            self._ctx.step = number
            result = await self._step_once(number, inputs)
            inputs = []
        return result if result.stop is not None else replace(result, stop=StopReasonType.max_steps)

    def _draft(self, draft: StepDraft) -> StepDraft:
        """The step as it now stands: what a cancel would commit."""
        self._ctx.draft = draft
        return draft

    async def _step_once(self, number: int, inputs: list[Message]) -> StepResult:
        """One LLM request and its tool calls."""
        ctx, agent = self._ctx, self._agent
        step_taken(agent.llm_config.model)
        step = StepRecord(
            id=f"step-{workflow.uuid4()}",
            run_id=self._run_id,
            agent_id=ctx.agent_id,
            step_number=number,
            model=agent.llm_config.model,
        )
        ids = self._step_message_ids()
        ctx.tokens_streamed = stream_tokens_now(
            ctx.stream_tokens, workflow.info().get_current_history_length(), in_store=ctx.stream_in_store
        )
        started = workflow.now()
        allowed = self._solver.allowed_tools()
        draft = self._draft(
            StepDraft(step=step, inputs=[m.model_copy(update={"step_id": step.id}) for m in inputs], allowed=allowed)
        )
        ctx.show(f"llm request, step {number}")
        try:
            llm_input = LLMStepInput(
                agent_id=ctx.agent_id,
                run_id=self._run_id,
                step_id=step.id,
                step_number=number,
                new_messages=draft.inputs,
                allowed_tools=allowed,
                force_tool_call=self._solver.should_force_tool_call(),
                parallel_tool_calls=agent.parallel_allowed,
                client_tools=self._request.client_tools,
                message_id=ids.answer,
                approval_message_id=ids.approval_request,
                held_tools=sorted(self._held_names(allowed)),
                stream_tokens=ctx.tokens_streamed,
                stream_in_store=ctx.stream_in_store,
            )
            output = await self._request_with_room(llm_input)
        except (ActivityError, ContextOverflow) as err:
            reraise_cancellation(err)
            ctx.draft = None
            return failed_request(step, err)
        usage = output.usage
        ctx.usage.add(
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_input_tokens,
            usage.reasoning_tokens,
            usage.cache_write_tokens,
        )
        draft = self._draft(
            replace(draft, step=step.model_copy(update={"usage": usage, "llm_request_ns": output.llm_request_ns}))
        )
        try:
            return await self._act(draft, started, output, ids)
        except (ActivityError, ApplicationError) as err:
            reraise_cancellation(err)
            # A tool or the checkpoint failed past its retries (e.g. the database is down): end the
            # run with `error` rather than leave it running forever (Letta PR 2846).
            error = failure_text(err)
            failed = draft.step.model_copy(
                update={
                    "status": "failed",
                    "stop_reason": StopReasonType.error,
                    "error_type": "ActivityError",
                    "error": error,
                }
            )
            ctx.draft = None
            return StepResult(stop=StopReasonType.error, failed_step=failed, error=error)

    async def _act(self, draft: StepDraft, started: datetime, output: LLMStepOutput, ids: StepMessageIds) -> StepResult:
        """Run the step's calls (or pause for the ones that need a person), then commit the step."""
        ctx, agent = self._ctx, self._agent
        calls = list(output.tool_calls) if agent.parallel_allowed else list(output.tool_calls[:1])
        held_names = self._held_names(draft.allowed)
        draft = self._draft(
            replace(draft, calls=calls, allowed=[*draft.allowed, *sorted(self._client_names - set(draft.allowed))])
        )
        held = [c for c in calls if c.name in held_names]
        if held:
            return StepResult(stop=await self._pause(draft, output, held, ids))
        draft = self._draft(
            replace(draft, assistant=assistant_message(output, calls, draft.step, ids.answer or ctx.new_message_id()))
        )
        assert draft.assistant is not None
        tool_ns = None
        outcome = None
        if calls:
            outcome = await self._run_calls(draft, calls)
            draft = self._draft(draft.with_returns(outcome.returns, outcome.ran_with))
            assert draft.assistant is not None
            tool_ns = outcome.tool_ns
            messages = [
                *draft.inputs,
                draft.assistant,
                tool_message(draft.calls, draft.returns, draft.step, ctx.new_message_id),
            ]
            stop = self._after_calls(outcome.executed, outcome.blocked)
        else:
            messages = [*draft.inputs, draft.assistant]
            stop, reason = after_text_answer(output.finish_reason, self._solver.uncalled_required_before_exit())
            if reason is not None:
                messages.append(keep_going_message(reason, draft.step, ctx.new_message_id, workflow.now()))
        step = draft.step.model_copy(
            update={"stop_reason": stop, "tool_execution_ns": tool_ns, "step_ns": _ns_since(started)}
        )
        await ctx.checkpoint(messages, step)
        ctx.draft = None
        if stop is None or stop.run_status is RunStatus.completed:
            added = output.response_tokens + (outcome.tokens if outcome else 0)
            if needs_compaction(
                estimate_next_request(output.usage.prompt_tokens, added, output.request_tokens + added),
                agent.llm_config.context_window,
            ):
                try:
                    result = await ctx.compact(
                        "sliding_window", "the next request would fill more than 90% of the context window"
                    )
                except (ActivityError, ApplicationError) as err:
                    # The step is committed; the run ends here with the reason (Letta: failed
                    # compaction is `error`), and the next run retries on its first overflow.
                    reraise_cancellation(err)
                    return StepResult(stop=StopReasonType.error, error=f"compaction failed: {failure_text(err)}")
                if result.system_overflow:
                    return StepResult(stop=StopReasonType.context_window_overflow_in_system_prompt, error=result.detail)
        return StepResult(stop=stop)

    async def _run_calls(self, draft: StepDraft, calls: list[ToolCall]) -> CallsOutcome:
        """Run `calls`; when the run is cancelled midway, the calls that finished stay in the
        draft, so the cancel commits their returns."""
        try:
            return await self._tools.run(draft.step, calls, draft.allowed)
        except CallsCancelled as cancelled:
            self._draft(draft.with_returns(cancelled.outcome.returns, cancelled.outcome.ran_with))
            raise

    async def _request_with_room(self, llm_input: LLMStepInput) -> LLMStepOutput:
        """Ask the model; when the provider says the request is too long for its window, compact
        and ask again, up to MAX_OVERFLOW_COMPACTIONS times (the second time evicting all)."""
        for attempt in range(MAX_OVERFLOW_COMPACTIONS + 1):
            try:
                asked = llm_input if attempt == 0 else llm_input.model_copy(update={"request_number": attempt + 1})
                return await activity_calls.llm_step(asked, self._agent.llm_config.model_name)
            except ActivityError as err:
                cause = err.cause
                if (
                    not (isinstance(cause, ApplicationError) and cause.type == CONTEXT_WINDOW_EXCEEDED)
                    or attempt == MAX_OVERFLOW_COMPACTIONS
                ):
                    raise
                result = await self._ctx.compact(
                    "sliding_window" if attempt == 0 else "all",
                    "the provider said the request is longer than the context window",
                )
                if result.system_overflow:
                    raise ContextOverflow(
                        StopReasonType.context_window_overflow_in_system_prompt, result.detail
                    ) from err
                if result.evicted == 0:
                    raise  # nothing left to take out: asking again cannot help
        raise AssertionError("unreachable")

    def _held_names(self, allowed: list[str]) -> set[str]:
        """Tools whose calls wait for a person or the client: the approval tools the rules allow
        this step, and the client's tools. One answer for what the stream calls an approval
        request and for what the step holds, so their ids agree."""
        return (self._approval_tools & set(allowed)) | self._client_names

    def _after_calls(
        self, executed: list[str], blocked: bool, *, answered_by_people: bool = False
    ) -> StopReasonType | None:
        return after_tool_calls(
            blocked=blocked,
            terminal_ran=any(self._solver.is_terminal(name) for name in executed),
            uncalled_required=self._solver.uncalled_required_before_exit(),
            answered_by_people=answered_by_people,
        )

    async def _pause(
        self, draft: StepDraft, output: LLMStepOutput, held: list[ToolCall], ids: StepMessageIds
    ) -> StopReasonType | None:
        """Commit the response with its held calls, answer the caller, and wait for the answers."""
        ctx = self._ctx
        others = [c for c in draft.calls if c not in held]
        messages = list(draft.inputs)
        if others or output.content or output.reasoning:
            messages.append(assistant_message(output, others, draft.step, ids.answer or ctx.new_message_id()))
        client_ids = [c.id for c in held if c.name in self._client_names]
        messages.append(approval_request(held, client_ids, draft.step, ids.approval_request or ctx.new_message_id()))
        step = draft.step.model_copy(update={"stop_reason": StopReasonType.requires_approval})
        await ctx.checkpoint(messages, step)
        waiting = [
            PendingCall(
                tool_call_id=c.id,
                name=c.name,
                arguments=c.arguments,
                kind="client_tool" if c.id in client_ids else "approval",
            )
            for c in held
        ]
        return await self._after_answers(self._draft(replace(draft, inputs=[], step=step, waiting=waiting)))

    async def _after_answers(self, draft: StepDraft) -> StopReasonType | None:
        """Wait until every held call has an answer (or the approval timeout), then run the calls."""
        assert draft.waiting is not None
        ctx, answers = self._ctx, self._ctx.answers
        timeout_s = self._request.approval_timeout_seconds or self._agent.approval_timeout_seconds
        pausing = any(c.answer is None for c in draft.waiting)
        if pausing:
            await ctx.store_pause(draft.step.id)
        now = workflow.now()
        answers.open(
            PendingApproval(
                since=now,
                step_id=draft.step.id,
                calls=draft.waiting,
                timeout_at=now + timedelta(seconds=timeout_s) if timeout_s else None,
            )
        )
        if pausing:
            ctx.publish(StopReasonType.requires_approval, final=False)
            workflow.upsert_search_attributes([STOP_REASON.value_set(StopReasonType.requires_approval.value)])
            ctx.stop_reason = StopReasonType.requires_approval
            assert answers.request is not None
            ctx.show_pending(
                answers.request,
                "awaiting approval: " + ", ".join(f"{c.name}({_clip(c.arguments)})" for c in draft.waiting),
            )
            if not await person_answered(
                wait_for(lambda: answers.complete, timedelta(seconds=timeout_s) if timeout_s else None)
            ):
                # The request stays in the context for Letta's resume path, which answers every
                # call again in a new run; answers given to this run end with it.
                answers.close()
                return StopReasonType.requires_approval
            if workflow.patched(CLEAR_STOP_REASON_ON_ANSWERS):
                # The run works again: the list and the state query stop saying it waits.
                workflow.upsert_search_attributes([STOP_REASON.value_unset()])
                ctx.stop_reason = None
        answered = answers.close()
        draft = self._draft(replace(draft, waiting=answered))
        ctx.show(f"running answered calls, step {draft.step.step_number}")
        now = workflow.now()
        window = self._agent.llm_config.context_window
        by_id = {c.tool_call_id: c for c in answered}
        given = {
            call.id: r
            for call in draft.calls
            if call.id in by_id and (r := answered_return(by_id[call.id], window, now)) is not None
        }
        draft = self._draft(draft.with_returns(given, {}))
        to_run = [c for c in draft.calls if c.id not in draft.returns]
        outcome = await self._run_calls(draft, to_run)
        draft = self._draft(draft.with_returns(outcome.returns, outcome.ran_with))
        stop = self._after_calls(outcome.executed, outcome.blocked, answered_by_people=len(to_run) < len(draft.calls))
        messages = [
            approval_response(answered, draft.step, ctx.new_message_id),
            tool_message(draft.calls, draft.returns, draft.step, ctx.new_message_id),
        ]
        await ctx.checkpoint(
            messages, draft.step.model_copy(update={"stop_reason": stop, "tool_execution_ns": outcome.tool_ns})
        )
        ctx.draft = None
        return stop

    def _step_message_ids(self) -> StepMessageIds:
        """Chosen before the model is asked, so that streamed chunks carry them. Runs started
        before this change draw them after the answer, where they always did, so their replay
        gives empty ids here."""
        if not workflow.patched(ANSWER_IDS_BEFORE_REQUEST):
            return StepMessageIds()
        return StepMessageIds(answer=self._ctx.new_message_id(), approval_request=self._ctx.new_message_id())

    def _user_message(self, sent: MessageCreate) -> Message:
        return Message(
            id=self._ctx.new_message_id(),
            agent_id=self._ctx.agent_id,
            role="user",
            content=[TextContent(text=sent.content)],
            otid=sent.otid,
            name=sent.name,
            sender_id=sent.sender_id,
            run_id=self._run_id,
        )


def _ns_since(started: datetime) -> int:
    return int((workflow.now() - started).total_seconds() * 1e9)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
