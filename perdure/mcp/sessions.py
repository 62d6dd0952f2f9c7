"""A worker's MCP sessions: one live session per stdio server, shared by every call.

A stdio server is started on first use and stays up for the calls that follow (starting a
process per call would cost far more than the call). A call that finds it dead, or that fails
on the transport or times out, drops the session and the process is stopped: the next call
starts it again. Streamable-HTTP servers get a session per call (the server keeps its own
state). `aclose` stops every server when the worker stops.

Errors come back as `McpUnavailable` with a sentence that names the server, never its env or headers.

The `mcp` SDK is imported on a worker's first MCP call, not with this module: it adds about
30 MiB to a process, which a worker whose agents use no MCP server should not pay. That first
import takes up to a second, so it runs in a thread (`import_sdk`), and the event loop goes on
serving the worker's other activities meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from perdure.schemas.mcp import McpServerConfig, McpToolSpec

if TYPE_CHECKING:
    from mcp import Client

T = TypeVar("T")
STOP_TIMEOUT_S = 5.0
SDK_CLIENT = "perdure.mcp.client"
"""The module that imports the `mcp` SDK."""


async def import_sdk() -> None:
    """Import the `mcp` SDK in a thread, once; the callers' own imports of it then cost nothing."""
    if SDK_CLIENT not in sys.modules:
        await asyncio.to_thread(importlib.import_module, SDK_CLIENT)


class McpUnavailable(Exception):
    """The server could not be reached, failed on the transport, or did not answer in time."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class _OwnedSession:
    """A session held open by a task of its own: the SDK's transports are entered and left in
    one task, while calls come from the activities' tasks."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self._ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._hold(), name=f"mcp session {config.name}")

    async def client(self) -> Client:
        return await asyncio.wait_for(asyncio.shield(self._ready), self.config.timeout_seconds)

    async def _hold(self) -> None:
        from perdure.mcp.client import connected

        try:
            async with connected(self.config) as client:
                self._ready.set_result(client)
                await self._stop.wait()
        except BaseException as err:  # the owner task reports, it never raises into the loop
            if not self._ready.done():
                self._ready.set_exception(err if isinstance(err, Exception) else ConnectionError(str(err)))

    @property
    def alive(self) -> bool:
        """False once the holding task ended, or once the server's output closed (it exited):
        the SDK closes the session's dispatcher then, and has no public flag for it, so a
        missing attribute reads as alive and the call finds out."""
        if self._task.done():
            return False
        if not self._ready.done() or self._ready.cancelled() or self._ready.exception() is not None:
            return True
        dispatcher = getattr(self._ready.result().session, "_dispatcher", None)
        return not getattr(dispatcher, "_closed", False)

    async def close(self) -> None:
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        if not self._ready.done():
            self._ready.cancel()
        with contextlib.suppress(BaseException):
            self._ready.exception()


class McpSessions:
    def __init__(self) -> None:
        self._stdio: dict[str, _OwnedSession] = {}
        self._starting: dict[str, asyncio.Lock] = {}

    async def list_tools(self, config: McpServerConfig) -> list[McpToolSpec]:
        """The server's tools. Listing changes nothing, so a stdio server that failed (it may
        have died since its last use) is started again and asked once more."""
        await import_sdk()
        from perdure.mcp.client import list_tools

        try:
            return await self._with_client(config, list_tools)
        except McpUnavailable as err:
            if config.transport == "http" or err.timed_out:
                raise
            return await self._with_client(config, list_tools)

    async def call_tool(self, config: McpServerConfig, tool: str, arguments: dict[str, Any]) -> tuple[bool, str]:
        """(success, text) of one call; a tool that reports an error is a result, not an exception."""
        await import_sdk()
        from perdure.mcp.client import result_text

        async def call(client: Client) -> tuple[bool, str]:
            return result_text(await client.call_tool(tool, arguments))

        return await self._with_client(config, call)

    async def aclose(self) -> None:
        sessions, self._stdio = list(self._stdio.values()), {}
        await asyncio.gather(*(s.close() for s in sessions))

    async def _with_client(self, config: McpServerConfig, use: Callable[[Client], Awaitable[T]]) -> T:
        if config.transport == "http":
            return await _guarded(config, self._per_call(config, use))
        session = await self._stdio_session(config)
        try:
            return await _guarded(config, self._on(session, use))
        except McpUnavailable:
            await self._drop(config.name, session)
            raise

    async def _per_call(self, config: McpServerConfig, use: Callable[[Client], Awaitable[T]]) -> T:
        from perdure.mcp.client import connected

        async with connected(config) as client:
            return await use(client)

    async def _on(self, session: _OwnedSession, use: Callable[[Client], Awaitable[T]]) -> T:
        return await use(await session.client())

    async def _stdio_session(self, config: McpServerConfig) -> _OwnedSession:
        """The live session of this server's current settings, started if there is none."""
        lock = self._starting.setdefault(config.name, asyncio.Lock())
        async with lock:
            session = self._stdio.get(config.name)
            if session is not None and (not session.alive or _fingerprint(session.config) != _fingerprint(config)):
                await self._drop(config.name, session)
                session = None
            if session is None:
                session = self._stdio[config.name] = _OwnedSession(config)
            return session

    async def _drop(self, name: str, session: _OwnedSession) -> None:
        if self._stdio.get(name) is session:
            del self._stdio[name]
        await session.close()


async def _guarded(config: McpServerConfig, work: Awaitable[T]) -> T:
    """`work` within the server's timeout; transport failures become one sentence."""
    try:
        return await asyncio.wait_for(work, config.timeout_seconds)
    except TimeoutError as err:
        raise McpUnavailable(
            f"MCP server {config.name} did not answer within {config.timeout_seconds:g} s", timed_out=True
        ) from err
    except Exception as err:
        raise McpUnavailable(f"MCP server {config.name} failed: {failure_reason(err)}") from err


def failure_reason(err: BaseException) -> str:
    """The innermost useful message (the SDK wraps transport errors in exception groups)."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _fingerprint(config: McpServerConfig) -> str:
    """Changed settings (the server removed and added again) start a new process."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()
