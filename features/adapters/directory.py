"""A directory of files: ``<table>.parquet``, a ``<table>/`` folder of (hive-partitioned)
Parquet files, or ``<table>.csv`` / ``<table>.csv.gz``."""

from __future__ import annotations

from pathlib import Path

import duckdb

from churnguard.features.adapters.base import Attached, create_raw_view
from churnguard.features.checks import DataContractError, Problem
from churnguard.features.contract import TABLES
from churnguard.features.sql import literal


def attach(con: duckdb.DuckDBPyConnection, location: str) -> Attached:
    path = Path(location)
    if not path.is_dir():
        raise DataContractError(
            [Problem("source", None, 0, f"{location!r} is not a directory, a DuckDB file or a "
                     "postgresql:// URL")]
        )
    present = set()
    parquet: dict[str, str] = {}
    for name in TABLES:
        found = _reader(path, name)
        if found is not None:
            reader, files = found
            create_raw_view(con, name, f"SELECT * FROM {reader}")
            present.add(name)
            if files is not None:
                parquet[name] = files
    return Attached(location, frozenset(present), parquet)


def _reader(path: Path, name: str) -> tuple[str, str | None] | None:
    """The DuckDB table function reading ``name`` and, for Parquet, the files it reads."""
    if (path / f"{name}.parquet").is_file():
        file = str(path / f"{name}.parquet")
        return f"read_parquet({literal(file)})", file
    folder = path / name
    if folder.is_dir() and any(folder.rglob("*.parquet")):
        files = str(folder / "**" / "*.parquet")
        return f"read_parquet({literal(files)}, hive_partitioning = true)", files
    for suffix in (".csv", ".csv.gz"):
        if (path / f"{name}{suffix}").is_file():
            # Read every CSV column as text so that unparseable values are reported by the
            # contract check with examples, instead of failing inside the CSV sniffer.
            file = str(path / f"{name}{suffix}")
            return f"read_csv({literal(file)}, header = true, all_varchar = true)", None
    return None
