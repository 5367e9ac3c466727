"""Open a data source as typed DuckDB views, checked against the data contract.

A source is a directory of Parquet/CSV files, a DuckDB database file, a PostgreSQL URL or a
mapping of in-memory tables (README, "Data contract"); :mod:`churnguard.features.adapters` has
one module per kind, each registering the source's tables as ``raw_<table>`` views. Each contract
table then becomes a view of the same name whose columns have the contract's types. Rows that
break the contract stop the load with a :class:`DataContractError` naming the table, the column,
how many rows are bad and a few examples; rows that are merely suspicious (unknown customers,
exact duplicates, timestamps in the future, implausible signup dates) are reported as
:class:`DataIssue` and left out. The checks are defined once, in
:mod:`churnguard.features.checks`, and shared with the Spark source. An error of the engine
while reading a table (a CSV line that cannot be parsed, a damaged Parquet file) is a contract
problem too, naming the table and the file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from churnguard.config import memory_limit as _memory_limit
from churnguard.features.adapters import Attached, attach
from churnguard.features.adapters.base import READ_ERRORS
from churnguard.features.adapters.postgres import split_postgres_url
from churnguard.features.checks import (
    EMPTY,
    MAX_EXAMPLES,
    RAW_PREFIX,
    DataContractError,
    DataIssue,
    Engine,
    Problem,
    RowCheck,
    check_rows,
    clean_table,
    missing_column,
    missing_tables,
    purchases_before_signup,
    row_checks,
    unknown_customer_problems,
    unknown_customers,
    wrong_type,
)
from churnguard.features.contract import (
    CUSTOMERS,
    DUCKDB_TYPES,
    EVENTS,
    SUBSCRIPTIONS,
    TABLES,
    ColumnSpec,
    TableSpec,
)
from churnguard.features.sql import ident, literal

__all__ = [
    "KNOWN_CUSTOMERS",
    "MAX_EXAMPLES",
    "DataContractError",
    "DataIssue",
    "Problem",
    "Source",
    "connect",
    "open_source",
    "split_postgres_url",
    "unknown_customer_issues",
]

_CATEGORICAL_TYPES = ("VARCHAR", "ENUM", "BOOLEAN")
_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
                      r"UBIGINT|FLOAT|DOUBLE|REAL|DECIMAL.*)$")
_INTEGER = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
                      r"UBIGINT)$")

#: Every customer row of the source, before rows are left out: rows of the other tables are
#: "unknown" only if their customer is not here (a customer left out for its signup date takes
#: its rows with it instead).
KNOWN_CUSTOMERS = "typed_customers"

# Optional tables that get an empty view when the source has none, so that a feature spec
# naming them (a model's) still builds: no events, no subscriptions.
_EMPTY_WHEN_ABSENT = (EVENTS, SUBSCRIPTIONS)


@dataclass
class Source:
    """An open, validated data source: ``con`` has one typed view per present contract table."""

    con: duckdb.DuckDBPyConnection
    location: str
    tables: frozenset[str]
    columns: dict[str, tuple[str, ...]]
    attribute_columns: tuple[str, ...]
    reference_time: datetime
    issues: list[DataIssue] = field(default_factory=list)
    allow_unknown_customers: bool = False
    # Turns an engine error while reading a table into a contract problem naming its file.
    read_problem: Callable[[str, duckdb.Error], Problem] | None = None

    def has(self, table: str) -> bool:
        return table in self.tables

    @contextlib.contextmanager
    def reading(self, table: str) -> Iterator[None]:
        """A block that scans ``table``: an error of the engine while reading it (e.g. a damaged
        Parquet page, first read by the feature aggregation) raises DataContractError."""
        try:
            yield
        except READ_ERRORS as exc:
            if self.read_problem is None:
                raise
            raise DataContractError([self.read_problem(table, exc)]) from None

    def report(self, issue: DataIssue) -> None:
        """Record an issue once (a snapshot grid meets the same rows at every cutoff)."""
        for i, known in enumerate(self.issues):
            if (known.table, known.kind) == (issue.table, issue.kind):
                if issue.n_rows > known.n_rows:
                    self.issues[i] = issue
                return
        self.issues.append(issue)

    def data_end(self) -> datetime | None:
        """The latest timestamp in transactions and events (used as the default as-of)."""
        row = self.con.execute(
            "SELECT greatest((SELECT max(ts) FROM transactions), (SELECT max(ts) FROM events))"
        ).fetchall()[0]
        return row[0] if row else None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(memory_limit: str = "1536MB", threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with churnguard's settings (UTC, bounded memory).

    The settings reach DuckDB as configuration options, never as SQL text; ``memory_limit`` is
    checked as the setting is (``churnguard.config.memory_limit``: ``1536MB``, ``2GB``, ``75%``)
    and ``threads`` must be a positive integer (ValueError otherwise).
    """
    config: dict[str, Any] = {"memory_limit": _memory_limit(memory_limit),
                              "preserve_insertion_order": False}
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError("threads must be a positive integer")
        config["threads"] = threads
    # Spill to a private folder under the system temp dir (DuckDB creates it on first spill and
    # removes it on close), not a .tmp folder shared by every process in the user's directory.
    config["temp_directory"] = str(
        Path(tempfile.gettempdir()) / f"churnguard-duckdb-{os.getpid()}-{os.urandom(6).hex()}")
    con = duckdb.connect(":memory:", config=config)
    # (TimeZone belongs to the ICU extension, which loads after the connection opens.) Naive
    # timestamps are UTC; timestamps with a time zone or an offset are converted to UTC.
    con.execute("SET TimeZone = 'UTC'")
    return con


