"""A stdio MCP server for the tests: `python stdio_server.py`.

`echo` says which process answered (so a restart shows), `token_length` proves its env reached
it without ever returning the value, `crash` kills the process mid-call, `fail` is a tool
error, `slow` outlasts a short timeout. With `EXTRA_TOOL=1` in its env it offers `extra` too
(a changed tool list).
"""

from __future__ import annotations

import os
import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("perdure-test-stdio")


@server.tool()
def echo(text: str) -> str:
    """Say the text back, with the answering process's id.

    Args:
        text: what to say back
    """
    return f"echo: {text} (pid {os.getpid()})"


@server.tool(name="token.length")
def token_length() -> str:
    """How long the MCP_TOKEN in this server's environment is (never the token itself)."""
    return f"token length {len(os.environ.get('MCP_TOKEN', ''))}; worker key seen: {'OPENAI_API_KEY' in os.environ}"


@server.tool()
def crash() -> str:
    """Kill this server in the middle of the call."""
    os._exit(3)


@server.tool()
def fail(reason: str) -> str:
    """Report an error.

    Args:
        reason: the error's text
    """
    raise ToolError(f"failed on purpose: {reason}")


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer.

    Args:
        seconds: how long to sleep
    """
    time.sleep(seconds)
    return "slept"


if os.environ.get("EXTRA_TOOL") == "1":

    @server.tool()
    def extra() -> str:
        """A tool that only a changed server offers."""
        return "extra"


if __name__ == "__main__":
    server.run()
