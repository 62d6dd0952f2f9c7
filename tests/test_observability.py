"""Telemetry for real: a `perdure worker --metrics-port` process scraped over HTTP, and traces
exported over OTLP/HTTP by a worker process and by `perdure send` to a receiver in the test
that decodes the protobuf export requests.

Each test has a worker process of its own on a task queue of its own, so the counts it reads
are exactly those of its runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from letta_client import AsyncLetta
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from temporalio.testing import WorkflowEnvironment

import observability
from perdure.schemas.approvals import ApprovalAnswer
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall
from perdure.settings import Settings
from perdure.store.db import Database
from starter.client import PerdureClient
from tests.conftest import API_KEY, AgentFactory, eventually
from tests.helpers import PERDURE, REPO
from tests.ports import free_port

SECRET = "sk-obs-test-secret-0123456789"
"""A provider key in the worker's environment: it must never appear in what is exported."""
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
"""A Letta program's own trace, passed to the HTTP API in a W3C `traceparent` header."""
SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def queue() -> str:
    return f"perdure-obs-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker_env(temporal_address: str, settings: Settings, llm: ScriptedLLMServer, queue: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PERDURE_", "TEMPORAL_", "OTEL_"))}
    env.update(
        TEMPORAL_ADDRESS=temporal_address,
        PERDURE_DATABASE_URL=settings.database_url,
        PERDURE_TASK_QUEUE=queue,
        PERDURE_SCRIPTED_BASE_URL=llm.base_url,
        OPENAI_API_KEY=SECRET,
    )
    return env


def start_worker(args: list[str], env: dict[str, str], log: Path) -> WorkerProcess:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(PERDURE), "worker", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return WorkerProcess(process, log)


def stop(worker: WorkerProcess) -> None:
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(30)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


# --- metrics ---------------------------------------------------------------------------------