def open_source(
    location: str | Path | Mapping[str, Any],
    *,
    reference_time: datetime | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    thorough: bool = False,
    allow_unknown_customers: bool = False,
) -> Source:
    """Open ``location`` and check it against the contract.

    ``reference_time`` is "now" for the data: rows dated after it are reported and left out
    (default: the wall clock). Rows for customers missing from ``customers`` break the contract
    unless ``allow_unknown_customers``, in which case they are reported and left out. Raises
    :class:`DataContractError` for contract violations.

    The large tables (transactions, events) are checked where it is cheap: Parquet null counts
    come from the file metadata, and value checks, unknown customers and duplicate transactions
    ride along in the feature aggregation (see ``features.build.check_aggregates``).
    ``thorough`` adds full scans for exact duplicate events and transactions, for unknown
    customers and for purchases dated before the customer's signup at load time (``churnguard
    data check`` and training use it).
    """
    con = con or connect()
    reference_time = reference_time or datetime.now().replace(microsecond=0)
    attached = attach(con, location)
    _raise_any(missing_tables(attached.tables, attached.location))
    present = [TABLES[name] for name in sorted(attached.tables)]
    columns = _type_tables(con, present, attached)
    _raise_any([p for spec in present for p in _reading(
        con, attached, spec.name,
        functools.partial(_check_table, con, spec, attached.parquet_files.get(spec.name)))])
    issues: list[DataIssue] = []
    for spec in present:
        issues += _clean_table(con, spec, reference_time, dedupe=thorough or not spec.large)
    checked = [s.name for s in present if s is not CUSTOMERS and (thorough or not s.large)]
    unknown = unknown_customer_issues(con, checked)
    if unknown and not allow_unknown_customers:
        raise DataContractError(unknown_customer_problems(unknown))
    issues += unknown
    if thorough:
        issues += purchases_before_signup(_engine(con))
    for spec in _EMPTY_WHEN_ABSENT:
        if spec.name not in attached.tables:
            columns[spec.name] = _empty_view(con, spec)
    return Source(
        con=con,
        location=attached.location,
        tables=attached.tables,
        columns=columns,
        attribute_columns=_attribute_columns(con),
        reference_time=reference_time,
        issues=issues,
        allow_unknown_customers=allow_unknown_customers,
        read_problem=lambda table, exc: attached.read_problem(con, table, exc),
    )


