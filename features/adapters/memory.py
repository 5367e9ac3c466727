"""In-memory tables (pandas DataFrames or Arrow tables by name), e.g. from a notebook or a test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb

from churnguard.features.adapters.base import Attached, create_raw_view
from churnguard.features.checks import DataContractError, Problem
from churnguard.features.contract import TABLES

LOCATION = "<in-memory tables>"


def attach(con: duckdb.DuckDBPyConnection, tables: Mapping[str, Any]) -> Attached:
    present = set()
    for name, frame in tables.items():
        if name not in TABLES:
            raise DataContractError([Problem(name, None, 0, "is not a contract table "
                                             f"(expected one of {', '.join(TABLES)})")])
        con.register(f"_mem_{name}", frame)
        create_raw_view(con, name, f"SELECT * FROM _mem_{name}")
        present.add(name)
    return Attached(LOCATION, frozenset(present))
