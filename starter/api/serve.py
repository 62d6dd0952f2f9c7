"""`perdure serve`: the HTTP API in uvicorn, as its own process or inside `perdure dev`.

Without `PERDURE_API_KEY` the API has no authentication, so it binds loopback only: anyone who
can reach it can drive every agent. The key is read here and compared by the app; it is never
printed or logged.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator

import uvicorn

from starter.api.app import DEFAULT_PING_INTERVAL, create_app
from starter.cli_common import UsageError, connect_client
from starter.client import PerdureClient

API_KEY_ENV = "PERDURE_API_KEY"
SHUTDOWN_GRACE_S = 5
"""How long a stopping server lets open streams run on. A stream may follow a run that waits
days for an approval; its client resumes from its last `seq_id` on any server."""


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: whoever runs it stops it (`should_exit`), so it
    can serve beside the worker in `perdure dev` and inside a test's event loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


def check_bind(host: str, key: str | None) -> None:
    """Refuse to serve an API without a key anywhere but loopback."""
    if key is None and not is_loopback(host):
        raise UsageError(f"refusing to serve on {host} without {API_KEY_ENV}: set it, or bind 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_server(
    client: PerdureClient,
    host: str,
    port: int,
    key: str | None,
    *,
    embedded: bool = False,
    ping_interval: float = DEFAULT_PING_INTERVAL,
) -> uvicorn.Server:
    app = create_app(client, api_key=key, ping_interval=ping_interval)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_S
    )
    return EmbeddedServer(config) if embedded else uvicorn.Server(config)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is one clear line, not uvicorn's exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said explicitly: asyncio turns Nagle's algorithm off only on sockets that say
    # so, and with it on, every response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot serve the HTTP API on {url(host, port)}: {err.strerror or err}") from err
    sock.set_inheritable(True)
    return sock


def url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def run_serve(host: str, port: int) -> int:
    key = api_key()
    check_bind(host, key)
    listening = bind(host, port)
    client = await connect_client()
    server = api_server(client, host, port, key)
    print(
        f"Perdure API at {url(host, port)} (letta-client base_url){'' if key else '; no API key: loopback only'}",
        flush=True,
    )
    await server.serve(sockets=[listening])
    return 0
