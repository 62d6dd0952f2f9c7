"""An OpenAI- and Anthropic-compatible model server over real HTTP, answering from scripts.

`/v1/chat/completions` answers as OpenAI does and `/v1/messages` as Anthropic's Messages API
does, from the same scripts, so one test can run against either provider.

Tests script each model name's replies; the provider code under test (httpx, error mapping)
runs exactly as against a real endpoint. The model name `demo` answers by rule instead.
A model with no reply left answers 404, a non-retryable error, so a test that under-scripts
fails at once with a clear message rather than after retries. A `"stream": true` request is
answered with server-sent events in a chunked body, each event flushed on its own, so a client
really receives the reply piece by piece (and a scripted drop really cuts the connection).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from perdure.scripted.anthropic_replies import anthropic_body, anthropic_error, anthropic_stream
from perdure.scripted.demo import demo_reply
from perdure.scripted.replies import ScriptedReply, ScriptedStream, ScriptedToolCall

DEMO_MODEL = "demo"
OPENAI = "openai"
ANTHROPIC = "anthropic"

__all__ = ["ScriptedLLMServer", "ScriptedReply", "ScriptedToolCall", "DEMO_MODEL"]


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a pooled connection closed, a reader gone) is what model
        servers see all day; printing its traceback from a server thread only buries real
        test output."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class ScriptedLLMServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[ScriptedReply]] = defaultdict(deque)
        self._requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._headers: dict[str, list[dict[str, str]]] = defaultdict(list)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._sent_events: dict[str, list[tuple[float, bytes]]] = defaultdict(list)
        self._server = _Server((host, port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-llm", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ScriptedLLMServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, model: str, replies: Iterable[ScriptedReply]) -> None:
        """Queue replies for `model`, answered one per request in order."""
        with self._lock:
            self._scripts[model].extend(replies)

    def requests(self, model: str) -> list[dict[str, Any]]:
        """The request bodies `model` received, oldest first."""
        with self._lock:
            return list(self._requests[model])

    def request_headers(self, model: str) -> list[dict[str, str]]:
        """The headers of each request `model` received (names lower-cased), oldest first."""
        with self._lock:
            return list(self._headers[model])

    def pending(self, model: str) -> int:
        with self._lock:
            return len(self._scripts[model])

    def in_flight(self, model: str) -> int:
        """Requests for `model` received but not answered yet: a delayed reply still waiting,
        or a stream still sending."""
        with self._lock:
            return self._in_flight[model]

    def stream_events_sent(self, model: str) -> list[tuple[float, bytes]]:
        """Each streamed event with the wall-clock time it was written (for latency benchmarks)."""
        with self._lock:
            return list(self._sent_events[model])

    def _sent(self, model: str, event: bytes) -> None:
        sent = time.time()
        with self._lock:
            self._sent_events[model].append((sent, event))

    def _track(self, model: str, change: int) -> None:
        with self._lock:
            self._in_flight[model] += change

    def _next(self, request: dict[str, Any], headers: dict[str, str], api: str) -> tuple[str, ScriptedReply | None]:
        """The demo model reads chat-completions requests only."""
        model = str(request.get("model", ""))
        with self._lock:
            self._requests[model].append(request)
            self._headers[model].append(headers)
            queue = self._scripts[model]
            if queue:
                return model, queue.popleft()
        return model, demo_reply(request) if model == DEMO_MODEL and api == OPENAI else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes on a kept-alive connection; with Nagle on,
            # the body waits for the client's delayed ACK (about 40 ms a request).
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "request body is not JSON"}})
                    return
                api = _api_of(self.path)
                if api is None:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if api == ANTHROPIC and not self.headers.get("anthropic-version"):
                    self._send(400, anthropic_error(400, "anthropic-version: header is required"))
                    return
                headers = {key.lower(): value for key, value in self.headers.items()}
                model, reply = server._next(request, headers, api)
                if reply is None:
                    message = f"scripted model '{model}' has no reply left"
                    body = anthropic_error(404, message) if api == ANTHROPIC else {"error": {"message": message}}
                    self._send(404, body)
                    return
                server._track(model, 1)
                try:
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                    self._answer(api, model, request, reply)
                finally:
                    server._track(model, -1)

            def _answer(self, api: str, model: str, request: dict[str, Any], reply: ScriptedReply) -> None:
                if api == ANTHROPIC and reply.streams(request):
                    self._send_stream(reply.status, anthropic_stream(reply, model, request), reply, model)
                elif api == ANTHROPIC:
                    self._send_raw(reply.status, anthropic_body(reply, model, request), reply.headers)
                elif reply.streams(request):
                    self._send_stream(reply.status, reply.stream(model, request), reply, model)
                else:
                    self._send_raw(reply.status, reply.body(model, request), reply.headers)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                self._send_raw(status, json.dumps(body).encode(), {})

            def _send_raw(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send_stream(self, status: int, stream: ScriptedStream, reply: ScriptedReply, model: str) -> None:
                """Chunked transfer encoding, one chunk per event: the body's end is the
                zero-length chunk, so closing before it is a visible truncation to the client."""
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Transfer-Encoding", "chunked")
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    for number, event in enumerate(stream.events):
                        if number and reply.chunk_delay_s:
                            time.sleep(reply.chunk_delay_s)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                        server._sent(model, event)
                    if stream.dropped:
                        time.sleep(reply.chunk_delay_s)
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


def _api_of(path: str) -> str | None:
    """Which protocol a path speaks: OpenAI's chat completions or Anthropic's messages."""
    route = path.split("?", 1)[0].rstrip("/")
    if route.endswith("/chat/completions"):
        return OPENAI
    if route.endswith("/v1/messages"):
        return ANTHROPIC
    return None