def samples(exposition: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: name, labels, value."""
    found = []
    for line in exposition.splitlines():
        matched = SAMPLE.match(line)
        if matched and not line.startswith("#"):
            name, labels, value = matched.groups()
            found.append((name, dict(LABEL.findall(labels or "")), float(value)))
    return found


def total(exposition: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for n, ls, v in samples(exposition) if n == name and labels.items() <= ls.items())


@pytest.fixture
def metrics_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[WorkerProcess, str]]:
    port = free_port()
    worker = start_worker(["--metrics-port", str(port)], worker_env, tmp_path / "worker.log")
    try:
        yield worker, f"http://127.0.0.1:{port}/metrics"
    finally:
        stop(worker)


async def scrape(url: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    response.raise_for_status()
    return response.text


async def test_the_metrics_endpoint_serves_the_sdk_metrics_and_perdures(
    metrics_worker: tuple[WorkerProcess, str],
    temporal_env: WorkflowEnvironment,
    db: Database,
    queue: str,
    llm: ScriptedLLMServer,
    make_agent: AgentFactory,
    model_name: str,
) -> None:
    worker, url = metrics_worker
    client = PerdureClient(temporal_env.client, db, queue)
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
    )
    held = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "Likes tea."})
    llm.script(
        model_name,
        [
            ScriptedReply(tool_calls=[ScriptedToolCall(name="conversation_search", arguments={"query": "tea"})]),
            ScriptedReply(tool_calls=[held]),
            ScriptedReply(content="Noted."),
        ],
    )
    model = f"scripted/{model_name}"

    paused = await asyncio.wait_for(client.send_message(agent.id, "I like tea."), 60)
    assert paused.stop_reason.stop_reason == "requires_approval"
    waiting = await eventually(lambda: _scraped_when(url, "perdure_person_waits_started_total"), timeout=30)
    assert total(waiting, "perdure_person_waits_started_total") == 1
    assert total(waiting, "perdure_person_waits_ended_total") == 0

    done = await asyncio.wait_for(client.answer(agent.id, [ApprovalAnswer(tool_call_id=held.id, approve=True)]), 60)
    assert done.stop_reason.stop_reason == "end_turn"
    text = await eventually(lambda: _scraped_when(url, "perdure_runs_finished_total"), timeout=30)

    assert total(text, "perdure_steps_total", model=model) == 3
    assert total(text, "perdure_tool_calls_total", tool="conversation_search", status="success") == 1
    assert total(text, "perdure_tool_calls_total", tool="core_memory_append", status="success") == 1
    prompt = total(text, "perdure_llm_tokens_total", kind="prompt", provider="scripted", model=model)
    completion = total(text, "perdure_llm_tokens_total", kind="completion", provider="scripted", model=model)
    assert prompt > 100, "each request carries the system prompt and memory"
    assert 0 < completion < prompt
    assert total(text, "perdure_llm_request_latency_count", model=model) == 3
    assert total(text, "perdure_llm_request_latency_sum", model=model) > 0
    assert total(text, "perdure_llm_request_latency_bucket", model=model, le="600000") == 3, "buckets up to minutes"
    assert total(text, "perdure_person_waits_ended_total", outcome="answered") == 1
    assert total(text, "perdure_runs_finished_total", stop_reason="end_turn") == 1
    # The SDK's own, with this worker's task queue
    assert total(text, "temporal_workflow_completed", task_queue=queue) >= 1
    assert total(text, "temporal_activity_execution_latency_count", activity_type="llm_step") == 3
    assert total(text, "temporal_num_pollers", task_queue=queue) >= 1
    assert SECRET not in text

    llm.script(model_name, [ScriptedReply(content="SUMMARY: likes tea.")])
    compacted = await asyncio.wait_for(client.compact(agent.id, "all"), 60)
    assert compacted.evicted > 0
    text = await eventually(lambda: _scraped_when(url, "perdure_llm_tokens_total", activity_type="compact_context"), 30)
    assert total(text, "perdure_llm_tokens_total", activity_type="compact_context", kind="prompt", model=model) > 0
    assert total(text, "perdure_llm_request_latency_count", activity_type="compact_context") == 1
    assert total(text, "perdure_steps_total", model=model) == 3, "a compaction is not a step"
    assert worker.process.poll() is None


async def _scraped_when(url: str, name: str, **labels: str) -> str | None:
    """The exposition once `name` has a sample with `labels` (metrics reach the endpoint a moment
    after the event)."""
    try:
        text = await scrape(url)
    except httpx.HTTPError:
        return None
    return text if total(text, name, **labels) > 0 else None


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PERDURE), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http", "--metrics-port must be a port number (1-65535), not 'http'"),
        ("0", "--metrics-port must be a port number (1-65535), not 0"),
        ("70000", "--metrics-port must be a port number (1-65535), not 70000"),
    ],
)
def test_a_bad_metrics_port_is_one_line_and_exit_2(value: str, message: str, worker_env: dict[str, str]) -> None:
    refused = run_cli(["worker", "--metrics-port", value], worker_env)
    assert (refused.returncode, refused.stderr) == (2, f"perdure: error: {message}\n")
    refused = run_cli(["dev", "--metrics-port", value], worker_env)
    assert (refused.returncode, refused.stderr) == (2, f"perdure: error: {message}\n")


def test_a_bad_metrics_port_in_the_environment_is_one_line_and_exit_2(worker_env: dict[str, str]) -> None:
    refused = run_cli(["worker"], {**worker_env, "PERDURE_METRICS_PORT": "nine"})
    assert (refused.returncode, refused.stderr) == (
        2,
        "perdure: error: PERDURE_METRICS_PORT must be a port number (1-65535), not 'nine'\n",
    )
    alone = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=REPO,
        env={**worker_env, "PERDURE_METRICS_PORT": "nine"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (alone.returncode, alone.stderr) == (
        2,
        "worker: error: PERDURE_METRICS_PORT must be a port number (1-65535), not 'nine'\n",
    )


def test_a_metrics_port_in_use_is_one_line_and_exit_2(worker_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = run_cli(["worker", "--metrics-port", str(port)], worker_env)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.splitlines() == [
            f"perdure: error: metrics port {port} cannot be used: Address already in use (os error 98)"
        ]
        # With several processes, every port is checked before any process starts
        refused = run_cli(["worker", "--processes", "2", "--metrics-port", str(port - 1)], worker_env)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.splitlines() == [
            f"perdure: error: metrics port {port} cannot be used: Address already in use"
        ]
    refused = run_cli(["worker", "--processes", "3", "--metrics-port", "65534"], worker_env)
    assert (refused.returncode, refused.stderr) == (
        2,
        "perdure: error: --metrics-port 65534 with 3 processes needs ports up to 65536, past 65535\n",
    )


async def test_each_worker_process_serves_metrics_on_its_own_port(worker_env: dict[str, str], tmp_path: Path) -> None:
    first = free_port()
    while _taken(first + 1):
        first = free_port()
    supervisor = start_worker(["--processes", "2", "--metrics-port", str(first)], worker_env, tmp_path / "pool.log")
    try:
        for port in (first, first + 1):
            text = await eventually(
                lambda p=port: _scraped_when(f"http://127.0.0.1:{p}/metrics", "temporal_num_pollers"), timeout=60
            )
            assert total(text, "temporal_num_pollers") >= 1
        assert f"metrics on port {first + 1}" in supervisor.output()
    finally:
        stop(supervisor)


def _taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


async def test_dev_serves_metrics_on_loopback(tmp_path: Path) -> None:
    """`perdure dev --metrics-port`: the demo's run shows on the endpoint of the embedded worker."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PERDURE_", "TEMPORAL_", "OTEL_"))}
    env.update(PERDURE_HOME=str(tmp_path / "home"), PERDURE_DEFAULT_MODEL="scripted/demo")
    command = ["dev", "--port", str(free_port()), "--ui-port", str(free_port()), "--api-port", str(free_port())]
    log = tmp_path / "dev.log"
    with log.open("ab") as out:
        dev = subprocess.Popen(
            [str(PERDURE), *command, "--demo", "--metrics-port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await eventually(lambda: "worker running" in log.read_text(errors="replace") or dev.poll() is not None, 120)
        assert dev.poll() is None, log.read_text(errors="replace")
        assert f"Prometheus metrics at http://127.0.0.1:{port}/metrics" in log.read_text()
        text = await eventually(lambda: _scraped_when(f"http://127.0.0.1:{port}/metrics", "perdure_steps_total"), 30)
        assert total(text, "perdure_steps_total", model="scripted/demo") >= 1
        assert total(text, "perdure_runs_finished_total") >= 1
        assert total(text, "temporal_num_pollers") >= 1
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()


# --- traces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "perdure-worker"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_when_an_otlp_endpoint_is_set(environ: dict[str, str], on: bool) -> None:
    assert observability.tracing_requested(environ) is on


@dataclass(frozen=True)
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, object]


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: what a collector would get."""

    spans: list[Span] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    found.append(
                        Span(
                            resource.get("service.name", ""),
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            attributes,
                        )
                    )
        with self.lock:
            self.raw.append(body)
            self.spans.extend(found)

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


def _value(value: object) -> object:
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]  # type: ignore[attr-defined]
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
                self.send_response(404)
            else:
                received.take(body)
                self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads what arrived, not the access log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def traced(env: dict[str, str], endpoint: str, service: str) -> dict[str, str]:
    return {
        **env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


@pytest.fixture
def traced_worker(receiver: tuple[Receiver, str], worker_env: dict[str, str], tmp_path: Path) -> Iterator[Receiver]:
    received, endpoint = receiver
    worker = start_worker([], traced(worker_env, endpoint, "perdure-worker"), tmp_path / "worker.log")
    try:
        yield received
    finally:
        stop(worker)


def runs_exported(received: Receiver, count: int) -> list[Span] | None:
    """Everything received once `count` runs' workflow spans are in (each is sent when its run ends)."""
    spans = received.snapshot()
    return spans if sum(s.name == "RunWorkflow:AgentRun" for s in spans) == count else None


async def test_a_run_is_one_trace_from_the_send_through_its_llm_and_tool_calls(
    traced_worker: Receiver,
    receiver: tuple[Receiver, str],
    worker_env: dict[str, str],
    llm: ScriptedLLMServer,
    make_agent: AgentFactory,
    model_name: str,
) -> None:
    received, endpoint = receiver
    agent = make_agent(memory_blocks=[{"label": "human", "value": ""}], tools=["core_memory_append"])
    remember = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "Ada."})
    llm.script(
        model_name,
        [ScriptedReply(tool_calls=[remember]), ScriptedReply(content="Hello Ada."), ScriptedReply(content="Again.")],
    )
    cli_env = traced(worker_env, endpoint, "perdure-cli")
    for message in ("I am Ada.", "Hi again."):
        sent = await asyncio.to_thread(run_cli, ["send", agent.id, message], cli_env)
        assert sent.returncode == 0, sent.stderr
    spans = await eventually(lambda: runs_exported(received, 2), timeout=60)

    sends = [s for s in spans if s.service == "perdure-cli" and s.name.startswith("StartUpdateWithStartWorkflow:")]
    assert len(sends) == 2, [s.name for s in spans if s.service == "perdure-cli"]
    assert {s.attributes["temporalWorkflowID"] for s in sends} == {agent.id}
    first, second = (s.trace_id for s in sends)
    assert first != second, "each run is a trace of its own"

    def names_in(trace_id: str) -> list[str]:
        return [s.name for s in spans if s.trace_id == trace_id and s.service == "perdure-worker"]

    assert names_in(first).count("RunWorkflow:AgentRun") == 1
    assert names_in(first).count("RunActivity:llm_step") == 2
    assert names_in(first).count("RunActivity:execute_tool") == 1
    assert names_in(first).count("RunActivity:checkpoint_step") == 2
    assert names_in(second).count("RunWorkflow:AgentRun") == 1
    assert names_in(second).count("RunActivity:llm_step") == 1
    assert "RunActivity:execute_tool" not in names_in(second)

    llm_span = next(s for s in spans if s.trace_id == first and s.name == "RunActivity:llm_step")
    assert llm_span.attributes["gen_ai.request.model"] == f"scripted/{model_name}"
    assert llm_span.attributes["gen_ai.provider.name"] == "scripted"
    assert int(str(llm_span.attributes["gen_ai.usage.input_tokens"])) > 0
    tool_span = next(s for s in spans if s.trace_id == first and s.name == "RunActivity:execute_tool")
    assert tool_span.attributes["gen_ai.tool.name"] == "core_memory_append"
    by_id = {s.span_id: s for s in spans}
    workflow_span = next(s for s in spans if s.trace_id == first and s.name == "RunWorkflow:AgentRun")
    assert sends[0].span_id in _ancestors(tool_span, by_id)
    assert sends[0].span_id in _ancestors(workflow_span, by_id)
    assert not any(SECRET.encode() in body for body in received.raw)


