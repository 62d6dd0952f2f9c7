"""A streamable-HTTP MCP server for the tests: `python http_server.py PORT`, served by uvicorn.

Every request must carry `X-Api-Key` equal to its env's `EXPECTED_KEY` (a 401 otherwise), so
a test can tell that the server's headers reached it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.responses import PlainTextResponse

server = MCPServer("perdure-test-http")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first
        b: the second
    """
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text.

    Args:
        text: what to shout
    """
    return text.upper()


def with_key(app: Any, expected: str) -> Any:
    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"x-api-key", b"").decode() != expected:
            await PlainTextResponse("missing or wrong X-Api-Key", status_code=401)(scope, receive, send)
            return
        await app(scope, receive, send)

    return guarded


if __name__ == "__main__":
    port = int(sys.argv[1])
    app = with_key(server.streamable_http_app(host="127.0.0.1"), os.environ["EXPECTED_KEY"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
