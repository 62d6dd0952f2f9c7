"""What the run workflow's handlers and its step loop share.

The handlers (the state query, `compact`, a cancel) and the loop read and change the same
state: the step being drafted, the pending approval, usage, the error, what the run is doing.
Holding it here, with the few effects that keep it in step (show progress, commit a step,
compact, hand out an outcome), lets the loop live in a module of its own.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from perdure.schemas.agent import DEFAULT_CONTEXT_WINDOW
    from perdure.schemas.letta import LettaUsageStatistics, RunStatus, StopReasonType
    from perdure.schemas.approvals import PendingApproval
    from perdure.schemas.messages import Message
    from perdure.schemas.run import (
        AppendStreamInput,
        CheckpointInput,
        CompactInput,
        CompactMode,
        CompactOutput,
        RunResult,
        RunState,
        SendMessageRequest,
        StepRecord,
    )

from workflows import activity_calls
from workflows.answers import AnswerBook
from workflows.drafts import StepDraft
from workflows.outcomes import RunOutcomes
from workflows.stream_events import outcome_events
from workflows.summaries import checkpoint_summary, pending_details


class RunContext:
    """The run's state. Must be made in the workflow's `@workflow.init` (see RunOutcomes)."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.agent_name: str | None = None
        self.request: SendMessageRequest | None = None
        self.run_id: str | None = None
        self.status = RunStatus.created
        self.step = 0
        self.current = "waiting for a message"
        self.stop_reason: StopReasonType | None = None
        self.usage = LettaUsageStatistics()
        self.error: str | None = None
        self.failure_type: str | None = None
        self.stream_tokens = False
        self.stream_in_store = False
        """Whether this run's stream is in the database (decided once, when the run begins)."""
        self.tokens_streamed = False
        """Whether this step's answer went out as token chunks (then it is not published whole)."""
        self.draft: StepDraft | None = None
        """The step in the making: what a cancel must still commit."""
        self.context_window = DEFAULT_CONTEXT_WINDOW
        self.answers = AnswerBook()
        self.outcomes = RunOutcomes()

    def show(self, text: str) -> None:
        """What the run is doing, for the state query and the Temporal UI's current details."""
        self.current = text
        workflow.set_current_details(f"**{text}**" + (f" — run `{self.run_id}`" if self.run_id else ""))

    def show_pending(self, request: PendingApproval, text: str) -> None:
        """A pause: `text` for the state query; the current details name each waiting call, its
        tool_call_id and the signal that answers it, ready to copy."""
        self.current = text
        workflow.set_current_details(pending_details(request, self.run_id))

    @staticmethod
    def new_message_id() -> str:
        return f"message-{workflow.uuid4()}"

    async def checkpoint(self, messages: list[Message], step: StepRecord) -> None:
        self.show(f"checkpoint, step {step.step_number}")
        calls = self.draft.calls if self.draft is not None else []
        await activity_calls.checkpoint_step(
            CheckpointInput(
                agent_id=self.agent_id,
                messages=messages,
                step=step,
                stream_in_store=self.stream_in_store,
                tokens_streamed=self.tokens_streamed,
            ),
            checkpoint_summary(step.step_number, messages, calls),
        )
        self.outcomes.committed(messages, tokens_streamed=self.tokens_streamed, publish=not self.stream_in_store)

    async def compact(self, mode: CompactMode, trigger: str) -> CompactOutput:
        """Compact the context. When even the system prompt does not fit, `detail` says what to shrink."""
        self.show(f"compacting the context ({mode})")
        result = await activity_calls.compact(
            CompactInput(
                agent_id=self.agent_id,
                run_id=self.run_id,
                mode=mode,
                summary_message_id=self.new_message_id(),
                event_message_id=self.new_message_id(),
                trigger=trigger,
            )
        )
        self.outcomes.stored(result.message_ids)
        return result

    def publish(self, stop_reason: StopReasonType, *, final: bool) -> None:
        """Hand the outcome to whoever waits (send_message, answer): a stop, or a pause."""
        assert self.run_id is not None
        result = RunResult(
            run_id=self.run_id,
            agent_id=self.agent_id,
            stop_reason=stop_reason,
            status=self.status if final else RunStatus.running,
            usage=self.usage.model_copy(),
            error=self.error,
        )
        self.outcomes.reached(result, self.outcome_events(stop_reason, final=final), publish=not self.stream_in_store)

    def outcome_events(self, stop_reason: StopReasonType, *, final: bool) -> list[dict[str, Any]]:
        """How the outcome ends the run's stream."""
        assert self.run_id is not None
        failure = self.error if final and self.status is RunStatus.failed else None
        return outcome_events(self.run_id, stop_reason, self.usage, failure=failure, failure_type=self.failure_type)

    async def store_pause(self, step_id: str) -> None:
        """The run is about to wait for a person: a run whose stream is in the store has the
        pause's outcome written there before any answer can be taken (an answer taken while
        this activity ran would otherwise be handed this pause as its outcome)."""
        if self.stream_in_store:
            events = self.outcome_events(StopReasonType.requires_approval, final=False)
            await activity_calls.append_stream(
                AppendStreamInput(agent_id=self.agent_id, events=events, dedup_key=f"pause:{step_id}")
            )

    def state(self) -> RunState:
        return RunState(
            agent_id=self.agent_id,
            run_id=self.run_id,
            status=self.status,
            step=self.step,
            max_steps=self.request.max_steps if self.request else None,
            current=self.current,
            stop_reason=self.stop_reason,
            usage=self.usage,
            error=self.error,
            pending_approval=self.answers.request,
            rejected=self.answers.rejected,
            agent_name=self.agent_name,
        )
