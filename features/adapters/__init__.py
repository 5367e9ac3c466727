"""The ways of opening a data source, one module each.

Every adapter registers a ``raw_<table>`` view on a DuckDB connection for each contract table
it finds, with the source's own column types, and returns an :class:`Attached`; typing and
checking the views against the contract is :func:`churnguard.features.sources.open_source`'s
job. :func:`attach` picks the adapter from the location:

- a mapping of table name → pandas DataFrame or Arrow table: :mod:`.memory`;
- ``postgresql://…`` (or ``postgres://``): :mod:`.postgres`;
- ``duckdb://…``, ``*.duckdb`` or ``*.db``: :mod:`.duckdb_file`;
- anything else, a directory of Parquet/CSV files: :mod:`.directory`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from churnguard.features.adapters import directory, duckdb_file, memory, postgres
from churnguard.features.adapters.base import Attached

__all__ = ["Attached", "attach"]


def attach(con: duckdb.DuckDBPyConnection,
           location: str | Path | Mapping[str, Any]) -> Attached:
    """Register the ``raw_<table>`` views of ``location``; raises DataContractError if it
    cannot be read at all."""
    if isinstance(location, Mapping):
        return memory.attach(con, location)
    text = str(location)
    if postgres.handles(text):
        return postgres.attach(con, text)
    if duckdb_file.handles(text):
        return duckdb_file.attach(con, text)
    return directory.attach(con, text)
