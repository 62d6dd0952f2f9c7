"""The commands that talk to a run: send, answer (approve, deny, tool-return), follow, compact,
cancel, status."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from perdure.approvals import NO_PENDING, approve_all
from perdure.schemas.approvals import Answer, ApprovalAnswer, ClientTool, ClientToolReturn
from perdure.schemas.letta import LettaResponse
from perdure.store import agents, runs
from starter.cli_common import UsageError, connect_client, out, print_json, read_json
from starter.client import PerdureClient
from starter.updates import message_request
from starter.render import response_text, state_text
from starter.stream import NoRunError, StreamItem
from starter.stream_render import StreamPrinter, json_line
from perdure import names


def send(args: argparse.Namespace) -> int:
    client_tools = _client_tools(args.client_tools) if args.client_tools else None

    async def run() -> int:
        client = await connect_client(args.timeout)
        if args.stream:
            request = message_request(
                args.text,
                max_steps=args.max_steps,
                client_tools=client_tools,
                approval_timeout_seconds=args.approval_timeout,
                stream_tokens=True,
            )
            return await _print_stream(args, client.stream_message(args.agent_id, request))
        response = await client.send_message(
            args.agent_id,
            args.text,
            max_steps=args.max_steps,
            client_tools=client_tools,
            approval_timeout_seconds=args.approval_timeout,
        )
        return _print_response(args, client, response)

    return asyncio.run(run())


def _client_tools(path: Path) -> list[ClientTool]:
    data = read_json(path, "client tools file", list, "a JSON list of {name, description, parameters}")
    return [ClientTool.model_validate(item) for item in data]


def approve(args: argparse.Namespace) -> int:
    async def build(client: PerdureClient) -> list[Answer]:
        if args.tool_call_id is not None:
            return [ApprovalAnswer(tool_call_id=args.tool_call_id, approve=True)]
        answers = approve_all(await client.pending_calls(args.agent_id))
        if not answers:
            raise UsageError(NO_PENDING)
        return answers

    return _deliver(args, names.APPROVE_SIGNAL, build)


def deny(args: argparse.Namespace) -> int:
    async def build(_client: PerdureClient) -> list[Answer]:
        return [ApprovalAnswer(tool_call_id=args.tool_call_id, approve=False, reason=args.reason)]

    return _deliver(args, names.DENY_SIGNAL, build)


def tool_return(args: argparse.Namespace) -> int:
    async def build(_client: PerdureClient) -> list[Answer]:
        return [ClientToolReturn(tool_call_id=args.tool_call_id, status=args.status, tool_return=args.tool_return)]

    return _deliver(args, names.CLIENT_TOOL_RETURN_SIGNAL, build)


def _deliver(args: argparse.Namespace, signal: str, build: Callable[[PerdureClient], Awaitable[list[Answer]]]) -> int:
    """Answer through the validated update and print the continuation like `send`; with
    --no-wait, deliver each answer as a signal (as the Temporal UI would) and return."""
    if args.stream and args.no_wait:
        raise UsageError("--stream and --no-wait do not go together: --no-wait returns before anything streams")

    async def run() -> int:
        client = await connect_client(args.timeout)
        answers = await build(client)
        if args.stream:
            return await _print_stream(args, client.stream_answer(args.agent_id, answers))
        if not args.no_wait:
            return _print_response(args, client, await client.answer(args.agent_id, answers))
        for answer in answers:
            await client.signal(
                args.agent_id, signal, answer.model_dump(mode="json", exclude={"type"}, exclude_none=True)
            )
        ids = [a.tool_call_id for a in answers]
        return out(args, {"agent_id": args.agent_id, "delivered": ids}, f"delivered {signal} for {', '.join(ids)}")

    return asyncio.run(run())


def follow(args: argparse.Namespace) -> int:
    if args.from_offset < 0:
        raise UsageError("--from must be 0 or more")

    async def run() -> int:
        client = await connect_client(args.timeout)
        return await _print_stream(args, client.follow(args.agent_id, args.from_offset, args.run_id))

    return asyncio.run(run())


async def _print_stream(args: argparse.Namespace, items: AsyncIterator[StreamItem]) -> int:
    """Print each event as it comes; the output so far stands if the stream breaks off."""
    printer = StreamPrinter()
    try:
        async for item in items:
            if args.json:
                print(json_line(item), flush=True)
            else:
                printer.show(item)
    except NoRunError as err:
        raise UsageError(str(err)) from err
    finally:
        printer.finish()
    return 0


def compact(args: argparse.Namespace) -> int:
    async def run() -> int:
        client = await connect_client()
        result = await client.compact(args.agent_id, args.mode)
        if result.system_overflow:
            raise UsageError(result.detail or "the system prompt does not fit the context window")
        if result.mode == "none":
            text = f"{args.agent_id}: nothing to compact ({result.detail}); {result.tokens_before} tokens in context"
        else:
            text = f"{args.agent_id}: compacted ({result.mode}): {result.tokens_before} -> {result.tokens_after} tokens, {result.evicted} messages out of context"
        return out(args, result, text)

    return asyncio.run(run())


def cancel(args: argparse.Namespace) -> int:
    async def run() -> int:
        client = await connect_client()
        state = await client.cancel(args.agent_id)
        return out(
            args,
            state,
            f"{args.agent_id}: run {state.run_id} {state.status.value} ({state.stop_reason.value if state.stop_reason else '?'})",
        )

    return asyncio.run(run())


def _print_response(args: argparse.Namespace, client: PerdureClient, response: LettaResponse) -> int:
    """The response; a failed run's error too (`--json`: Letta's error message, as `error`)."""
    with client.db.transaction(read_only=True) as session:
        text = runs.get_run(session, response.run_id).error
        error = runs.run_error(session, response.run_id)
    if args.json and error is not None:
        shaped = response.model_dump(mode="json", exclude_none=True)
        return print_json({**shaped, "error": error.model_dump(mode="json", exclude_none=True)})
    return out(args, response, response_text(response, text))


def status(args: argparse.Namespace) -> int:
    async def run() -> int:
        client = await connect_client()
        with client.db.transaction(read_only=True) as session:
            agents.get_agent(session, args.agent_id)
        state = await client.status(args.agent_id)
        if state is None:
            return out(args, {"agent_id": args.agent_id, "status": "idle"}, f"{args.agent_id}: no runs yet")
        return out(args, state, state_text(state))

    return asyncio.run(run())
