"""Run bookkeeping and the step checkpoint: short database work, run as local activities."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import not_found
from activities.run_stream import append_outcome, append_step
from perdure.approvals import NO_PENDING, check_complete_answers, pending_message
from perdure.schemas.run import AgentSnapshot, BeginRunInput, BeginRunOutput, CheckpointInput, FinishRunInput
from perdure.store import agents, runs
from perdure.store.db import Database
from perdure.store.errors import NotFoundError
from perdure.store.unanswered import already_answered, unanswered_in_context
from perdure.tools.registry import custom_tool_refs, get_tool_defs, with_default_approvals
from perdure.mcp.attachments import split_tools
from perdure import names


class RunActivities:
    def __init__(self, db: Database) -> None:
        self._db = db

    @activity.defn(name=names.BEGIN_RUN)
    def begin_run(self, input: BeginRunInput) -> BeginRunOutput:
        """Check the request against the agent's context, then record the run and its request.

        A request that cannot be taken (a user message while an approval is pending, answers
        that do not match it, a turn an earlier run took: a client's retry) is refused before
        anything is written.
        """
        try:
            with self._db.transaction() as session:
                agent = agents.load_run_agent(session, input.agent_id)
                turn = input.request.turn_key
                earlier = runs.find_run_for_turn(session, input.agent_id, turn) if turn else None
                if earlier is not None and earlier.id != input.run_id:
                    raise ApplicationError(
                        f"this message was sent before: run {earlier.id} took it",
                        earlier.id,
                        type=names.ALREADY_SENT,
                        non_retryable=True,
                    )
                stored = unanswered_in_context(session, agent.message_ids)
                approval = input.request.approval
                if stored is not None and approval is None:
                    raise _rejected(pending_message(stored.waiting))
                if stored is not None and approval is not None:
                    problem = check_complete_answers(stored.waiting, approval.approvals)
                    if problem is not None:
                        raise _rejected(problem)
                replayed = False
                if stored is None and approval is not None:
                    replayed = already_answered(session, input.agent_id, {a.tool_call_id for a in approval.approvals})
                    if not replayed:
                        raise _rejected(NO_PENDING)
                definitions = get_tool_defs(session, agent.tools)
                parallel_safe = [name for name, tool in definitions.items() if tool.enable_parallel_execution]
                custom_tools = custom_tool_refs(definitions)
                runs.create_run(
                    session,
                    run_id=input.run_id,
                    agent_id=input.agent_id,
                    workflow_id=input.workflow_id,
                    request=input.request,
                )
        except NotFoundError as err:
            raise not_found(err) from err
        tools, mcp_attachments = split_tools(agent.tools)
        snapshot = AgentSnapshot(
            agent_id=agent.id,
            name=agent.name,
            tools=tools,
            tool_rules=with_default_approvals(agent.tool_rules, definitions),
            llm_config=agent.llm_config,
            approval_timeout_seconds=agent.approval_timeout_seconds,
            parallel_safe_tools=parallel_safe,
            mcp_attachments=mcp_attachments,
            custom_tools=custom_tools,
        )
        return BeginRunOutput(agent=snapshot, unanswered=stored, answers_already_processed=replayed)

    @activity.defn(name=names.CHECKPOINT_STEP)
    def checkpoint_step(self, input: CheckpointInput) -> None:
        """Messages, in-context ids and the step row in one transaction; a retry rewrites nothing."""
        try:
            with self._db.transaction() as session:
                runs.checkpoint_step(session, input.agent_id, input.messages, input.step)
                if input.stream_in_store:
                    append_step(session, input)
        except NotFoundError as err:
            raise not_found(err) from err

    @activity.defn(name=names.FINISH_RUN)
    def finish_run(self, input: FinishRunInput) -> None:
        """Record how the run ended; a run whose agent was deleted meanwhile has nothing to record."""
        with self._db.transaction() as session:
            if input.stream_events:  # even for a run the store never took: its readers wait for the end
                append_outcome(session, input.agent_id, input.stream_events)
            finished = runs.finish_run(
                session,
                run_id=input.run_id,
                agent_id=input.agent_id,
                stop_reason=input.stop_reason,
                usage=input.usage,
                error=input.error,
                finished_at=input.finished_at,
            )
            if not finished:
                activity.logger.warning(
                    "run %s is gone (agent %s deleted?); nothing to record", input.run_id, input.agent_id
                )
                return
            if input.failed_step is not None:
                runs.upsert_step(session, input.failed_step)


def _rejected(message: str) -> ApplicationError:
    return ApplicationError(message, type=names.REQUEST_REJECTED, non_retryable=True)
