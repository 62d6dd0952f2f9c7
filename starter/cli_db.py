"""`perdure db`: the database's schema, brought up to date by the migrations shipped in the package."""

from __future__ import annotations

import argparse

from sqlalchemy.exc import SQLAlchemyError

from perdure.settings import Settings
from perdure.store.db import upgrade_database
from starter.cli_common import out


class DatabaseUnreachableError(ConnectionError):
    """The database refused the connection or the migration (exit 1, one line)."""


def upgrade(args: argparse.Namespace) -> int:
    url = Settings.from_env().database_url
    try:
        before, after = upgrade_database(url)
    except SQLAlchemyError as err:
        raise DatabaseUnreachableError(f"cannot upgrade the database: {_first_line(err)}") from err
    text = (
        f"database at revision {after}"
        if before == after
        else f"database upgraded from {before or 'nothing'} to {after}"
    )
    return out(args, {"from": before, "to": after}, text)


def _first_line(err: SQLAlchemyError) -> str:
    return str(getattr(err, "orig", None) or err).strip().splitlines()[0]
