"""The `perdure` command line. Every command takes `--json`; bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from perdure.agents import create_agent
from perdure.approvals import NO_PENDING, approve_all
from perdure.convert import to_letta_messages
from perdure.schemas.approvals import Answer, ApprovalAnswer, ClientTool, ClientToolReturn
from perdure.schemas.letta import LettaResponse
from perdure.schemas.agent import AgentCreate, BlockCreate
from perdure.settings import Settings, default_model
from perdure.store import agents, messages, runs
from perdure.store.db import Database, get_database
from perdure.store.errors import InvalidRequestError, NotFoundError
import worker
from starter.client import PerdureClient, RunRejectedError, message_request
from starter.dev import run_dev
from starter.render import agent_text, message_lines, response_text, state_text
from starter.stream import NoRunError, StreamItem
from starter.stream_render import StreamPrinter, json_line
from workflows import names

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE, what a shell reports for a command whose reader closed the pipe."""


class UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command and exit without interpreter finalization.

    After a failed connect, the Temporal SDK's Rust runtime sometimes aborts while Python
    finalizes (SIGABRT/SIGSEGV in about one run in five here), which would turn a clean
    "cannot reach Temporal" into a crash. A CLI has nothing left to finalize once its output
    is flushed, so it leaves with `os._exit`.
    """
    args = _parser().parse_args(argv)
    try:
        code = args.handler(args) or 0
    except (UsageError, NotFoundError, InvalidRequestError, RunRejectedError) as err:
        code = _fail(str(err), EXIT_BAD_INPUT)
    except ValidationError as err:
        code = _fail(_validation_text(err), EXIT_BAD_INPUT)
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE  # the reader left (`perdure follow ... | head`): nothing to say
    except (ConnectionError, RuntimeError, OSError) as err:
        code = _fail(str(err), EXIT_FAILURE)
    except KeyboardInterrupt:
        code = 130
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perdure", description="Durable, stateful LLM agents on Temporal.")
    sub = parser.add_subparsers(dest="command", required=True)

    agent = sub.add_parser("agent", help="create, list, show and delete agents").add_subparsers(dest="action", required=True)
    create = agent.add_parser("create", help="create an agent from flags or a Letta-style JSON file")
    create.add_argument("--file", type=Path, help="agent.json with Letta's create-agent fields")
    create.add_argument("--name")
    create.add_argument("--model", help="handle provider/model, e.g. openai/gpt-4o-mini or scripted/demo")
    create.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    create.add_argument("--context-window", type=int)
    create.add_argument("--system", help="system prompt")
    create.add_argument("--block", action="append", default=[], metavar="LABEL=VALUE")
    create.add_argument("--tool", action="append", default=[], metavar="NAME")
    create.add_argument("--parallel-tool-calls", action="store_true", default=None)
    create.add_argument("--approval-timeout", type=float, metavar="SECONDS", help="default for this agent's pauses (wait forever without)")
    _json_flag(create).set_defaults(handler=_agent_create)
    _json_flag(agent.add_parser("list", help="list agents")).set_defaults(handler=_agent_list)
    show = agent.add_parser("show", help="an agent with its memory blocks")
    show.add_argument("agent_id")
    _json_flag(show).set_defaults(handler=_agent_show)
    delete = agent.add_parser("delete", help="delete an agent and its history")
    delete.add_argument("agent_id")
    _json_flag(delete).set_defaults(handler=_agent_delete)

    send = sub.add_parser("send", help="send a message and wait for the run to stop")
    send.add_argument("agent_id")
    send.add_argument("text")
    send.add_argument("--max-steps", type=int)
    send.add_argument("--client-tools", type=Path, metavar="FILE", help="JSON list of {name, description, parameters} the client runs itself")
    send.add_argument("--approval-timeout", type=float, metavar="SECONDS", help="end the run requires_approval if no answer comes in time")
    _stream_flag(send)
    _json_flag(send).set_defaults(handler=_send)

    follow = sub.add_parser("follow", help="print the latest run's stream from an offset, live until it stops or waits")
    follow.add_argument("agent_id")
    follow.add_argument("--from", dest="from_offset", type=int, default=0, metavar="OFFSET", help="resume at this offset (the last seq_id seen + 1)")
    follow.add_argument("--run", dest="run_id", metavar="RUN_ID", help="one of the agent's runs (run-…) rather than the latest")
    _json_flag(follow).set_defaults(handler=_follow)

    approve = sub.add_parser("approve", help="approve a pending tool call (all pending approvals without an id)")
    approve.add_argument("agent_id")
    approve.add_argument("tool_call_id", nargs="?")
    _answer_flags(approve).set_defaults(handler=_approve)
    deny = sub.add_parser("deny", help="deny a pending tool call")
    deny.add_argument("agent_id")
    deny.add_argument("tool_call_id")
    deny.add_argument("--reason", help="told to the model")
    _answer_flags(deny).set_defaults(handler=_deny)
    tool_return = sub.add_parser("tool-return", help="send the result of a client-side tool call")
    tool_return.add_argument("agent_id")
    tool_return.add_argument("tool_call_id")
    tool_return.add_argument("--status", choices=["success", "error"], default="success")
    tool_return.add_argument("--return", dest="tool_return", required=True, metavar="TEXT")
    _answer_flags(tool_return).set_defaults(handler=_tool_return)
    compact = sub.add_parser("compact", help="compact the agent's context now (a summary replaces old messages)")
    compact.add_argument("agent_id")
    compact.add_argument("--mode", choices=["sliding_window", "all"], default="sliding_window")
    _json_flag(compact).set_defaults(handler=_compact)
    cancel = sub.add_parser("cancel", help="cancel the agent's live run")
    cancel.add_argument("agent_id")
    _json_flag(cancel).set_defaults(handler=_cancel)

    history = sub.add_parser("messages", help="the agent's stored history as Letta messages")
    history.add_argument("agent_id")
    history.add_argument("--limit", type=int)
    _json_flag(history).set_defaults(handler=_messages)

    status = sub.add_parser("status", help="what the agent's latest run is doing")
    status.add_argument("agent_id")
    _json_flag(status).set_defaults(handler=_status)

    sub.add_parser("worker", help="run a worker against TEMPORAL_ADDRESS").set_defaults(handler=_worker)

    dev = sub.add_parser("dev", help="run the embedded Temporal dev server and a worker")
    dev.add_argument("--port", type=int, default=7233)
    dev.add_argument("--ui-port", type=int, default=8233)
    dev.add_argument("--demo", action="store_true", help="run the demo conversation once the worker is up")
    dev.add_argument("--exit-after-demo", action="store_true", help="stop after the demo instead of serving")
    dev.set_defaults(handler=_dev)
    return parser


def _answer_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--no-wait", action="store_true", help="deliver the answer as a signal and return at once")
    _stream_flag(parser)
    return _json_flag(parser)


def _stream_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", action="store_true", help="print tokens as they arrive and each step as it completes")


def _json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _agent_create(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {}
    if args.file is not None:
        fields = _read_json(args.file, "agent file", dict, "a JSON object")
    overrides = {
        "name": args.name,
        "system": args.system,
        "model": args.model,
        "context_window_limit": args.context_window,
        "parallel_tool_calls": args.parallel_tool_calls,
        "approval_timeout_seconds": args.approval_timeout,
    }
    fields.update({key: value for key, value in overrides.items() if value is not None})
    if args.block:
        fields["memory_blocks"] = [*fields.get("memory_blocks", []), *(_block(b).model_dump() for b in args.block)]
    if args.tool:
        fields["tools"] = [*fields.get("tools", []), *args.tool]
    if args.endpoint:
        fields["llm_config"] = {**fields.get("llm_config", {}), "endpoint": args.endpoint}
    if "model" not in fields and "model" not in fields.get("llm_config", {}):
        fields["model"] = default_model()
    agent = create_agent(_db(), AgentCreate.model_validate(fields))
    return _out(args, agent, agent_text(agent))


def _block(spec: str) -> BlockCreate:
    label, sep, value = spec.partition("=")
    if not sep:
        raise UsageError(f"--block takes LABEL=VALUE, got {spec!r}")
    return BlockCreate(label=label, value=value)


def _agent_list(args: argparse.Namespace) -> int:
    with _db().transaction(read_only=True) as session:
        found = agents.list_agents(session)
    if args.json:
        return _print_json([a.model_dump(mode="json") for a in found])
    print("\n".join(agent_text(a, blocks=False) for a in found) or "no agents yet: `perdure agent create`")
    return 0


def _agent_show(args: argparse.Namespace) -> int:
    with _db().transaction(read_only=True) as session:
        agent = agents.get_agent(session, args.agent_id)
    return _out(args, agent, agent_text(agent))


def _agent_delete(args: argparse.Namespace) -> int:
    with _db().transaction() as session:
        agents.delete_agent(session, args.agent_id)
    if args.json:
        return _print_json({"id": args.agent_id, "deleted": True})
    print(f"deleted {args.agent_id}")
    return 0


def _send(args: argparse.Namespace) -> int:
    client_tools = _client_tools(args.client_tools) if args.client_tools else None

    async def send() -> int:
        client = await _client()
        if args.stream:
            request = message_request(
                args.text, max_steps=args.max_steps, client_tools=client_tools, approval_timeout_seconds=args.approval_timeout, stream_tokens=True
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

    return asyncio.run(send())


def _client_tools(path: Path) -> list[ClientTool]:
    data = _read_json(path, "client tools file", list, "a JSON list of {name, description, parameters}")
    return [ClientTool.model_validate(item) for item in data]


def _read_json(path: Path, what: str, kind: type, shape: str) -> Any:
    """Read a JSON file a user named; a missing file, bad JSON or the wrong shape is one line."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read {what} {path}: {err}") from err
    if not isinstance(data, kind):
        raise UsageError(f"{what} {path} must hold {shape}")
    return data


