"""`perdure tool ...` and `agent create --tool-env` as a user runs them: a real process, the test
database, on both stores. Every bad input is one line, exit 2, and stores nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from perdure.scripted.server import ScriptedLLMServer
from perdure.store.db import Database
from perdure.store.tables import AgentToolVariableRow, ToolRow, ToolVersionRow
from perdure.store.tool_variables import get_tool_variables
from tests.test_cli import perdure

pytestmark = pytest.mark.both_stores

GOOD = '''
import json


def {name}(city: str, days: int = 3, units: "str | None" = None) -> str:
    """Forecast the weather.

    Args:
        city (str): The city to forecast.
        days: How many days ahead.
        units: metric or imperial.

    Returns:
        str: the forecast.
    """
    return json.dumps({{"city": city, "days": days}})
'''


def source(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"tool-{uuid.uuid4().hex[:8]}.py"
    path.write_text(text)
    return path


def stored(db: Database) -> tuple[set[str], int]:
    with db.transaction() as session:
        return set(session.scalars(select(ToolRow.name)).all()), len(session.scalars(select(ToolVersionRow)).all())


async def test_create_show_list_edit_and_delete_a_tool(cli_env: dict[str, str], tmp_path: Path, db: Database) -> None:
    name = f"forecast_{uuid.uuid4().hex[:8]}"
    created = await perdure(
        cli_env, "tool", "create", "--file", str(source(tmp_path, GOOD.format(name=name))), "--timeout", "5", "--json"
    )
    assert created.returncode == 0, created.stderr
    tool = json.loads(created.stdout)
    assert tool["id"].startswith("tool-") and tool["name"] == name
    assert tool["description"] == "Forecast the weather."
    assert tool["json_schema"] == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city to forecast."},
            "days": {"type": "integer", "description": "How many days ahead.", "default": 3},
            "units": {"type": "string", "description": "metric or imperial.", "default": None},
        },
        "required": ["city"],
    }
    assert (tool["tool_type"], tool["timeout_seconds"], tool["return_char_limit"]) == ("custom", 5.0, 50_000)
    assert tool["source_code"] == GOOD.format(name=name)
    for field in ("default_requires_approval", "pip_requirements", "enable_parallel_execution", "tags", "version"):
        assert field in tool

    shown = await perdure(cli_env, "tool", "show", name)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"{name}(city, days, units)  {tool['id']}  version {tool['version']}"
    listed = await perdure(cli_env, "tool", "list", "--json")
    assert name in [t["name"] for t in json.loads(listed.stdout)]
    assert "memory_insert" not in [t["name"] for t in json.loads(listed.stdout)], "built-ins are not custom tools"

    edited_text = GOOD.format(name=name).replace('"days": days', '"days": days * 2')
    edited = await perdure(
        cli_env, "tool", "create", "--file", str(source(tmp_path, edited_text)), "--pip", "iniconfig==2.0.0", "--json"
    )
    assert edited.returncode == 0, edited.stderr
    again = json.loads(edited.stdout)
    assert again["id"] == tool["id"] and again["version"] != tool["version"]
    assert again["pip_requirements"] == [{"name": "iniconfig", "version": "2.0.0"}]
    with db.transaction() as session:
        versions = session.scalars(select(ToolVersionRow.version).where(ToolVersionRow.name == name)).all()
    assert set(versions) == {tool["version"], again["version"]}, "old versions stay for runs that use them"

    deleted = await perdure(cli_env, "tool", "delete", name)
    assert (deleted.returncode, deleted.stdout.strip()) == (0, f"deleted {name}")
    missing = await perdure(cli_env, "tool", "show", name)
    assert (missing.returncode, missing.stderr.strip()) == (2, f"perdure: error: custom tool '{name}' not found")


BAD_SOURCES = {
    "no parse": ("def broken(:\n    pass\n", "the file does not parse: invalid syntax (line 1)"),
    "no function": ("x = 1\n", "the file defines no top-level function"),
    "untyped argument": (
        'def f(city):\n    """Do.\n\n    Args:\n        city: The city.\n    """\n',
        "argument city of f has no type annotation",
    ),
    "undocumented argument": (
        'def f(city: str, days: int):\n    """Do.\n\n    Args:\n        city: The city.\n    """\n',
        "argument days of f has no line under Args: in the docstring",
    ),
    "built-in name": (
        'def memory_insert():\n    """Clash."""\n',
        "memory_insert is a built-in tool's name: rename the function",
    ),
    "several functions": (
        "def a():\n    pass\n\n\ndef b():\n    pass\n",
        "the file defines several functions (a, b): pick one with --name",
    ),
    "untranslatable type": (
        'def f(when: datetime):\n    """Do.\n\n    Args:\n        when: A time.\n    """\n',
        "argument when of f has a type a tool schema cannot say: datetime",
    ),
    "star arguments": ("def f(*args):\n    pass\n", "function f takes *args or **kwargs; a tool names each argument"),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
async def test_a_bad_tool_file_is_one_line_and_stores_nothing(
    case: str, cli_env: dict[str, str], tmp_path: Path, db: Database
) -> None:
    text, message = BAD_SOURCES[case]
    before = stored(db)
    result = await perdure(cli_env, "tool", "create", "--file", str(source(tmp_path, text)))
    assert (result.returncode, result.stderr.strip().splitlines()) == (2, [f"perdure: error: {message}"])
    assert result.stdout == ""
    assert stored(db) == before


BAD_OPTIONS = {
    "schema not an object schema": (
        ["--schema", '{"type": "array"}'],
        'the schema is not a JSON object schema: it needs "type": "object"',
    ),
    "schema not JSON object": (["--schema", "[1]"], "schema {schema} must hold a JSON object"),
    "schema required unknown": (
        ["--schema", '{"type": "object", "properties": {}, "required": ["x"]}'],
        'the schema\'s "required" must list names among its "properties"',
    ),
    "missing file": (
        ["--file", "/nonexistent/tool.py"],
        "cannot read tool file /nonexistent/tool.py: No such file or directory",
    ),
    "bad pip requirement": (["--pip", "requests>=2"], "--pip takes NAME or NAME==VERSION, got 'requests>=2'"),
    "timeout zero": (["--timeout", "0"], "invalid timeout_seconds: Input should be greater than 0"),
    "unknown function": (["--name", "nope"], "the file has no top-level function nope (it has {name})"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
async def test_bad_options_are_one_line_and_store_nothing(
    case: str, cli_env: dict[str, str], tmp_path: Path, db: Database
) -> None:
    options, message = BAD_OPTIONS[case]
    name = f"forecast_{uuid.uuid4().hex[:8]}"
    schema = tmp_path / "schema.json"
    args = ["--file", str(source(tmp_path, GOOD.format(name=name)))]
    for flag, value in zip(options[::2], options[1::2], strict=True):
        if flag == "--schema":
            schema.write_text(value)
            value = str(schema)
        args = [flag, value] if flag == "--file" else [*args, flag, value]
    before = stored(db)
    result = await perdure(cli_env, "tool", "create", *args)
    expected = message.format(schema=schema, name=name)
    assert (result.returncode, result.stderr.strip().splitlines()) == (2, [f"perdure: error: {expected}"])
    assert stored(db) == before


async def test_a_tool_an_agent_uses_cannot_be_deleted_and_an_unknown_one_is_not_found(
    cli_env: dict[str, str], tmp_path: Path, llm: ScriptedLLMServer, model_name: str
) -> None:
    name = f"forecast_{uuid.uuid4().hex[:8]}"
    assert (
        await perdure(cli_env, "tool", "create", "--file", str(source(tmp_path, GOOD.format(name=name))))
    ).returncode == 0
    agent = await perdure(
        cli_env,
        "agent",
        "create",
        "--model",
        f"scripted/{model_name}",
        "--endpoint",
        llm.base_url,
        "--tool",
        name,
        "--json",
    )
    assert agent.returncode == 0, agent.stderr
    agent_id = json.loads(agent.stdout)["id"]
    refused = await perdure(cli_env, "tool", "delete", name)
    assert (refused.returncode, refused.stderr.strip()) == (
        2,
        f"perdure: error: tool {name} is used by agent(s) {agent_id}: delete them first",
    )
    unknown = await perdure(cli_env, "tool", "delete", "no_such_tool")
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "perdure: error: custom tool 'no_such_tool' not found")


async def test_tool_variables_are_stored_apart_and_never_shown(
    cli_env: dict[str, str], tmp_path: Path, db: Database, llm: ScriptedLLMServer, model_name: str
) -> None:
    agent_file = tmp_path / "agent.json"
    agent_file.write_text(json.dumps({"tool_exec_environment_variables": [{"key": "FROM_FILE", "value": "f"}]}))
    model = ["--model", f"scripted/{model_name}", "--endpoint", llm.base_url]
    created = await perdure(
        cli_env, "agent", "create", "--file", str(agent_file), *model, "--tool-env", "TOKEN=tok-123", "--json"
    )
    assert created.returncode == 0, created.stderr
    assert "tok-123" not in created.stdout
    agent_id = json.loads(created.stdout)["id"]
    with db.transaction() as session:
        assert get_tool_variables(session, agent_id) == {"FROM_FILE": "f", "TOKEN": "tok-123"}
    shown = await perdure(cli_env, "agent", "show", agent_id, "--json")
    assert "tok-123" not in shown.stdout

    secrets_file = tmp_path / "letta.json"
    secrets_file.write_text(json.dumps({"secrets": {"API_TOKEN": "s"}}))
    from_secrets = await perdure(cli_env, "agent", "create", "--file", str(secrets_file), *model, "--json")
    assert from_secrets.returncode == 0, from_secrets.stderr
    with db.transaction() as session:
        assert get_tool_variables(session, json.loads(from_secrets.stdout)["id"]) == {"API_TOKEN": "s"}

    deleted = await perdure(cli_env, "agent", "delete", agent_id)
    assert deleted.returncode == 0, deleted.stderr
    with db.transaction() as session:
        left = session.scalars(select(AgentToolVariableRow).where(AgentToolVariableRow.agent_id == agent_id)).all()
    assert left == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("NOVALUE", "--tool-env takes KEY=VALUE, got 'NOVALUE' without a value"),
        (
            "1BAD=x",
            "invalid tool_exec_environment_variables: Value error, tool variable names must be letters, digits and _ (not starting with a digit): '1BAD'",
        ),
    ],
)
async def test_a_bad_tool_variable_is_one_line_and_makes_no_agent(
    value: str, message: str, cli_env: dict[str, str], llm: ScriptedLLMServer, model_name: str
) -> None:
    listed = await perdure(cli_env, "agent", "list", "--json")
    before = len(json.loads(listed.stdout))
    model = ["--model", f"scripted/{model_name}", "--endpoint", llm.base_url]
    result = await perdure(cli_env, "agent", "create", *model, "--tool-env", value)
    assert (result.returncode, result.stderr.strip().splitlines()) == (2, [f"perdure: error: {message}"])
    after = await perdure(cli_env, "agent", "list", "--json")
    assert len(json.loads(after.stdout)) == before
