"""How refusals become HTTP answers, as Letta gives them: 404 for unknown ids, 409 for a busy
agent or a pending approval (with Letta's PENDING_APPROVAL detail), 400 for answers that do
not fit what is pending, 422 for a body that cannot be read, each with one readable message.

Every refusal carries `x-should-retry: false`: the letta-client SDK retries 409 by default,
but a refusal here is an answer, not a lock timeout, and asking again changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from perdure.approvals import NO_PENDING, PENDING_APPROVAL
from perdure.schemas.messages import Message
from perdure.store import messages
from perdure.store.db import Database
from perdure.store.errors import InvalidRequestError, NotFoundError
from starter.updates import RunRejectedError
from starter.stream import NoRunError

NO_RETRY = {"x-should-retry": "false"}
_ANSWER_PROBLEMS = (NO_PENDING, "Invalid tool call IDs", "Tool call '", "Invalid approval request ID")
"""The starts of the texts that say an answer does not fit what is pending (Letta: 400)."""


class ApiError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


@contextmanager
def refusals(db: Database, agent_id: str) -> Iterator[None]:
    """Turn a run the agent cannot take into Letta's status and detail."""
    try:
        yield
    except RunRejectedError as err:
        raise refusal(db, agent_id, str(err)) from err


def refusal(db: Database, agent_id: str, reason: str) -> ApiError:
    if reason.startswith(PENDING_APPROVAL):
        detail = {
            "code": "PENDING_APPROVAL",
            "message": reason,
            "pending_request_id": pending_request_id(db, agent_id),
        }
        return ApiError(409, detail)
    if reason.startswith(_ANSWER_PROBLEMS):
        return ApiError(400, reason)
    return ApiError(409, reason)


def pending_request_id(db: Database, agent_id: str) -> str | None:
    """The id of the approval request waiting for answers."""
    request = pending_request(db, agent_id)
    return request.id if request else None


def pending_request(db: Database, agent_id: str) -> Message | None:
    """The approval request waiting for answers: the last message of the context, when it is one."""
    with db.transaction(read_only=True) as session:
        tail = messages.load_context_tail(session, agent_id, 1)
    return tail[-1] if tail and tail[-1].role == "approval" and tail[-1].tool_calls else None


def validation_text(err: ValidationError | RequestValidationError) -> str:
    problems = err.errors()
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"invalid {where}: {first['msg']}{more}"


def install_handlers(app: FastAPI) -> None:
    def answer(status: int, detail: Any) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=NO_RETRY)

    async def api_error(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, ApiError)
        return answer(err.status, err.detail)

    async def not_found(_request: Request, err: Exception) -> JSONResponse:
        return answer(404, str(err))

    async def invalid(_request: Request, err: Exception) -> JSONResponse:
        if isinstance(err, (ValidationError, RequestValidationError)):
            return answer(422, validation_text(err))
        return answer(422, str(err))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(NoRunError, not_found)
    app.add_exception_handler(InvalidRequestError, invalid)
    app.add_exception_handler(ValidationError, invalid)
    app.add_exception_handler(RequestValidationError, invalid)
