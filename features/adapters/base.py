"""What every source adapter returns, and the view it registers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import duckdb

from churnguard.features.checks import Problem

#: The engine's errors while reading a source's files (a CSV line it cannot parse, a file that
#: is not Parquet, a file it may not open): contract problems, not crashes.
READ_ERRORS: tuple[type[duckdb.Error], ...] = (duckdb.InvalidInputException,
                                               duckdb.IOException)

# (connection, table, file, the engine's error) → the problem, for adapters that can say more.
Explain = Callable[[duckdb.DuckDBPyConnection, str, str, duckdb.Error], Problem]


@dataclass(frozen=True)
class Attached:
    """The contract tables an adapter found, as ``raw_<table>`` views on the connection."""

    location: str  # how messages name the source
    tables: frozenset[str]
    # Table → the Parquet file or glob it was read from: null counts then come from the file
    # metadata instead of a scan.
    parquet_files: Mapping[str, str] = field(default_factory=dict)
    # Table → the file it was read from, as messages name it.
    files: Mapping[str, str] = field(default_factory=dict)
    # Table → how to explain an error of the engine while reading it (default: its message).
    explain: Mapping[str, Explain] = field(default_factory=dict)

    def read_problem(self, con: duckdb.DuckDBPyConnection, table: str,
                     exc: duckdb.Error) -> Problem:
        """The contract problem of an engine error while reading ``table``."""
        file = self.files.get(table, self.location)
        how = self.explain.get(table)
        if how is not None:
            try:
                return how(con, table, file, exc)
            except duckdb.Error:  # the explanation needs the engine too; fall back
                pass
        return Problem(table, None, 0, f"cannot be read from {file}: {engine_message(exc)}")


def engine_message(exc: BaseException) -> str:
    """The first line of an engine error, without its class prefix (e.g. "Invalid Input Error:
    "); the engine's suggested fixes name options churnguard sets itself, so they are left out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for prefix in ("Invalid Input Error: ", "IO Error: "):
        text = text.removeprefix(prefix)
    return text[:300]


def create_raw_view(con: duckdb.DuckDBPyConnection, table: str, select: str) -> None:
    con.execute(f"CREATE VIEW raw_{table} AS {select}")
