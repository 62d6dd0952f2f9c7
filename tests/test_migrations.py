"""Schema migrations: what the migrations make is what the tables describe, a database made by
an earlier revision is upgraded with its data, and every entry point refuses one that is not
current with one line saying to run `perdure db upgrade`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from perdure.agents import create_agent
from perdure.schemas.agent import AgentCreate
from perdure.schemas.messages import Message, TextContent
from perdure.schemas.run import SendMessageRequest
from perdure.store import agents, messages, runs
from perdure.store.db import Database, get_database, upgrade_database
from perdure.store.schema import (
    MIGRATIONS,
    FIRST_REVISION,
    SchemaOutOfDateError,
    check_schema,
    current_revision,
    head_revision,
)
from perdure.store.tables import Base, utcnow
from starter.updates import message_request
from tests.helpers import PERDURE, REPO
from tests.postgres_server import create_database

pytestmark = pytest.mark.both_stores


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database of this test's own with nothing in it."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return create_database(request.getfixturevalue("postgres_server_url"))


def opened(url: str) -> Database:
    """The database without the schema check, as `perdure db upgrade` opens it."""
    return Database(url)


def test_the_migrations_make_exactly_the_schema_the_tables_describe(empty_url: str) -> None:
    assert upgrade_database(empty_url) == (None, head_revision())
    with opened(empty_url).engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_head_read_from_the_file_names_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_a_database_of_the_first_revision_is_upgraded_with_its_data(empty_url: str) -> None:
    assert head_revision() != FIRST_REVISION, "this test needs a revision after the first"
    upgrade_database(empty_url, FIRST_REVISION)
    old = opened(empty_url)
    agent = create_agent(
        old, AgentCreate.model_validate({"name": "kept", "memory_blocks": [{"label": "human", "value": "Ada"}]})
    )
    note = Message(id="message-kept", agent_id=agent.id, role="user", content=[TextContent(text="remember me")])
    with old.transaction() as session:
        messages.insert_messages(session, [note])
        messages.append_in_context(session, agent.id, [note.id])
    with pytest.raises(
        SchemaOutOfDateError,
        match=rf"at revision {FIRST_REVISION}, this Perdure needs {head_revision()}: run `perdure db upgrade`",
    ):
        check_schema(old.engine)

    assert upgrade_database(empty_url) == (FIRST_REVISION, head_revision())

    with opened(empty_url).transaction() as session:
        state = agents.get_agent(session, agent.id)
        context = messages.load_in_context(session, agent.id)
    human = state.block("human")
    assert human is not None and human.value == "Ada"
    assert [m.text for m in context][1:] == ["remember me"]
    assert "ix_steps_agent_id" in {index["name"] for index in inspect(opened(empty_url).engine).get_indexes("steps")}


def test_runs_stored_before_turn_keys_are_found_by_their_turn_after_the_upgrade(empty_url: str) -> None:
    """Revision 0006 keeps each run's turn key in a column: the upgrade fills it in from the
    stored requests, so a client's retry of a send made before it still finds its run."""
    upgrade_database(empty_url, "0005")
    old = opened(empty_url)
    agent = create_agent(old, AgentCreate.model_validate({"name": "kept"}))
    sent = message_request("hello")
    answers = SendMessageRequest.model_validate(
        {
            "messages": [
                {"type": "approval", "approvals": [{"type": "approval", "tool_call_id": "call-1", "approve": True}]}
            ]
        }
    )
    with old.engine.begin() as connection:
        for run_id, request in (("run-sent", sent), ("run-answers", answers)):
            connection.execute(
                text(
                    "INSERT INTO runs (id, agent_id, workflow_id, status, request, created_at)"
                    " VALUES (:id, :agent_id, 'workflow', 'completed', :request, :created_at)"
                ),
                {
                    "id": run_id,
                    "agent_id": agent.id,
                    "request": request.model_dump_json(),
                    "created_at": utcnow(),
                },
            )

    assert upgrade_database(empty_url) == ("0005", head_revision())

    assert sent.turn_key is not None and answers.turn_key is None
    with opened(empty_url).transaction() as session:
        found = runs.find_run_for_turn(session, agent.id, sent.turn_key)
        keys = {row.id: row.turn_key for row in session.execute(text("SELECT id, turn_key FROM runs"))}
    assert found is not None and found.id == "run-sent"
    assert keys == {"run-sent": sent.turn_key, "run-answers": None}


def _migration_0006() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0006", MIGRATIONS / "versions" / "0006_run_turn_keys.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ANSWER = {"type": "approval", "approvals": [{"type": "approval", "tool_call_id": "call-1", "approve": True}]}


