"""`perdure mcp add|list|tools|remove` as a user runs them: real processes, the test database,
the stdio and streamable-HTTP test servers. Secrets are stored but never printed."""

from __future__ import annotations

import json

import pytest

from perdure.scripted.server import ScriptedLLMServer
from perdure.store import mcp_servers
from perdure.store.db import Database
from tests.helpers import call, text
from tests.mcp_fixtures import STDIO_COMMAND, HttpServer, free_port, server_name, stored
from tests.test_cli import perdure


async def test_add_list_tools_remove_a_stdio_server_with_its_env_masked(cli_env: dict[str, str], db: Database) -> None:
    name, secret = server_name(), "s3cret-value-for-env"
    added = await perdure(cli_env, "mcp", "add", name, "--command", STDIO_COMMAND, "--env", f"MCP_TOKEN={secret}")
    assert added.returncode == 0, added.stderr
    assert secret not in added.stdout and "MCP_TOKEN=****" in added.stdout

    listed = await perdure(cli_env, "mcp", "list")
    as_json = await perdure(cli_env, "mcp", "list", "--json")
    assert listed.returncode == as_json.returncode == 0
    assert f"{name}  stdio" in listed.stdout and secret not in listed.stdout + as_json.stdout
    (entry,) = [s for s in json.loads(as_json.stdout) if s["name"] == name]
    assert entry["env"] == {"MCP_TOKEN": "****"} and entry["command"] == STDIO_COMMAND
    with db.transaction(read_only=True) as session:
        assert mcp_servers.get_server(session, name).env == {"MCP_TOKEN": secret}  # stored as given

    tools = await perdure(cli_env, "mcp", "tools", name)
    assert tools.returncode == 0, tools.stderr
    assert f"{name}/echo  (called echo)  Say the text back" in tools.stdout
    assert f"{name}/token.length  (called token_length)" in tools.stdout
    tools_json = json.loads((await perdure(cli_env, "mcp", "tools", name, "--json")).stdout)
    assert {t["function"] for t in tools_json} >= {"echo", "token_length", "crash"}

    removed = await perdure(cli_env, "mcp", "remove", name)
    assert removed.returncode == 0 and f"removed MCP server {name}" in removed.stdout
    assert name not in (await perdure(cli_env, "mcp", "list")).stdout


async def test_an_http_server_is_listed_with_its_headers(cli_env: dict[str, str], shared_http: HttpServer) -> None:
    name = server_name("h")
    added = await perdure(
        cli_env, "mcp", "add", name, "--url", shared_http.url, "--header", f"X-Api-Key={shared_http.key}", "--json"
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["headers"] == {"X-Api-Key": "****"}
    tools = await perdure(cli_env, "mcp", "tools", name)
    assert tools.returncode == 0, tools.stderr
    assert f"{name}/add  (called add)  Add two numbers." in tools.stdout
    listed = await perdure(cli_env, "mcp", "list")
    assert shared_http.key not in listed.stdout + tools.stdout + added.stdout


async def test_an_agent_made_with_tool_flags_calls_an_mcp_tool(
    cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str, worker: None
) -> None:
    name = server_name()
    assert (await perdure(cli_env, "mcp", "add", name, "--command", STDIO_COMMAND)).returncode == 0
    created = await perdure(
        cli_env, "agent", "create", "--json", "--model", f"scripted/{model_name}", "--endpoint", llm.base_url,
        "--tool", f"{name}/echo",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    llm.script(model_name, [call("echo", text="from the cli"), text("done")])
    sent = await perdure(cli_env, "send", json.loads(created.stdout)["id"], "go", "--json")
    assert sent.returncode == 0, sent.stderr
    assert "echo: from the cli" in sent.stdout


BAD_ADDS = {
    "neither": ([], "give exactly one of --command"),
    "both": (["--command", "python x.py", "--url", "http://127.0.0.1:9/mcp"], "give exactly one of --command"),
    "env without =": (["--command", "python x.py", "--env", "TOKEN"], "--env takes KEY=VALUE"),
    "env without key": (["--command", "python x.py", "--env", "=v"], "--env takes KEY=VALUE"),
    "header without =": (["--url", "http://127.0.0.1:9/mcp", "--header", "Auth"], "--header takes KEY=VALUE"),
    "header on stdio": (["--command", "python x.py", "--header", "A=b"], "--header is for HTTP servers"),
    "env on http": (["--url", "http://127.0.0.1:9/mcp", "--env", "A=b"], "--env is for stdio servers"),
    "repeated env": (["--command", "python x.py", "--env", "A=1", "--env", "A=2"], "--env A is given twice"),
    "not a url": (["--url", "localhost:9/mcp"], "--url must be an http:// or https:// URL"),
    "empty command": (["--command", "  "], "--command is empty"),
    "bad timeout": (["--command", "python x.py", "--timeout", "0"], "--timeout must be more than 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_ADDS))
async def test_bad_adds_are_one_line_and_store_nothing(case: str, cli_env: dict[str, str], db: Database) -> None:
    flags, expected = BAD_ADDS[case]
    before = stored(db)
    result = await perdure(cli_env, "mcp", "add", server_name(), *flags)
    _one_line_error(result.returncode, result.stderr, expected)
    assert stored(db) == before


async def test_bad_names_clashes_and_unknown_servers_are_one_line(cli_env: dict[str, str], db: Database) -> None:
    name = server_name()
    assert (await perdure(cli_env, "mcp", "add", name, "--command", STDIO_COMMAND, "--env", "A=1")).returncode == 0
    before = stored(db)
    cases = [
        (["add", "a/b", "--command", "python x.py"], "an MCP server name is 1-64 letters"),
        (["add", name, "--command", "python other.py", "--env", "A=2"], f"an MCP server named '{name}' exists"),
        (["remove", "nosuchserver"], "no MCP server named 'nosuchserver'"),
        (["tools", "nosuchserver"], "no MCP server named 'nosuchserver'"),
    ]
    for args, expected in cases:
        result = await perdure(cli_env, "mcp", *args)
        _one_line_error(result.returncode, result.stderr, expected)
    assert stored(db) == before


async def test_tools_of_a_server_that_cannot_be_reached_is_one_line(cli_env: dict[str, str]) -> None:
    unreachable = {
        server_name("d"): ["--url", f"http://127.0.0.1:{free_port()}/mcp", "--timeout", "10"],
        server_name("m"): ["--command", "/nonexistent/mcp-server --flag", "--timeout", "10"],
        server_name("q"): ["--command", "python3 -c 'import sys; sys.exit(1)'", "--timeout", "10"],
    }
    for name, flags in unreachable.items():
        assert (await perdure(cli_env, "mcp", "add", name, *flags)).returncode == 0
        result = await perdure(cli_env, "mcp", "tools", name)
        _one_line_error(result.returncode, result.stderr, f"cannot list the tools of MCP server {name}")


def _one_line_error(code: int, stderr: str, expected: str) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perdure: error: ") and expected in lines[0], stderr