def unknown_customer_issues(con: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> list[
        DataIssue]:
    """Rows of ``tables`` whose customer is not in the source (reported; joins drop them)."""
    return unknown_customers(_engine(con), {name: name for name in tables}, KNOWN_CUSTOMERS)


def _reading(con: duckdb.DuckDBPyConnection, attached: Attached, table: str,
             step: Callable[[], list[Problem]]) -> list[Problem]:
    """``step()``'s problems, or the problem of an engine error while it read ``table``."""
    try:
        return step()
    except READ_ERRORS as exc:
        return [attached.read_problem(con, table, exc)]


def _engine(con: duckdb.DuckDBPyConnection) -> Engine:
    return Engine(lambda sql: con.execute(sql).fetchall())


def _raise_any(problems: Sequence[Problem]) -> None:
    if problems:
        raise DataContractError(problems)


def _empty_view(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> tuple[str, ...]:
    """A view named after a missing optional table: its contract columns, no rows."""
    casts = ", ".join(f"CAST(NULL AS {DUCKDB_TYPES[c.kind]}) AS {ident(c.name)}"
                      for c in spec.columns)
    con.execute(f"CREATE VIEW {spec.name} AS SELECT {casts} WHERE false")
    return tuple(c.name for c in spec.columns)


def _attribute_columns(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    """Extra customer columns of a categorical type: the model's attributes."""
    known = {c.name for c in CUSTOMERS.columns}
    return tuple(name for name, kind in _raw_types(con, CUSTOMERS.name).items()
                 if name not in known and kind.startswith(_CATEGORICAL_TYPES))


def _raw_types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {
        r[0]: str(r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM raw_{table}").fetchall()
    }


def _columns_of(con: duckdb.DuckDBPyConnection, view: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()]


def _type_tables(con: duckdb.DuckDBPyConnection, tables: Sequence[TableSpec],
                 attached: Attached) -> dict[str, tuple[str, ...]]:
    """Create ``typed_<table>`` for every table: their contract columns, or raise."""
    columns: dict[str, tuple[str, ...]] = {}
    problems: list[Problem] = []
    for spec in tables:
        problems += _reading(con, attached, spec.name,
                             functools.partial(_type_table, con, spec, columns))
    _raise_any(problems)
    return columns


def _typed_expr(col: ColumnSpec, raw_type: str) -> tuple[str, bool] | None:
    """SQL turning the raw column into the contract type, and whether values may fail to parse.

    None when the raw type can never hold the contract type (e.g. a boolean amount).
    """
    q = ident(col.name)
    target = DUCKDB_TYPES[col.kind]
    text = raw_type.startswith("VARCHAR")
    if col.kind == "string":
        return f"CAST({q} AS VARCHAR)", False
    if text:
        if col.kind == "bool":
            return (f"CASE lower(trim({q})) WHEN 'true' THEN true WHEN '1' THEN true "
                    f"WHEN 'false' THEN false WHEN '0' THEN false END"), True
        if col.kind == "timestamp":
            # Read through TIMESTAMPTZ so that an offset or zone (2025-01-01T10:00:00+05:00,
            # ...Z) is converted to UTC, as a Parquet timestamp with a time zone is; text
            # without one is UTC already and stays as written (the session is UTC).
            return (f"CAST(TRY_CAST(NULLIF(trim({q}), '') AS TIMESTAMPTZ) AS {target})",
                    True)
        return f"TRY_CAST(NULLIF(trim({q}), '') AS {target})", True
    if col.kind in ("timestamp", "date"):
        if raw_type.startswith(("TIMESTAMP", "DATE")):
            # (TIMESTAMP WITH TIME ZONE → the UTC wall time: the session is UTC.)
            return f"CAST({q} AS {target})", False
        return None
    if col.kind == "float":
        return (f"CAST({q} AS DOUBLE)", False) if _NUMERIC.match(raw_type) else None
    if col.kind == "int":
        if _INTEGER.match(raw_type):
            return f"CAST({q} AS BIGINT)", False
        if _NUMERIC.match(raw_type):
            # A float column may still hold whole numbers (e.g. pandas writes ints with NaN as
            # float); anything with a fraction is a bad row.
            return f"CASE WHEN {q} = round({q}) THEN CAST({q} AS BIGINT) END", True
        return None
    if col.kind == "bool":
        return (f"CAST({q} AS BOOLEAN)", False) if raw_type == "BOOLEAN" else None
    return None


def _type_table(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, columns: dict[str, tuple[str, ...]]
) -> list[Problem]:
    """Create ``typed_<table>``: contract columns only, cast to the contract types."""
    raw = _raw_types(con, spec.name)
    problems: list[Problem] = []
    selects: list[str] = []
    parsed: list[str] = []
    present: list[str] = []
    for col in spec.columns:
        if col.name not in raw:
            if col.required:
                problems.append(Problem(spec.name, col.name, 0, missing_column(raw)))
            continue
        typed = _typed_expr(col, raw[col.name])
        if typed is None:
            problems.append(Problem(spec.name, col.name, 0,
                                    wrong_type(raw[col.name], col, DUCKDB_TYPES[col.kind])))
            continue
        expr, may_fail = typed
        selects.append(f"{expr} AS {ident(col.name)}")
        present.append(col.name)
        if may_fail:
            parsed.append(col.name)
    if problems:
        return problems
    if spec is CUSTOMERS:
        # Extra customer columns of a categorical type are the model's attributes.
        known = {c.name for c in spec.columns}
        for name, raw_type in raw.items():
            if name not in known and raw_type.startswith(_CATEGORICAL_TYPES):
                selects.append(f"CAST({ident(name)} AS VARCHAR) AS {ident(name)}")
    # Keep the raw text of parseable-but-suspect columns beside the typed value, so that bad
    # rows can be shown as they were written.
    raw_keep = [f"{ident(c)} AS {ident(RAW_PREFIX + c)}" for c in parsed]
    con.execute(
        f"CREATE VIEW typed_{spec.name} AS SELECT {', '.join(selects + raw_keep)} "
        f"FROM raw_{spec.name}"
    )
    columns[spec.name] = tuple(present)
    return problems


def _check_table(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, parquet_files: str | None
) -> list[Problem]:
    """Empty tables, nulls in required columns, unparseable and out-of-range values."""
    view = f"typed_{spec.name}"
    present = _columns_of(con, view)
    raw_text = [c.removeprefix(RAW_PREFIX) for c in present if c.startswith(RAW_PREFIX)]
    checks = row_checks(spec, present, raw_text)
    if spec.large and not raw_text and parquet_files:
        found = _parquet_checks(con, spec, view, parquet_files, checks)
        if found is not None:
            return found
    return check_rows(_engine(con), spec, view, checks)


def _parquet_checks(con: duckdb.DuckDBPyConnection, spec: TableSpec, view: str, files: str,
                    checks: Sequence[RowCheck]) -> list[Problem] | None:
    """The checks of a large table without a full scan: empty tables and null counts from the
    Parquet metadata; the value checks the feature aggregation carries are left to it. None if
    the metadata lacks the statistics."""
    nulls = [c for c in checks if c.kind == "null"]
    stats = _parquet_nulls(con, files, [c.column for c in nulls if c.column])
    if stats is None:
        return None
    total, null_counts = stats
    if total == 0:
        return [Problem(spec.name, None, 0, EMPTY)]
    engine = _engine(con)
    problems = [
        check.problem(null_counts[check.column], engine.examples(
            f"SELECT customer_id FROM {view} WHERE {check.condition}"
            if check.column != "customer_id" else "SELECT NULL"))
        for check in nulls if check.column and null_counts[check.column]
    ]
    # Whatever neither the metadata nor the aggregation covers needs the scan (none today).
    rest = [c for c in checks if c.kind != "null" and not c.carried]
    return problems + (check_rows(engine, spec, view, rest) if rest else [])


def _parquet_nulls(
    con: duckdb.DuckDBPyConnection, files: str, columns: Sequence[str]
) -> tuple[int, dict[str, int]] | None:
    """Row count and null counts per column from Parquet metadata; None if stats are missing."""
    rows = con.execute(
        "SELECT path_in_schema, sum(stats_null_count), count(*) - count(stats_null_count) "
        f"FROM parquet_metadata({literal(files)}) GROUP BY path_in_schema"
    ).fetchall()
    nulls = {r[0]: int(r[1] or 0) for r in rows if r[2] == 0}
    if any(c not in nulls for c in columns):
        return None
    total = con.execute(
        f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata({literal(files)})"
    ).fetchall()[0][0]
    return int(total), nulls


def _clean_table(con: duckdb.DuckDBPyConnection, spec: TableSpec, reference_time: datetime,
                 dedupe: bool) -> list[DataIssue]:
    """Create the final view ``<table>``: future rows and exact duplicates left out, reported."""
    view = f"typed_{spec.name}"
    cols = [c for c in _columns_of(con, view) if not c.startswith(RAW_PREFIX)]
    body, issues = clean_table(_engine(con), spec, view, cols, reference_time, dedupe=dedupe)
    con.execute(f"CREATE VIEW {spec.name} AS {body}")
    return issues
