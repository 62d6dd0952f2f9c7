"""Opt-in telemetry of a Perdure process: Prometheus metrics on a worker, OpenTelemetry traces anywhere.

Metrics: `perdure worker --metrics-port PORT` (or `PERDURE_METRICS_PORT`) gives the process a
Temporal runtime whose Prometheus endpoint serves the SDK's metrics (`temporal_*`) and Perdure's
(`perdure_*`, recorded through the SDK's replay-safe metric meters, see `perdure.metrics`). The
runtime must be the default before the first client connects, so the entry points install it
first (`install_metrics_runtime`).

Traces: on when the standard OpenTelemetry variables name an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true`
or `OTEL_TRACES_EXPORTER=none` turn it off). Every Temporal client Perdure makes then carries
the SDK's `OpenTelemetryPlugin`, so a send starts the trace and the run's workflow, LLM, tool,
checkpoint and compaction spans join it. Spans go out as OTLP over HTTP (protobuf), batched; the
exporter reads the rest of its settings (`OTEL_EXPORTER_OTLP_HEADERS`, timeouts, ...) and the
resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) from the environment itself. The
packages come with the `otel` extra.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

from temporalio.plugin import SimplePlugin
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from perdure import metrics

if TYPE_CHECKING:
    from temporalio.contrib.opentelemetry import ReplaySafeTracerProvider

METRICS_PORT_ENV = "PERDURE_METRICS_PORT"
ALL_INTERFACES = "0.0.0.0"
LOOPBACK = "127.0.0.1"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
DEFAULT_SERVICE_NAME = "perdure"
LLM_LATENCY_BUCKETS_MS = [50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000, 600000]
"""The SDK's default buckets stop at 10 s; a model's answer can take minutes."""


class MetricsEndpointError(ValueError):
    """A metrics port that cannot be served (not a port, or taken): bad input the user fixes,
    so the CLI says it in one line and exits 2."""


class TracingUnavailableError(RuntimeError):
    """Tracing was asked for by the environment, but the `otel` extra is not installed."""


def metrics_port(value: str, source: str) -> int:
    """A TCP port from the command line or the environment; `source` names where it came from."""
    try:
        port = int(value)
    except ValueError:
        raise MetricsEndpointError(f"{source} must be a port number (1-65535), not {value!r}") from None
    if not 1 <= port <= 65535:
        raise MetricsEndpointError(f"{source} must be a port number (1-65535), not {port}")
    return port


def metrics_port_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    value = (os.environ if environ is None else environ).get(METRICS_PORT_ENV, "").strip()
    return metrics_port(value, METRICS_PORT_ENV) if value else None


def check_ports_free(host: str, ports: list[int]) -> None:
    """Refuse at once, before anything starts, a port another process already listens on: a
    supervisor would otherwise restart a worker that cannot bind it forever."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as err:
                raise MetricsEndpointError(f"metrics port {port} cannot be used: {err.strerror}") from None


def install_metrics_runtime(host: str, port: int) -> Runtime:
    """Make a runtime serving Prometheus metrics on host:port the process's default, so every
    client (and so every worker) made afterwards reports through it."""
    try:
        prometheus = PrometheusConfig(
            bind_address=f"{host}:{port}", histogram_bucket_overrides={metrics.LLM_LATENCY: LLM_LATENCY_BUCKETS_MS}
        )
        runtime = Runtime(telemetry=TelemetryConfig(metrics=prometheus))
    except ValueError as err:  # the SDK says "Failed starting Prometheus exporter: Address already in use ..."
        reason = str(err).split(": ", 1)[-1]
        raise MetricsEndpointError(f"metrics port {port} cannot be used: {reason}") from None
    Runtime.set_default(runtime, error_if_already_set=False)
    return runtime


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OpenTelemetry variables ask for traces to be exported."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def tracing_plugins() -> list[SimplePlugin]:
    """What a Temporal client adds to trace its calls and, on a worker, the runs it serves:
    the SDK's OpenTelemetry plugin when tracing is on, else nothing."""
    if not tracing_requested():
        return []
    _tracer_provider()
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin

    return [OpenTelemetryPlugin(add_temporal_spans=True)]


def flush_traces() -> None:
    """Send the spans still batched (a CLI command leaves with `os._exit`, which would drop them)."""
    if tracing_requested():
        _tracer_provider().force_flush()


def shutdown_traces() -> None:
    """Flush and stop the exporter when the process ends its work (a worker stopping)."""
    if tracing_requested():
        _tracer_provider().shutdown()


@functools.cache
def _tracer_provider() -> ReplaySafeTracerProvider:
    """The process's one tracer provider, made replay-safe for workflow code (span ids from the
    workflow's deterministic randomness, no span ended twice by a replay) and set as the global one."""
    try:
        import opentelemetry.trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from temporalio.contrib.opentelemetry import create_tracer_provider
    except ImportError as err:
        raise TracingUnavailableError(
            f"tracing is on ({' or '.join(ENDPOINT_VARIABLES)} is set) but OpenTelemetry is not installed: "
            "pip install 'perdure[otel]'"
        ) from err
    service = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = create_tracer_provider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    opentelemetry.trace.set_tracer_provider(provider)
    return provider
