"""Sending the updates that start a run and answer one, and reading what Temporal says back.

A run starts by update-with-start on the agent's workflow id, so a live run takes the request
(or refuses it with its reason) and an idle agent gets a new run, in one call. Answers go to
the live run as the `answer` update; when no run lives to take them, the caller resumes the
pending request in a new run instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from perdure import names
from perdure.approvals import NO_PENDING, pending_message
from perdure.schemas.approvals import AnswerRequest
from perdure.schemas.run import RunResult, RunWorkflowInput, SendMessageRequest
from perdure.store import agents
from perdure.store.db import Database
from perdure.store.unanswered import already_answered, unanswered_in_context
from starter import agent_runs
from starter.outages import is_transient
from starter.updates import RunRejectedError, failure_reason, raise_if_rejected, run_summary, update_id, update_refusal
from workflows.search_attributes import AGENT_ID

FINISHING_RETRIES = 20
"""How often a start is tried again while the agent's previous run is finishing."""


def start_operation(task_queue: str, agent_id: str, name: str, summary: str) -> WithStartWorkflowOperation[Any, Any]:
    """The agent's workflow, started when no run lives (one workflow id per agent), listed in
    the Temporal UI by the agent's name and what the run is for."""
    return WithStartWorkflowOperation(
        names.WORKFLOW,
        RunWorkflowInput(agent_id=agent_id),
        result_type=RunResult,
        id=names.workflow_id(agent_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(AGENT_ID, agent_id)]),
        static_summary=f"{name}: {summary}",
    )


async def start_update(
    temporal: Client,
    db: Database,
    agent_id: str,
    request: SendMessageRequest,
    stage: WorkflowUpdateStage,
    *,
    task_queue: str,
) -> WorkflowUpdateHandle[RunResult]:
    """Start a run by update-with-start; a live run makes the update fail with its reason.

    A plain message to an agent whose context holds an unanswered approval request, or
    answers when nothing is pending, are refused here already (the begin activity checks
    again, race-free), so a refused request leaves no empty workflow in the Temporal UI.
    """
    approval = request.approval
    with db.transaction(read_only=True) as session:
        agent = agents.load_run_agent(session, agent_id)
        stored = unanswered_in_context(session, agent.message_ids)
        replayed = (
            approval is not None
            and stored is None
            and already_answered(session, agent_id, {a.tool_call_id for a in approval.approvals})
        )
    refusal = None
    if stored is not None and approval is None:
        refusal = pending_message(stored.waiting)
    elif stored is None and approval is not None and not replayed:
        refusal = NO_PENDING
    if refusal is not None and not await agent_runs.has_live_run(temporal, agent_id):
        raise RunRejectedError(refusal)
    for _ in range(FINISHING_RETRIES):
        operation = start_operation(task_queue, agent_id, agent.name, run_summary(request))
        try:
            update = await temporal.start_update_with_start_workflow(
                names.SEND_MESSAGE,
                request,
                id=update_id(request),
                result_type=RunResult,
                start_workflow_operation=operation,
                wait_for_stage=stage,
            )
            await raise_if_rejected(update)
            return update
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "RunFinishing":
                await asyncio.sleep(0.05)
                continue
            raise update_refusal(err) from err
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # The SDK also hands a failed start to the operation's handle; read it there,
            # or asyncio reports it as never retrieved.
            with contextlib.suppress(Exception):
                await operation.workflow_handle()
            raise
    raise RunRejectedError(f"agent {agent_id} kept finishing its previous run; try again")


async def deliver_answers(
    temporal: Client, db: Database, agent_id: str, request: AnswerRequest, stage: WorkflowUpdateStage
) -> WorkflowUpdateHandle[RunResult] | None:
    """The `answer` update on the live run, or None when there is no live run to take it
    (it has ended, or is closing at its approval timeout): then the answers resume the
    pending request in a new run (Letta's resume path; the begin activity checks them)."""
    handle = temporal.get_workflow_handle(names.workflow_id(agent_id))
    answers_key = hashlib.sha256(request.model_dump_json(include={"approvals"}).encode()).hexdigest()[:32]
    try:
        update = await handle.start_update(
            names.ANSWER, request, id=f"answer-{answers_key}", result_type=RunResult, wait_for_stage=stage
        )
        await raise_if_rejected(update)
        return update
    except RPCError as err:
        if is_transient(err):
            raise
        return None  # no live run
    except WorkflowUpdateFailedError as err:
        if not (failure_reason(err).startswith(NO_PENDING) and agent_runs.unanswered_request(db, agent_id) is not None):
            raise RunRejectedError(failure_reason(err)) from err
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()  # closing at its approval timeout
        return None