@pytest.mark.parametrize(
    "stored",
    [
        {"messages": [{"type": "message", "role": "user", "content": "hi", "otid": "otid-1"}]},
        {"messages": [{"role": "user", "content": "hi", "otid": "otid-1"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi", "otid": ""}]},
        {
            "messages": [
                {"role": "system", "content": "note", "otid": "a"},
                {"role": "user", "content": "hi", "otid": "b"},
            ]
        },
        {"messages": [{"role": "user", "content": "hi", "otid": "a"}, {"role": "user", "content": "hi"}]},
        {"messages": [ANSWER]},
        {"messages": [ANSWER, {"role": "user", "content": "and this", "otid": "c"}]},
    ],
)
def test_the_upgrade_keys_a_stored_request_as_the_request_keys_itself(stored: dict[str, Any]) -> None:
    """Migration 0006 writes out the turn key's rule rather than importing it: it must agree
    with `SendMessageRequest.turn_key` on every shape a request was stored in (a release that
    stored no `type`, messages without otids, answers before a message)."""
    request = SendMessageRequest.model_validate(stored)
    assert _migration_0006()._turn_key(stored) == request.turn_key
    assert _migration_0006()._turn_key(request.model_dump(mode="json")) == request.turn_key


def test_a_database_made_before_migrations_is_adopted_not_recreated(empty_url: str) -> None:
    """Tables made by an older Perdure (no version table) hold the first revision's schema."""
    upgrade_database(empty_url, FIRST_REVISION)
    database = opened(empty_url)
    agent = create_agent(database, AgentCreate.model_validate({"name": "older"}))
    with database.engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    with pytest.raises(SchemaOutOfDateError, match=r"has no Perdure schema yet: run `perdure db upgrade`"):
        check_schema(database.engine)

    assert upgrade_database(empty_url) == (FIRST_REVISION, head_revision())
    with opened(empty_url).transaction() as session:
        assert agents.get_agent(session, agent.id).name == "older"


def test_a_database_newer_than_this_release_says_to_upgrade_perdure(empty_url: str) -> None:
    upgrade_database(empty_url)
    database = opened(empty_url)
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(
        SchemaOutOfDateError,
        match=rf"at revision 9999, newer than this Perdure knows \({head_revision()}\): upgrade Perdure",
    ):
        check_schema(database.engine)


def test_upgrading_a_current_database_changes_nothing(empty_url: str) -> None:
    upgrade_database(empty_url)
    assert upgrade_database(empty_url) == (head_revision(), head_revision())
    assert current_revision(opened(empty_url).engine) == head_revision()
    get_database(empty_url)  # the check passes


def perdure(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PERDURE), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "command", [["agent", "list"], ["messages", "agent-x"], ["worker"], ["worker", "--processes", "2"]]
)
def test_the_cli_and_the_worker_refuse_an_unmigrated_database(
    command: list[str], cli_env: dict[str, str], empty_url: str
) -> None:
    env = {**cli_env, "PERDURE_DATABASE_URL": empty_url}
    refused = perdure(env, *command)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"perdure: error: the database {redacted(empty_url)} has no Perdure schema yet: run `perdure db upgrade`"
    ]
    with opened(empty_url).engine.connect() as connection:
        assert inspect(connection).get_table_names() == [], "a refused command creates nothing"


def test_python_worker_py_refuses_an_unmigrated_database_in_one_line(cli_env: dict[str, str], empty_url: str) -> None:
    env = {**cli_env, "PERDURE_DATABASE_URL": empty_url}
    command = [sys.executable, "worker.py"]
    refused = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"worker: error: the database {redacted(empty_url)} has no Perdure schema yet: run `perdure db upgrade`"
    )


def test_db_upgrade_migrates_and_then_the_cli_works(cli_env: dict[str, str], empty_url: str) -> None:
    env = {**cli_env, "PERDURE_DATABASE_URL": empty_url}
    upgraded = perdure(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"database upgraded from nothing to {head_revision()}"
    again = perdure(env, "db", "upgrade", "--json")
    assert again.returncode == 0, again.stderr
    assert again.stdout.replace(" ", "").replace("\n", "") == f'{{"from":"{head_revision()}","to":"{head_revision()}"}}'
    listed = perdure(env, "agent", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["db", "upgrade"], ["agent", "list"], ["worker", "--processes", "2"]])
def test_an_unreachable_database_is_one_line(command: list[str], cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PERDURE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"}
    failed = perdure(env, *command)
    assert failed.returncode == 1
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("perdure: error: cannot ") and "the database: " in line and "127.0.0.1" in line, line


def redacted(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)
