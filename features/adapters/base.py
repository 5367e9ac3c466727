"""What every source adapter returns, and the view it registers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import duckdb


@dataclass(frozen=True)
class Attached:
    """The contract tables an adapter found, as ``raw_<table>`` views on the connection."""

    location: str  # how messages name the source
    tables: frozenset[str]
    # Table → the Parquet file or glob it was read from: null counts then come from the file
    # metadata instead of a scan.
    parquet_files: Mapping[str, str] = field(default_factory=dict)


def create_raw_view(con: duckdb.DuckDBPyConnection, table: str, select: str) -> None:
    con.execute(f"CREATE VIEW raw_{table} AS {select}")
