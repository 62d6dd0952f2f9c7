"""`/v1/mcp-servers/` through the official letta-client: create, list, retrieve and delete a
stdio and a streamable-HTTP server (the real test servers), list and run their tools, with
secrets masked in every answer and log; bad input is one error and stores nothing; an agent
made over HTTP calls the tool of a server registered over HTTP in a run."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest
from letta_client import AsyncLetta, ConflictError, NotFoundError
from letta_client.types import StdioMcpServer, StreamableHTTPMcpServer

from perdure.scripted.server import ScriptedLLMServer
from perdure.store import mcp_servers
from perdure.store.db import Database
from tests.conftest import API_KEY
from tests.helpers import call, text
from tests.letta_helpers import letta_llm_config
from tests.mcp_fixtures import SERVERS, HttpServer, free_port, server_name, stored

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.both_stores]
STDIO_SCRIPT = str(SERVERS / "stdio_server.py")


def stdio_config(**fields: Any) -> Any:
    return {"mcp_server_type": "stdio", "command": sys.executable, "args": [STDIO_SCRIPT], **fields}


async def test_a_stdio_server_is_created_listed_retrieved_and_deleted_with_its_env_masked(
    letta: AsyncLetta, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    name, secret = server_name(), "s3cret-env-value"
    created = await letta.mcp_servers.create(server_name=name, config=stdio_config(env={"MCP_TOKEN": secret}))

    assert isinstance(created, StdioMcpServer)
    assert (created.id, created.server_name, created.mcp_server_type) == (name, name, "stdio")
    assert (created.command, created.args, created.env) == (sys.executable, [STDIO_SCRIPT], {"MCP_TOKEN": "****"})
    with db.transaction(read_only=True) as session:
        assert mcp_servers.get_server(session, name).env == {"MCP_TOKEN": secret}  # stored as given
    listed = [s for s in await letta.mcp_servers.list() if s.server_name == name]
    assert [s.model_dump() for s in listed] == [created.model_dump()]
    assert (await letta.mcp_servers.retrieve(name)).model_dump() == created.model_dump()

    tools = {t.name: t for t in await letta.mcp_servers.tools.list(name)}
    assert {"echo", "token.length", "crash", "fail", "slow"} <= set(tools)
    echo = tools["echo"]
    assert (echo.id, echo.tool_type, echo.description) == ("echo", "external_mcp", echo.json_schema["description"])  # type: ignore[index]
    assert echo.json_schema["parameters"]["properties"]["text"]["type"] == "string"  # type: ignore[index]
    assert tools["token.length"].json_schema["name"] == "token_length"  # type: ignore[index]
    assert tools["token.length"].metadata == {"mcp": {"server_name": name}, "agent_tool": f"{name}/token.length"}
    assert (await letta.mcp_servers.tools.retrieve("token.length", mcp_server_id=name)).name == "token.length"
    ran = await letta.mcp_servers.tools.run("token.length", mcp_server_id=name, args={})
    assert (ran.status, ran.func_return) == ("success", f"token length {len(secret)}; worker key seen: False")
    failed = await letta.mcp_servers.tools.run("fail", mcp_server_id=name, args={"reason": "why"})
    assert failed.status == "error" and "failed on purpose: why" in str(failed.func_return)

    await letta.mcp_servers.delete(name)
    with pytest.raises(NotFoundError):
        await letta.mcp_servers.retrieve(name)
    assert name not in [s.server_name for s in await letta.mcp_servers.list()]
    assert secret not in caplog.text


async def test_a_streamable_http_server_sends_its_headers_and_shows_them_masked(
    letta: AsyncLetta, shared_http: HttpServer, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    name = server_name("h")
    created = await letta.mcp_servers.create(
        server_name=name,
        config={
            "mcp_server_type": "streamable_http",
            "server_url": shared_http.url,
            "auth_header": "X-Api-Key",
            "auth_token": shared_http.key,
            "custom_headers": {"X-Trace": "trace-secret"},
        },
    )

    assert isinstance(created, StreamableHTTPMcpServer)
    assert (created.id, created.server_url, created.auth_token) == (name, shared_http.url, None)
    assert created.custom_headers == {"X-Trace": "****", "X-Api-Key": "****"}
    with db.transaction(read_only=True) as session:
        assert mcp_servers.get_server(session, name).headers == {
            "X-Trace": "trace-secret",
            "X-Api-Key": shared_http.key,
        }
    [listed] = [s for s in await letta.mcp_servers.list() if s.server_name == name]
    retrieved = await letta.mcp_servers.retrieve(name)
    assert listed.model_dump() == retrieved.model_dump() == created.model_dump()

    tools = {t.name: t for t in await letta.mcp_servers.tools.list(name)}
    assert set(tools) == {"add", "shout"} and tools["add"].description.startswith("Add two numbers.")  # type: ignore[union-attr]
    ran = await letta.mcp_servers.tools.run("add", mcp_server_id=name, args={"a": 2, "b": 3})
    assert (ran.status, ran.func_return) == ("success", "5")

    await letta.mcp_servers.delete(name)
    with pytest.raises(NotFoundError):
        await letta.mcp_servers.tools.list(name)
    assert shared_http.key not in caplog.text and "trace-secret" not in caplog.text


async def test_an_update_changes_what_it_gives_keeps_the_rest_and_the_next_call_uses_it(
    letta: AsyncLetta, api_url: str, db: Database, shared_http: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    stdio, remote = server_name(), server_name("h")
    await letta.mcp_servers.create(server_name=stdio, config=stdio_config(env={"MCP_TOKEN": "short"}))
    await letta.mcp_servers.create(
        server_name=remote, config={"server_url": shared_http.url, "custom_headers": {"X-Api-Key": "wrong"}}
    )

    updated = await letta.mcp_servers.update(
        stdio, config={"command": None, "args": None, "env": {"MCP_TOKEN": "a-longer-secret"}}
    )
    assert isinstance(updated, StdioMcpServer) and updated.env == {"MCP_TOKEN": "****"}
    ran = await letta.mcp_servers.tools.run("token.length", mcp_server_id=stdio, args={})
    assert ran.func_return == "token length 15; worker key seen: False"
    masked_back = await letta.mcp_servers.update(
        stdio, config={"command": None, "args": None, "env": {"MCP_TOKEN": "****", "MORE": "x"}}
    )
    assert masked_back.env == {"MCP_TOKEN": "****", "MORE": "****"}  # type: ignore[union-attr]
    with db.transaction(read_only=True) as session:
        kept = mcp_servers.get_server(session, stdio)
    assert kept.env == {"MCP_TOKEN": "a-longer-secret", "MORE": "x"} and kept.timeout_seconds == 60

    async with _http(api_url) as http:
        down = await http.get(f"/v1/mcp-servers/{remote}/tools")
    assert down.status_code == 502
    fixed = await letta.mcp_servers.update(
        remote, config={"server_url": None, "auth_header": "X-Api-Key", "auth_token": shared_http.key}
    )
    assert isinstance(fixed, StreamableHTTPMcpServer) and fixed.custom_headers == {"X-Api-Key": "****"}
    assert {t.name for t in await letta.mcp_servers.tools.list(remote)} == {"add", "shout"}

    assert "a-longer-secret" not in caplog.text and shared_http.key not in caplog.text
    await letta.mcp_servers.delete(stdio)
    await letta.mcp_servers.delete(remote)


async def test_a_bad_update_is_one_error_and_changes_nothing(letta: AsyncLetta, api_url: str, db: Database) -> None:
    name = server_name()
    await letta.mcp_servers.create(server_name=name, config=stdio_config(env={"A": "1"}))
    before = stored(db)
    cases = {
        "rename": (
            {"server_name": "other", "config": {}},
            422,
            f"an MCP server cannot be renamed (agents name its tools {name}/TOOL)",
        ),
        "other transport": (
            {"config": {"mcp_server_type": "streamable_http", "server_url": "http://127.0.0.1:9/mcp"}},
            422,
            f"MCP server {name} is stdio: an update cannot change its transport",
        ),
        "empty command": ({"config": {"command": ""}}, 422, "config.command is empty"),
        "bad timeout": ({"config": {"timeout_seconds": -1}}, 422, "config.timeout_seconds must be more than 0"),
    }
    async with _http(api_url) as http:
        for body, status, expected in cases.values():
            refused = await http.patch(f"/v1/mcp-servers/{name}", json=body)
            assert refused.status_code == status and expected in refused.json()["detail"], refused.text
        unknown = await http.patch("/v1/mcp-servers/nosuchserver", json={"config": {}})
    assert unknown.status_code == 404 and "no MCP server named 'nosuchserver'" in unknown.json()["detail"]
    assert stored(db) == before
    await letta.mcp_servers.delete(name)


async def test_a_server_created_without_its_type_is_told_by_its_fields(letta: AsyncLetta) -> None:
    name = server_name()
    created = await letta.mcp_servers.create(
        server_name=name, config={"command": sys.executable, "args": [STDIO_SCRIPT]}
    )
    assert isinstance(created, StdioMcpServer) and created.mcp_server_type == "stdio"
    await letta.mcp_servers.delete(name)


BAD_CREATES: dict[str, tuple[dict[str, Any], int, str]] = {
    "sse": (
        {"mcp_server_type": "sse", "server_url": "http://127.0.0.1:9/sse"},
        422,
        "mcp_server_type must be 'stdio' or 'streamable_http' (SSE servers are not supported)",
    ),
    "unknown transport": (
        {"mcp_server_type": "websocket", "server_url": "ws://x"},
        422,
        "mcp_server_type must be 'stdio' or 'streamable_http'",
    ),
    "neither command nor url": ({"env": {"A": "1"}}, 422, "mcp_server_type must be 'stdio' or 'streamable_http'"),
    "missing command": (
        {"mcp_server_type": "stdio", "args": []},
        422,
        "invalid body.config.stdio.command: Field required",
    ),
    "empty command": ({"mcp_server_type": "stdio", "command": "  ", "args": []}, 422, "config.command is empty"),
    "missing url": (
        {"mcp_server_type": "streamable_http"},
        422,
        "invalid body.config.streamable_http.server_url: Field required",
    ),
    "not a url": (
        {"mcp_server_type": "streamable_http", "server_url": "localhost:9/mcp"},
        422,
        "config.server_url must be an http:// or https:// URL",
    ),
    "token without header": (
        {"mcp_server_type": "streamable_http", "server_url": "http://127.0.0.1:9/mcp", "auth_token": "tok-secret"},
        422,
        "config.auth_header and config.auth_token go together",
    ),
    "bad timeout": (stdio_config(timeout_seconds=0), 422, "config.timeout_seconds must be more than 0"),
    "bad env name": (stdio_config(env={"1A": "tok-secret"}), 422, "config.env names are letters, digits"),
    "header value with a line break": (
        {"server_url": "http://127.0.0.1:9/mcp", "custom_headers": {"X-Api-Key": "tok-secret\r\nX-Evil: 1"}},
        422,
        "config header X-Api-Key has a value HTTP cannot send",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CREATES))
async def test_a_bad_create_is_one_error_and_stores_nothing(case: str, api_url: str, db: Database) -> None:
    config, status, expected = BAD_CREATES[case]
    before = stored(db)
    async with _http(api_url) as http:
        refused = await http.post("/v1/mcp-servers/", json={"server_name": server_name(), "config": config})
    assert refused.status_code == status and refused.headers["x-should-retry"] == "false"
    detail = refused.json()["detail"]
    assert isinstance(detail, str) and expected in detail and "\n" not in detail and "tok-secret" not in detail
    assert stored(db) == before


async def test_a_bad_name_a_duplicate_and_unknown_servers_are_refused(
    letta: AsyncLetta, api_url: str, db: Database
) -> None:
    name = server_name()
    await letta.mcp_servers.create(server_name=name, config=stdio_config(env={"A": "first"}))
    before = stored(db)

    with pytest.raises(ConflictError, match=f"an MCP server named '{name}' exists already"):
        await letta.mcp_servers.create(server_name=name, config=stdio_config(env={"A": "second"}))
    async with _http(api_url) as http:
        bad_name = await http.post("/v1/mcp-servers/", json={"server_name": "a/b", "config": stdio_config()})
        missing_name = await http.post("/v1/mcp-servers/", json={"config": stdio_config()})
    assert (bad_name.status_code, bad_name.json()) == (
        422,
        {"detail": "an MCP server name is 1-64 letters, digits, _ or -, got 'a/b'"},
    )
    assert missing_name.status_code == 422 and "server_name" in missing_name.json()["detail"]
    for unknown in (
        letta.mcp_servers.retrieve("nosuchserver"),
        letta.mcp_servers.delete("nosuchserver"),
        letta.mcp_servers.tools.list("nosuchserver"),
        letta.mcp_servers.tools.run("echo", mcp_server_id="nosuchserver", args={}),
    ):
        with pytest.raises(NotFoundError, match="no MCP server named 'nosuchserver'"):
            await unknown
    with pytest.raises(NotFoundError, match=f"MCP server {name} offers no tool 'nosuchtool'"):
        await letta.mcp_servers.tools.retrieve("nosuchtool", mcp_server_id=name)
    assert stored(db) == before
    await letta.mcp_servers.delete(name)


async def test_of_two_creates_of_one_name_at_once_one_lands_and_the_other_is_409(
    api_url: str, letta: AsyncLetta
) -> None:
    name = server_name()
    async with _http(api_url) as http:
        answers = await asyncio.gather(
            *(
                http.post("/v1/mcp-servers/", json={"server_name": name, "config": stdio_config(env={"N": str(n)})})
                for n in range(4)
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    assert (await letta.mcp_servers.retrieve(name)).server_name == name
    await letta.mcp_servers.delete(name)


async def test_a_server_that_cannot_be_reached_is_502_naming_it(api_url: str, letta: AsyncLetta) -> None:
    name = server_name("d")
    await letta.mcp_servers.create(
        server_name=name,
        config={"server_url": f"http://127.0.0.1:{free_port()}/mcp", "custom_headers": {"X-Api-Key": "down-secret"}},
    )
    async with _http(api_url) as http:
        refused = await http.get(f"/v1/mcp-servers/{name}/tools")
    assert refused.status_code == 502 and refused.headers["x-should-retry"] == "false"
    assert refused.json()["detail"].startswith(f"cannot reach MCP server {name}: ")
    assert "down-secret" not in refused.text
    await letta.mcp_servers.delete(name)


async def test_an_agent_made_over_http_calls_the_tool_of_a_server_made_over_http(
    letta: AsyncLetta, llm: ScriptedLLMServer, model_name: str, shared_http: HttpServer
) -> None:
    stdio, remote = server_name(), server_name("h")
    await letta.mcp_servers.create(server_name=stdio, config=stdio_config(env={"MCP_TOKEN": "tok"}))
    await letta.mcp_servers.create(
        server_name=remote,
        config={"server_url": shared_http.url, "auth_header": "X-Api-Key", "auth_token": shared_http.key},
    )
    [echo] = [t for t in await letta.mcp_servers.tools.list(stdio) if t.name == "echo"]
    agent = await letta.agents.create(
        name="http-mcp",
        llm_config=letta_llm_config(model_name, llm.base_url),
        tools=[echo.metadata["agent_tool"], f"{remote}/*"],  # type: ignore[index]
    )
    llm.script(model_name, [call("echo", text="over http"), call("shout", text="hi"), text("done")])

    response = await letta.agents.messages.create(agent.id, input="go")

    returns = [(m.status, m.tool_return) for m in response.messages if m.message_type == "tool_return_message"]
    assert [status for status, _ in returns] == ["success", "success"]
    assert "echo: over http (pid " in str(returns[0][1]) and returns[1][1] == "HI"
    await letta.agents.delete(agent.id)
    await letta.mcp_servers.delete(stdio)
    await letta.mcp_servers.delete(remote)


def _http(api_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api_url, headers={"authorization": f"Bearer {API_KEY}"})
