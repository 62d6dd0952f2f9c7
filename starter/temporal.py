"""Connecting to a Temporal server that is still starting (`perdure dev`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from temporalio.client import Client

from perdure.settings import Settings
from worker import connect


async def connect_when_serving(
    settings: Settings, *, within: float, abandon: Callable[[], None] = lambda: None
) -> Client:
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
                raise RuntimeError(
                    f"Temporal at {settings.temporal_address} did not answer within {within:g} s: {err or 'no reply'}"
                ) from err
        await asyncio.sleep(0.1)
