"""The answers a paused run collects: which calls wait, what each got, what was refused.

Pure state behind the workflow's `approve`, `deny` and `client_tool_return` signals and its
`answer` update, so the rules read in one place. Signals cannot be refused by Temporal: a bad
one is kept as a rejected event (shown by the state query) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from perdure.approvals import NO_PENDING, apply_answers, approve_all, check_answer, check_answers
    from perdure.schemas.approvals import (
        Answer,
        ApprovalAnswer,
        ApproveSignal,
        ClientToolReturn,
        DenySignal,
        PendingApproval,
        PendingCall,
        RejectedAnswer,
    )

from perdure import names


class AnswerBook:
    def __init__(self) -> None:
        self.request: PendingApproval | None = None
        """The approval request the run waits on, with the answers given so far."""
        self.rejected: list[RejectedAnswer] = []

    def open(self, request: PendingApproval) -> None:
        """The run waits on `request` from now on."""
        self.request = request

    def close(self) -> list[PendingCall]:
        """The run stops waiting: the request's calls with the answers they got."""
        assert self.request is not None
        calls, self.request = self.request.calls, None
        return calls

    @property
    def calls(self) -> list[PendingCall] | None:
        return self.request.calls if self.request else None

    @property
    def complete(self) -> bool:
        return self.request is not None and all(c.answer is not None for c in self.request.calls)

    def problem_with(self, answers: list[Answer]) -> str | None:
        """For the update's validator: why this batch cannot be taken, in Letta's words."""
        return check_answers(self.calls, answers)

    def record(self, answers: Sequence[Answer]) -> None:
        assert self.request is not None
        self.request = self.request.model_copy(update={"calls": apply_answers(self.request.calls, answers)})

    def receive(self, via: str, payload: Any, now: datetime) -> None:
        """Take one signal. Whatever its payload, this records an answer or a rejection."""
        handlers = {
            names.APPROVE_SIGNAL: self._on_approve,
            names.DENY_SIGNAL: self._on_deny,
            names.CLIENT_TOOL_RETURN_SIGNAL: self._on_client_tool_return,
        }
        try:
            handlers[via](payload, now)
        except ValidationError as err:
            self._reject(via, payload, f"invalid {via} signal: {err.errors()[0]['msg']}", now)

    def _on_approve(self, payload: Any, now: datetime) -> None:
        signal = self._parse(names.APPROVE_SIGNAL, ApproveSignal, {} if payload is None else payload, now)
        if signal is None:
            return
        if signal.tool_call_id is not None:
            self._take(
                names.APPROVE_SIGNAL, ApprovalAnswer(tool_call_id=signal.tool_call_id, approve=True), payload, now
            )
            return
        answers = approve_all(self.request.calls) if self.request else []
        if answers:
            self.record(answers)
        else:
            self._reject(names.APPROVE_SIGNAL, payload, NO_PENDING, now)

    def _on_deny(self, payload: Any, now: datetime) -> None:
        signal = self._parse(names.DENY_SIGNAL, DenySignal, payload, now)
        if signal is not None:
            answer = ApprovalAnswer(tool_call_id=signal.tool_call_id, approve=False, reason=signal.reason)
            self._take(names.DENY_SIGNAL, answer, payload, now)

    def _on_client_tool_return(self, payload: Any, now: datetime) -> None:
        answer = self._parse(names.CLIENT_TOOL_RETURN_SIGNAL, ClientToolReturn, payload, now)
        if answer is not None:
            self._take(names.CLIENT_TOOL_RETURN_SIGNAL, answer, payload, now)

    def _parse(self, via: str, model: type[BaseModel], payload: Any, now: datetime) -> Any:
        try:
            return model.model_validate(payload)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "input"
            self._reject(via, payload, f"invalid {via} signal: {where}: {first['msg']}", now)
            return None

    def _take(self, via: str, answer: Answer, payload: Any, now: datetime) -> None:
        problem = check_answer(self.calls, answer)
        if problem is not None:
            self._reject(via, payload, problem, now)
        else:
            self.record([answer])

    def _reject(self, via: str, payload: Any, reason: str, now: datetime) -> None:
        data = payload if isinstance(payload, dict) else {"value": payload}
        self.rejected.append(RejectedAnswer(received_at=now, via=via, payload=data, reason=reason))
        workflow.logger.warning("rejected %s signal: %s", via, reason)
