"""A Temporal dev server for the tests and the benchmarks: the real server binary (no download),
started with Perdure's flags and search attributes, its client carrying Perdure's plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.testing import WorkflowEnvironment

from starter.devserver import dev_server_args, temporal_binary
from worker import PerdurePlugin


@asynccontextmanager
async def local_temporal() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        plugins=[PerdurePlugin()],
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=dev_server_args(None),
    )
    try:
        yield env
    finally:
        await env.shutdown()
