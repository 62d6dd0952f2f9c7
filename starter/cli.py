"""The `perdure` command line. Every command takes `--json`; bad input exits 2 with one line.

This module is the parser and the exit codes; the commands live in `cli_agents` (the store)
and `cli_runs` (the runs), their shared helpers in `cli_common`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

import observability
import worker
from perdure.store.db import error_line
from perdure.store.errors import InvalidRequestError, NotFoundError
from perdure.settings import SettingsError
from perdure.store.schema import SchemaOutOfDateError
from starter import cli_agents, cli_db, cli_mcp, cli_runs, cli_tools
from starter.cli_common import DEFAULT_API_PORT, UsageError, json_flag
from starter.updates import RunRejectedError
from starter.outages import DEFAULT_TIMEOUT_S
from worker import TemporalConfigError
from starter.workers import run_workers

EXIT_BAD_INPUT = 2
BAD_INPUT = (
    UsageError,
    NotFoundError,
    InvalidRequestError,
    RunRejectedError,
    SchemaOutOfDateError,
    SettingsError,
    TemporalConfigError,
    observability.MetricsEndpointError,
)
"""What the user can fix: one line, exit 2 (an out-of-date database, unusable Temporal or Perdure
settings and an unusable metrics port included)."""
EXIT_FAILURE = 1
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE, what a shell reports for a command whose reader closed the pipe."""


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
    except BAD_INPUT as err:
        code = _fail(str(err), EXIT_BAD_INPUT)
    except ValidationError as err:
        code = _fail(_validation_text(err), EXIT_BAD_INPUT)
    except OperationalError as err:
        code = _fail(f"cannot reach the database: {error_line(err)}", EXIT_FAILURE)
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE  # the reader left (`perdure follow ... | head`): nothing to say
    except (ConnectionError, RuntimeError, OSError) as err:
        code = _fail(str(err), EXIT_FAILURE)
    except KeyboardInterrupt:
        code = 130
    observability.flush_traces()
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments are one line like every other bad input (`perdure: error: ...`, exit 2),
    not argparse's usage block; `--help` still shows the usage. Subcommands use it too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"perdure: error: {self.prog}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="perdure", description="Durable, stateful LLM agents on Temporal.")
    sub = parser.add_subparsers(dest="command", required=True)

    agent = sub.add_parser("agent", help="create, list, show and delete agents").add_subparsers(
        dest="action", required=True
    )
    create = agent.add_parser("create", help="create an agent from flags or a Letta-style JSON file")
    create.add_argument("--file", type=Path, help="agent.json with Letta's create-agent fields")
    create.add_argument("--name")
    create.add_argument("--model", help="handle provider/model, e.g. openai/gpt-4o-mini or scripted/demo")
    create.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    create.add_argument("--context-window", type=int)
    create.add_argument("--system", help="system prompt")
    create.add_argument("--block", action="append", default=[], metavar="LABEL=VALUE")
    create.add_argument("--tool", action="append", default=[], metavar="NAME")
    create.add_argument(
        "--tool-env", action="append", default=[], metavar="KEY=VALUE", help="a variable the agent's custom tools see"
    )
    create.add_argument("--parallel-tool-calls", action="store_true", default=None)
    create.add_argument(
        "--approval-timeout",
        type=float,
        metavar="SECONDS",
        help="default for this agent's pauses (wait forever without)",
    )
    json_flag(create).set_defaults(handler=cli_agents.create)
    json_flag(agent.add_parser("list", help="list agents")).set_defaults(handler=cli_agents.list_agents)
    show = agent.add_parser("show", help="an agent with its memory blocks")
    show.add_argument("agent_id")
    json_flag(show).set_defaults(handler=cli_agents.show)
    delete = agent.add_parser("delete", help="delete an agent and its history")
    delete.add_argument("agent_id")
    json_flag(delete).set_defaults(handler=cli_agents.delete)

    send = sub.add_parser("send", help="send a message and wait for the run to stop")
    send.add_argument("agent_id")
    send.add_argument("text")
    send.add_argument("--max-steps", type=int)
    send.add_argument(
        "--client-tools",
        type=Path,
        metavar="FILE",
        help="JSON list of {name, description, parameters} the client runs itself",
    )
    send.add_argument(
        "--approval-timeout",
        type=float,
        metavar="SECONDS",
        help="end the run requires_approval if no answer comes in time",
    )
    _stream_flag(send)
    _timeout_flag(send)
    json_flag(send).set_defaults(handler=cli_runs.send)

    follow = sub.add_parser("follow", help="print the latest run's stream from an offset, live until it stops or waits")
    follow.add_argument("agent_id")
    follow.add_argument(
        "--from",
        dest="from_offset",
        type=int,
        default=0,
        metavar="OFFSET",
        help="resume at this offset (the last seq_id seen + 1)",
    )
    follow.add_argument(
        "--run", dest="run_id", metavar="RUN_ID", help="one of the agent's runs (run-…) rather than the latest"
    )
    _timeout_flag(follow)
    json_flag(follow).set_defaults(handler=cli_runs.follow)

    approve = sub.add_parser("approve", help="approve a pending tool call (all pending approvals without an id)")
    approve.add_argument("agent_id")
    approve.add_argument("tool_call_id", nargs="?")
    _answer_flags(approve).set_defaults(handler=cli_runs.approve)
    deny = sub.add_parser("deny", help="deny a pending tool call")
    deny.add_argument("agent_id")
    deny.add_argument("tool_call_id")
    deny.add_argument("--reason", help="told to the model")
    _answer_flags(deny).set_defaults(handler=cli_runs.deny)
    tool_return = sub.add_parser("tool-return", help="send the result of a client-side tool call")
    tool_return.add_argument("agent_id")
    tool_return.add_argument("tool_call_id")
    tool_return.add_argument("--status", choices=["success", "error"], default="success")
    tool_return.add_argument("--return", dest="tool_return", required=True, metavar="TEXT")
    _answer_flags(tool_return).set_defaults(handler=cli_runs.tool_return)
    compact = sub.add_parser("compact", help="compact the agent's context now (a summary replaces old messages)")
    compact.add_argument("agent_id")
    compact.add_argument("--mode", choices=["sliding_window", "all"], default="sliding_window")
    json_flag(compact).set_defaults(handler=cli_runs.compact)
    cancel = sub.add_parser("cancel", help="cancel the agent's live run")
    cancel.add_argument("agent_id")
    json_flag(cancel).set_defaults(handler=cli_runs.cancel)

    cli_tools.add_parser(sub)

    history = sub.add_parser("messages", help="the agent's stored history as Letta messages")
    history.add_argument("agent_id")
    history.add_argument("--limit", type=int)
    json_flag(history).set_defaults(handler=cli_agents.history)

    status = sub.add_parser("status", help="what the agent's latest run is doing")
    status.add_argument("agent_id")
    json_flag(status).set_defaults(handler=cli_runs.status)

    cli_mcp.add_parser(sub)

    run_worker = sub.add_parser("worker", help="run a worker against TEMPORAL_ADDRESS")
    run_worker.add_argument("--processes", type=int, default=1, metavar="N", help="N worker processes, supervised")
    _metrics_flag(run_worker, "with --processes N, process i serves PORT+i-1")
    run_worker.set_defaults(handler=_worker)

    db = sub.add_parser("db", help="the database's schema").add_subparsers(dest="action", required=True)
    upgrade = db.add_parser("upgrade", help="apply pending schema migrations to PERDURE_DATABASE_URL")
    json_flag(upgrade).set_defaults(handler=cli_db.upgrade)

    serve = sub.add_parser("serve", help="serve the Letta-compatible HTTP API (auth: PERDURE_API_KEY)")
    serve.add_argument("--host", default="127.0.0.1", help="without PERDURE_API_KEY, loopback only")
    serve.add_argument("--port", type=int, default=DEFAULT_API_PORT)
    serve.set_defaults(handler=_serve)

    dev = sub.add_parser("dev", help="run the embedded Temporal dev server, a worker and the HTTP API")
    dev.add_argument("--port", type=int, default=7233)
    dev.add_argument("--ui-port", type=int, default=8233)
    dev.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="port of the HTTP API on 127.0.0.1")
    dev.add_argument("--demo", action="store_true", help="run the demo conversation once the worker is up")
    dev.add_argument("--exit-after-demo", action="store_true", help="stop after the demo instead of serving")
    _metrics_flag(dev, "on 127.0.0.1")
    dev.set_defaults(handler=_dev)
    return parser


