"""`perdure db`: the database's schema, brought up to date by the migrations shipped in the package."""

from __future__ import annotations

import argparse

from sqlalchemy.exc import SQLAlchemyError

from perdure.settings import Settings
from perdure.store.db import error_line, upgrade_database
from starter.cli_common import out


def upgrade(args: argparse.Namespace) -> int:
    url = Settings.from_env().database_url
    try:
        before, after = upgrade_database(url)
    except SQLAlchemyError as err:
        raise ConnectionError(f"cannot upgrade the database: {error_line(err)}") from err
    text = (
        f"database at revision {after}"
        if before == after
        else f"database upgraded from {before or 'nothing'} to {after}"
    )
    return out(args, {"from": before, "to": after}, text)
