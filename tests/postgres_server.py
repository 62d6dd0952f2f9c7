"""A throwaway PostgreSQL cluster for the tests: `initdb` into a temporary directory, a free
port on 127.0.0.1, the socket in the same directory, removed when done.

PostgreSQL refuses to run as root, so as root (CI containers) the cluster belongs to the
`postgres` user the Debian package creates, and its commands run through `runuser`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from sqlalchemy import create_engine, make_url, text
from tests.ports import free_port

DEBIAN_BINARIES = Path("/usr/lib/postgresql")
CLUSTER_OWNER = "postgres"
TEST_SERVER_URL_ENV = "PERDURE_TEST_POSTGRES_URL"
"""A server to use instead of starting one (its user must be allowed to create databases)."""


def find_postgres_binaries() -> Path | None:
    """The newest Debian-packaged server's bin directory, else wherever `initdb` is on PATH."""
    versions = sorted(DEBIAN_BINARIES.glob("*/bin/initdb"), key=_major_version)
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _major_version(initdb: Path) -> int:
    version = initdb.parent.parent.name
    return int(version) if version.isdigit() else 0


class PostgresServer:
    """`with PostgresServer(bin_dir) as server:` a running cluster at `server.url` (database `postgres`)."""

    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        self._run_as = ["runuser", "-u", CLUSTER_OWNER, "--"] if os.geteuid() == 0 else []
        self._dir = Path(tempfile.mkdtemp(prefix="perdure-pg-"))
        self._data = self._dir / "data"
        self.url = ""

    def __enter__(self) -> PostgresServer:
        try:
            self._start()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        finally:
            self._remove()

    def _start(self) -> None:
        if self._run_as:
            shutil.chown(self._dir, CLUSTER_OWNER, CLUSTER_OWNER)
        self._run(
            "initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "--no-sync", "--no-locale", "-E", "UTF8"
        )
        port = free_port()
        # Durability settings off: a test cluster that dies is thrown away anyway.
        options = f"-p {port} -k {self._dir} -c listen_addresses=127.0.0.1"
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self._dir / "postgres.log"), "-o", options)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self._data), *args)

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self._run_as, str(self._bin / program), *args], capture_output=True, text=True, cwd=self._dir
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            )

    def _remove(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def create_database(server_url: str) -> str:
    """A new, empty database on the server; returns its URL."""
    name = f"perdure_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)