def _approve(args: argparse.Namespace) -> int:
    async def approve(client: PerdureClient) -> list[Answer]:
        if args.tool_call_id is not None:
            return [ApprovalAnswer(tool_call_id=args.tool_call_id, approve=True)]
        answers = approve_all(await client.pending_calls(args.agent_id))
        if not answers:
            raise UsageError(NO_PENDING)
        return answers

    return _deliver(args, names.APPROVE_SIGNAL, approve)


def _deny(args: argparse.Namespace) -> int:
    async def deny(_client: PerdureClient) -> list[Answer]:
        return [ApprovalAnswer(tool_call_id=args.tool_call_id, approve=False, reason=args.reason)]

    return _deliver(args, names.DENY_SIGNAL, deny)


def _tool_return(args: argparse.Namespace) -> int:
    async def tool_return(_client: PerdureClient) -> list[Answer]:
        return [ClientToolReturn(tool_call_id=args.tool_call_id, status=args.status, tool_return=args.tool_return)]

    return _deliver(args, names.CLIENT_TOOL_RETURN_SIGNAL, tool_return)


def _deliver(args: argparse.Namespace, signal: str, build: Callable[[PerdureClient], Awaitable[list[Answer]]]) -> int:
    """Answer through the validated update and print the continuation like `send`; with
    --no-wait, deliver each answer as a signal (as the Temporal UI would) and return."""

    async def deliver() -> int:
        client = await _client()
        answers = await build(client)
        if args.stream and args.no_wait:
            raise UsageError("--stream and --no-wait do not go together: --no-wait returns before anything streams")
        if args.stream:
            return await _print_stream(args, client.stream_answer(args.agent_id, answers))
        if not args.no_wait:
            return _print_response(args, client, await client.answer(args.agent_id, answers))
        for answer in answers:
            await client.signal(args.agent_id, signal, answer.model_dump(mode="json", exclude={"type"}, exclude_none=True))
        ids = [a.tool_call_id for a in answers]
        return _out(args, {"agent_id": args.agent_id, "delivered": ids}, f"delivered {signal} for {', '.join(ids)}")

    return asyncio.run(deliver())