def _ancestors(span: Span, by_id: dict[str, Span]) -> list[str]:
    chain = []
    while span.parent_id and span.parent_id in by_id:
        chain.append(span.parent_id)
        span = by_id[span.parent_id]
    if span.parent_id:
        chain.append(span.parent_id)
    return chain


async def test_a_message_through_the_http_api_continues_the_callers_trace(
    traced_worker: Receiver,
    receiver: tuple[Receiver, str],
    worker_env: dict[str, str],
    llm: ScriptedLLMServer,
    make_agent: AgentFactory,
    model_name: str,
) -> None:
    received, endpoint = receiver
    agent = make_agent()
    llm.script(model_name, [ScriptedReply(content="Hello.")])
    port = free_port()
    env = {**traced(worker_env, endpoint, "perdure-api"), "PERDURE_API_KEY": API_KEY}
    api = subprocess.Popen(
        [str(PERDURE), "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        async def serving() -> bool:
            assert api.poll() is None, api.communicate()
            try:
                async with httpx.AsyncClient() as http:
                    health = await http.get(f"{base}/v1/health/", headers={"Authorization": f"Bearer {API_KEY}"})
                    return health.status_code == 200
            except httpx.ConnectError:
                return False

        await eventually(serving, timeout=60)
        async with AsyncLetta(base_url=base, api_key=API_KEY) as letta:
            response = await letta.agents.messages.create(
                agent.id, input="Hi", extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
            )
        assert response.stop_reason.stop_reason == "end_turn"
        await eventually(lambda: runs_exported(received, 1) and api_sends(received), timeout=60)
    finally:
        api.send_signal(signal.SIGINT)
        api.wait(30)
    (send,) = api_sends(received)
    spans = await eventually(lambda: _reaching(received.snapshot(), send, CALLER_SPAN), timeout=30)
    assert {s.name for s in spans if s.service == "perdure-api" and s.trace_id == CALLER_TRACE} > {send.name}, (
        "the request's own spans (FastAPI's) lead from the caller to the send"
    )
    run = next(s for s in spans if s.name == "RunWorkflow:AgentRun")
    assert run.trace_id == CALLER_TRACE and run.parent_id == send.span_id
    assert {s.name for s in spans if s.trace_id == send.trace_id} >= {"RunActivity:llm_step", "RunActivity:finish_run"}


def api_sends(received: Receiver) -> list[Span]:
    return [
        s
        for s in received.snapshot()
        if s.service == "perdure-api" and s.name == "StartUpdateWithStartWorkflow:AgentRun"
    ]


def _reaching(spans: list[Span], span: Span, ancestor: str) -> list[Span] | None:
    """`spans` once `span`'s chain of parents, all received, reaches `ancestor`."""
    by_id = {s.span_id: s for s in spans}
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
    return spans if span.parent_id == ancestor else None


async def test_the_calls_an_approval_releases_stay_in_the_runs_trace(
    traced_worker: Receiver,
    receiver: tuple[Receiver, str],
    worker_env: dict[str, str],
    llm: ScriptedLLMServer,
    make_agent: AgentFactory,
    model_name: str,
) -> None:
    received, endpoint = receiver
    agent = make_agent(
        memory_blocks=[{"label": "human", "value": ""}],
        tools=["core_memory_append"],
        tool_rules=[{"type": "requires_approval", "tool_name": "core_memory_append"}],
    )
    held = ScriptedToolCall(name="core_memory_append", arguments={"label": "human", "content": "Likes tea."})
    llm.script(model_name, [ScriptedReply(tool_calls=[held]), ScriptedReply(content="Noted.")])
    cli_env = traced(worker_env, endpoint, "perdure-cli")
    paused = await asyncio.to_thread(run_cli, ["send", agent.id, "I like tea."], cli_env)
    assert paused.returncode == 0 and "requires_approval" in paused.stdout, paused.stdout + paused.stderr
    approved = await asyncio.to_thread(run_cli, ["approve", agent.id, held.id], cli_env)
    assert approved.returncode == 0 and "end_turn" in approved.stdout, approved.stdout + approved.stderr
    spans = await eventually(lambda: runs_exported(received, 1), timeout=60)

    send = next(s for s in spans if s.name == "StartUpdateWithStartWorkflow:AgentRun")
    answer = next(s for s in spans if s.name == "StartWorkflowUpdate:answer")
    assert answer.trace_id != send.trace_id, "the answer is a trace of its own"
    assert next(s for s in spans if s.name == "HandleUpdate:answer").trace_id == answer.trace_id
    tool = next(s for s in spans if s.name == "RunActivity:execute_tool")
    assert tool.trace_id == send.trace_id
    assert tool.attributes["gen_ai.tool.name"] == "core_memory_append"
