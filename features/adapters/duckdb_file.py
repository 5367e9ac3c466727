"""A DuckDB database file (``*.duckdb``, ``*.db`` or ``duckdb://<path>``), attached read-only."""

from __future__ import annotations

from pathlib import Path

import duckdb

from churnguard.features.adapters.base import Attached, create_raw_view
from churnguard.features.checks import DataContractError, Problem
from churnguard.features.contract import TABLES
from churnguard.features.sql import ident, literal


def handles(location: str) -> bool:
    return location.startswith("duckdb://") or location.endswith((".duckdb", ".db"))


def attach(con: duckdb.DuckDBPyConnection, location: str) -> Attached:
    file = location.removeprefix("duckdb://")
    if not Path(file).is_file():
        raise DataContractError([Problem("source", None, 0, f"DuckDB file {file!r} not found")])
    con.execute(f"ATTACH {literal(file)} AS src (READ_ONLY)")
    names = {
        r[0] for r in con.execute(
            # (The main schema only: src.<name> reads it, and a table of the same name in
            # another schema is not a second copy.)
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = 'src' AND table_schema = 'main'"
        ).fetchall()
    }
    present = set()
    for name in TABLES:
        if name in names:
            create_raw_view(con, name, f"SELECT * FROM src.{ident(name)}")
            present.add(name)
    return Attached(location, frozenset(present), files={n: file for n in present})