def _follow(args: argparse.Namespace) -> int:
    if args.from_offset < 0:
        raise UsageError("--from must be 0 or more")

    async def follow() -> int:
        client = await _client()
        return await _print_stream(args, client.follow(args.agent_id, args.from_offset, args.run_id))

    return asyncio.run(follow())


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


def _compact(args: argparse.Namespace) -> int:
    async def compact() -> int:
        client = await _client()
        result = await client.compact(args.agent_id, args.mode)
        if result.system_overflow:
            raise UsageError(result.detail or "the system prompt does not fit the context window")
        if result.mode == "none":
            text = f"{args.agent_id}: nothing to compact ({result.detail}); {result.tokens_before} tokens in context"
        else:
            text = f"{args.agent_id}: compacted ({result.mode}): {result.tokens_before} -> {result.tokens_after} tokens, {result.evicted} messages out of context"
        return _out(args, result, text)

    return asyncio.run(compact())


def _cancel(args: argparse.Namespace) -> int:
    async def cancel() -> int:
        client = await _client()
        state = await client.cancel(args.agent_id)
        return _out(args, state, f"{args.agent_id}: run {state.run_id} {state.status.value} ({state.stop_reason.value if state.stop_reason else '?'})")

    return asyncio.run(cancel())


def _print_response(args: argparse.Namespace, client: PerdureClient, response: LettaResponse) -> int:
    with client.db.transaction(read_only=True) as session:
        error = runs.get_run(session, response.run_id).error
    return _out(args, response, response_text(response, error))


