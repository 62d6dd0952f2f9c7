"""The app factory: Letta's routes over one PerdureClient, behind an optional API key."""

from __future__ import annotations

import hmac
from importlib.metadata import version

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from starter.api import routes_agents, routes_blocks, routes_mcp, routes_messages, routes_runs, routes_tools
from starter.api.context import ApiContext
from starter.api.errors import install_handlers
from starter.client import PerdureClient

DEFAULT_PING_INTERVAL = 20.0
"""Letta's keepalive interval, in seconds."""


class BearerAuth:
    """Every request must carry `Authorization: Bearer KEY`, compared in constant time. Plain
    ASGI, so it adds nothing to a stream but the one comparison."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                refused = JSONResponse(
                    {"detail": "missing or wrong API key: send `Authorization: Bearer <PERDURE_API_KEY>`"},
                    status_code=401,
                    headers={"www-authenticate": "Bearer", "x-should-retry": "false"},
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    client: PerdureClient, *, api_key: str | None, ping_interval: float | None = DEFAULT_PING_INTERVAL
) -> FastAPI:
    """The HTTP API over `client`: it keeps no run state, so any number may serve side by side."""
    app = FastAPI(title="Perdure", description="Letta-compatible API for durable agents on Temporal")
    app.state.perdure = ApiContext(client=client, ping_interval=ping_interval)
    if api_key:
        app.add_middleware(BearerAuth, key=api_key)
    install_handlers(app)
    for module in (routes_agents, routes_messages, routes_blocks, routes_runs, routes_tools, routes_mcp):
        app.include_router(module.router)
    app.add_api_route("/v1/health/", health, methods=["GET"])
    return app


async def health() -> dict[str, str]:
    """Letta's health check (`client.health()`): the server answers; it says nothing of Temporal."""
    return {"status": "ok", "version": version("perdure")}
