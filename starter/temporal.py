"""Connecting to Temporal the same way everywhere: pydantic payloads, Perdure's search attributes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from perdure.settings import Settings
from starter.connection import temporal_connect_config
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES


async def connect(settings: Settings) -> Client:
    return await Client.connect(**temporal_connect_config(settings), data_converter=pydantic_data_converter)


async def connect_when_serving(settings: Settings, *, within: float, abandon: Callable[[], None] = lambda: None) -> Client:
    """Connect to a dev server that was just started, trying again for up to `within` seconds.

    Its port accepts connections a moment before its frontend serves: a connect in that window
    fails with "Frontend is not healthy yet". On a busy machine that window once took out the
    worker of `perdure dev` while the demo's own connect, a little later, went through.
    `abandon` raises when waiting longer is pointless (the server exited, Ctrl-C).
    """
    deadline = time.monotonic() + within
    while True:
        abandon()
        try:
            return await asyncio.wait_for(connect(settings), max(deadline - time.monotonic(), 0.1))
        except (RuntimeError, TimeoutError) as err:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Temporal at {settings.temporal_address} did not answer within {within:g} s: {err or 'no reply'}") from err
        await asyncio.sleep(0.1)


async def ensure_search_attributes(client: Client) -> None:
    """Register AgentId, RunStatus and StopReason if the server lacks them (idempotent).

    A workflow that upserts an unregistered attribute fails its task, so the worker checks at
    start rather than letting the first run find out.
    """
    namespace = client.namespace
    existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = {key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES if key.name not in known}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