def _messages(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with _db().transaction(read_only=True) as session:
        agents.get_agent(session, args.agent_id)
        stored = messages.list_messages(session, args.agent_id, limit=args.limit)
    letta = to_letta_messages(stored)
    if args.json:
        return _print_json([m.model_dump(mode="json", exclude_none=True) for m in letta])
    print("\n".join(message_lines(letta)) or "no messages yet")
    return 0


def _status(args: argparse.Namespace) -> int:
    async def status() -> int:
        client = await _client()
        with client.db.transaction(read_only=True) as session:
            agents.get_agent(session, args.agent_id)
        state = await client.status(args.agent_id)
        if state is None:
            return _out(args, {"agent_id": args.agent_id, "status": "idle"}, f"{args.agent_id}: no runs yet")
        return _out(args, state, state_text(state))

    return asyncio.run(status())


def _worker(args: argparse.Namespace) -> int:
    worker.main()
    return 0


def _dev(args: argparse.Namespace) -> int:
    return asyncio.run(run_dev(port=args.port, ui_port=args.ui_port, demo=args.demo, exit_after_demo=args.exit_after_demo))


async def _client() -> PerdureClient:
    try:
        return await PerdureClient.connect()
    except RuntimeError as err:
        settings = Settings.from_env()
        raise ConnectionError(
            f"cannot reach Temporal at {settings.temporal_address} ({err}); start it with `perdure dev`"
        ) from err


def _db() -> Database:
    return get_database(Settings.from_env().database_url)


def _out(args: argparse.Namespace, value: BaseModel | dict[str, Any], text: str) -> int:
    if args.json:
        data = value.model_dump(mode="json", exclude_none=True) if isinstance(value, BaseModel) else value
        return _print_json(data)
    print(text)
    return 0


def _print_json(data: Any) -> int:
    print(json.dumps(data, indent=2))
    return 0


def _validation_text(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "input"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"invalid {where}: {first['msg']}{more}"


def _fail(message: str, code: int) -> int:
    print(f"perdure: error: {message}", file=sys.stderr)
    return code
