"""What every route needs: the Perdure client and the stream settings, from the app."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from starter.client import PerdureClient


@dataclass(frozen=True)
class ApiContext:
    client: PerdureClient
    ping_interval: float | None


def context(request: Request) -> ApiContext:
    return request.app.state.perdure