def _answer_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--no-wait", action="store_true", help="deliver the answer as a signal and return at once")
    _stream_flag(parser)
    _timeout_flag(parser)
    return json_flag(parser)


def _timeout_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to ride through a Temporal outage before giving up (default {DEFAULT_TIMEOUT_S:g})",
    )


def _stream_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stream", action="store_true", help="print tokens as they arrive and each step as it completes"
    )


def _metrics_flag(parser: argparse.ArgumentParser, where: str) -> None:
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        help=f"serve Prometheus metrics at :PORT/metrics ({where}; default: {observability.METRICS_PORT_ENV})",
    )


def _metrics_port(args: argparse.Namespace) -> int | None:
    """The flag's port, else the environment's, else None (no metrics endpoint)."""
    if args.metrics_port is None:
        return observability.metrics_port_from_env()
    return observability.metrics_port(args.metrics_port, "--metrics-port")


def _worker(args: argparse.Namespace) -> int:
    if args.processes < 1:
        raise UsageError(f"--processes must be at least 1, not {args.processes}")
    metrics_port = _metrics_port(args)
    if args.processes > 1:
        return run_workers(args.processes, metrics_port)
    worker.serve(metrics_port)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from starter.api.serve import run_serve  # FastAPI and uvicorn: only the commands that serve load them

    return asyncio.run(run_serve(args.host, args.port))


def _dev(args: argparse.Namespace) -> int:
    from starter.dev import run_dev

    metrics_port = _metrics_port(args)
    if metrics_port is not None:
        observability.install_metrics_runtime(observability.LOOPBACK, metrics_port)
        print(f"Prometheus metrics at http://{observability.LOOPBACK}:{metrics_port}/metrics", flush=True)
    return asyncio.run(
        run_dev(
            port=args.port,
            ui_port=args.ui_port,
            api_port=args.api_port,
            demo=args.demo,
            exit_after_demo=args.exit_after_demo,
        )
    )


def _validation_text(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "input"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"invalid {where}: {first['msg']}{more}"


def _fail(message: str, code: int) -> int:
    print(f"perdure: error: {message}", file=sys.stderr)
    return code
