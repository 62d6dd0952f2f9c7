"""MCP servers for the tests: registering the stdio test server, and serving the HTTP one with
uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from perdure.schemas.mcp import McpServerConfig
from perdure.store import mcp_servers
from perdure.store.db import Database
from tests.helpers import REPO
from tests.ports import free_port

SERVERS = REPO / "tests" / "mcp_servers"
STDIO_COMMAND = f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVERS / 'stdio_server.py'))}"


def server_name(prefix: str = "s") -> str:
    """A server name of this test's own (the database is shared by the session)."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def register(db: Database, config: McpServerConfig) -> McpServerConfig:
    with db.transaction() as session:
        mcp_servers.add_server(session, config)
    return config


def stdio_server(db: Database, *, env: dict[str, str] | None = None, timeout: float = 30.0) -> McpServerConfig:
    return register(
        db,
        McpServerConfig(
            name=server_name(), transport="stdio", command=STDIO_COMMAND, env=env or {}, timeout_seconds=timeout
        ),
    )


@dataclass
class HttpServer:
    url: str
    key: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def stored(db: Database) -> list[str]:
    """Every stored server's config as JSON, sorted: compared before and after a refused request."""
    with db.transaction(read_only=True) as session:
        return sorted(c.model_dump_json() for c in mcp_servers.list_servers(session))


@contextlib.contextmanager
def http_server() -> Iterator[HttpServer]:
    """The streamable-HTTP test server, up and accepting connections, with a random API key."""
    port, key = free_port(), f"key-{uuid.uuid4().hex}"
    process = subprocess.Popen(
        [sys.executable, str(SERVERS / "http_server.py"), str(port)],
        env={"EXPECTED_KEY": key, "PATH": "/usr/bin:/bin"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP MCP test server did not start (exit code {process.poll()})")
            time.sleep(0.1)
        yield HttpServer(url=f"http://127.0.0.1:{port}/mcp", key=key, process=process)
    finally:
        process.kill()
        process.wait()
