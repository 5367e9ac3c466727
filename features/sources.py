"""Open a data source (SPEC §2) as typed DuckDB views, checked against the data contract.

A source is a directory of Parquet/CSV files, a DuckDB database file, or a PostgreSQL URL. Each
contract table becomes a view of the same name whose columns have the contract's types. Rows that
break the contract stop the load with a :class:`DataContractError` naming the table, the column,
how many rows are bad and a few examples; rows that are merely suspicious (unknown customers,
exact duplicates, timestamps in the future) are reported as :class:`DataIssue` and left out.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import duckdb

from churnguard.features.contract import DUCKDB_TYPES, TABLES, ColumnSpec, TableSpec

MAX_EXAMPLES = 5
# Tables big enough that a full extra scan per build matters; see open_source.
_LARGE_TABLES = frozenset({"transactions", "events"})
_CATEGORICAL_TYPES = ("VARCHAR", "ENUM", "BOOLEAN")
_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
                      r"UBIGINT|FLOAT|DOUBLE|REAL|DECIMAL.*)$")
_INTEGER = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
                      r"UBIGINT)$")


@dataclass(frozen=True)
class Problem:
    """One way in which a table breaks the contract."""

    table: str
    column: str | None
    n_rows: int
    message: str
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        text = f"{where}: {self.message}"
        if self.n_rows:
            text = f"{where}: {self.n_rows:,} row{'s' if self.n_rows != 1 else ''} {self.message}"
        if self.examples:
            text += " (e.g. " + ", ".join(self.examples) + ")"
        return text


class DataContractError(ValueError):
    """The input breaks the data contract; nothing was written. The CLI exits with code 2."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("input data breaks the contract:\n" + "\n".join(
            f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class DataIssue:
    """Rows that are reported and left out, but do not stop the run."""

    table: str
    kind: str  # unknown_customer | duplicate | future_timestamp
    n_rows: int
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        what = {
            "unknown_customer": "rows for customers not in the customers table",
            "duplicate": "exact duplicate rows",
            "future_timestamp": "rows dated after the data's reference time",
        }.get(self.kind, self.kind)
        text = f"{self.table}: {self.n_rows:,} {what} left out"
        if self.examples:
            text += " (e.g. " + ", ".join(self.examples) + ")"
        return text


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

    def has(self, table: str) -> bool:
        return table in self.tables

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
    """An in-memory DuckDB connection with churnguard's settings (UTC, bounded memory)."""
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    # Spill to a private folder under the system temp dir (DuckDB creates it on first spill and
    # removes it on close), not a .tmp folder shared by every process in the user's directory.
    spill = Path(tempfile.gettempdir()) / f"churnguard-duckdb-{os.getpid()}-{id(con):x}"
    con.execute(f"SET temp_directory = {_literal(str(spill))}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
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
    ``thorough`` adds full scans for exact duplicate events and transactions and for unknown
    customers at load time (``churnguard data check`` and training use it).
    """
    con = con or connect()
    reference_time = reference_time or datetime.now().replace(microsecond=0)
    parquet: dict[str, str] = {}
    if isinstance(location, Mapping):
        # In-memory tables (pandas or Arrow), e.g. from a notebook or a test.
        loc = "<in-memory tables>"
        present = set()
        for name, frame in location.items():
            if name not in TABLES:
                raise DataContractError([Problem(name, None, 0, "is not a contract table "
                                                 f"(expected one of {', '.join(TABLES)})")])
            con.register(f"_mem_{name}", frame)
            con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM _mem_{name}")
            present.add(name)
    elif re.match(r"^postgres(ql)?(\+\w+)?://", str(location)):
        loc = str(location)
        present = _attach_postgres(con, loc)
    elif str(location).startswith("duckdb://") or str(location).endswith((".duckdb", ".db")):
        loc = str(location)
        present = _attach_duckdb(con, loc.removeprefix("duckdb://"))
    else:
        loc = str(location)
        path = Path(loc)
        if not path.is_dir():
            raise DataContractError(
                [Problem("source", None, 0, f"{loc!r} is not a directory, a DuckDB file or a "
                         "postgresql:// URL")]
            )
        present = _attach_directory(con, path, parquet)

    problems: list[Problem] = []
    for spec in TABLES.values():
        if spec.name not in present and spec.required:
            problems.append(Problem(spec.name, None, 0, f"table not found in {loc}"))
    if problems:
        raise DataContractError(problems)

    columns: dict[str, tuple[str, ...]] = {}
    for name in present:
        problems += _type_table(con, TABLES[name], columns)
    if problems:
        raise DataContractError(problems)

    issues: list[DataIssue] = []
    for name in present:
        problems += _check_rows(con, TABLES[name], parquet.get(name))
    if problems:
        raise DataContractError(problems)
    for name in present:
        dedupe = thorough or name not in _LARGE_TABLES
        issues += _clean_table(con, TABLES[name], reference_time, dedupe)
    checked = present - {"customers"} if thorough else present - {"customers", *_LARGE_TABLES}
    unknown = unknown_customer_issues(con, sorted(checked))
    if unknown and not allow_unknown_customers:
        raise DataContractError([
            Problem(i.table, "customer_id", i.n_rows,
                    "for customers that are not in the customers table", i.examples)
            for i in unknown
        ])
    issues += unknown

    if "events" not in present:
        casts = ", ".join(f"CAST(NULL AS {DUCKDB_TYPES[c.kind]}) AS {_quote(c.name)}"
                          for c in TABLES["events"].columns)
        con.execute(f"CREATE VIEW events AS SELECT {casts} WHERE false")
        columns["events"] = tuple(c.name for c in TABLES["events"].columns)

    raw_customer_cols = [
        r[0] for r in con.execute("DESCRIBE SELECT * FROM raw_customers").fetchall()
    ]
    attributes = tuple(
        c for c in raw_customer_cols
        if c not in {"customer_id", "signup_date"} and _is_categorical(con, c)
    )
    return Source(
        con=con,
        location=loc,
        tables=frozenset(present),
        columns=columns,
        attribute_columns=attributes,
        reference_time=reference_time,
        issues=issues,
        allow_unknown_customers=allow_unknown_customers,
    )


def _is_categorical(con: duckdb.DuckDBPyConnection, column: str) -> bool:
    kind = con.execute(
        "SELECT column_type FROM (DESCRIBE SELECT * FROM raw_customers) WHERE column_name = ?",
        [column],
    ).fetchall()[0]
    return bool(kind) and str(kind[0]).startswith(_CATEGORICAL_TYPES)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _attach_directory(con: duckdb.DuckDBPyConnection, path: Path,
                      parquet: dict[str, str]) -> set[str]:
    present: set[str] = set()
    for name in TABLES:
        reader = _directory_reader(path, name)
        if reader is not None:
            con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM {reader}")
            present.add(name)
            if reader.startswith("read_parquet("):
                parquet[name] = reader.split("'")[1]
    return present


def _directory_reader(path: Path, name: str) -> str | None:
    if (path / f"{name}.parquet").is_file():
        return f"read_parquet({_literal(str(path / f'{name}.parquet'))})"
    folder = path / name
    if folder.is_dir() and any(folder.rglob("*.parquet")):
        return (f"read_parquet({_literal(str(folder / '**' / '*.parquet'))}, "
                "hive_partitioning = true)")
    for suffix in (".csv", ".csv.gz"):
        if (path / f"{name}{suffix}").is_file():
            # Read every CSV column as text so that unparseable values are reported by the
            # contract check with examples, instead of failing inside the CSV sniffer.
            return (f"read_csv({_literal(str(path / f'{name}{suffix}'))}, header = true, "
                    "all_varchar = true)")
    return None


def _attach_duckdb(con: duckdb.DuckDBPyConnection, file: str) -> set[str]:
    if not Path(file).is_file():
        raise DataContractError([Problem("source", None, 0, f"DuckDB file {file!r} not found")])
    con.execute(f"ATTACH {_literal(file)} AS src (READ_ONLY)")
    names = {
        r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src'"
        ).fetchall()
    }
    present = set()
    for name in TABLES:
        if name in names:
            con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM src.{_quote(name)}")
            present.add(name)
    return present


def split_postgres_url(url: str) -> tuple[str, str]:
    """Split a ``?schema=`` parameter off a PostgreSQL URL: (libpq URL, schema)."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    schema = query.pop("schema", ["public"])[0]
    scheme = "postgresql"
    clean = parsed._replace(scheme=scheme, query=urlencode(query, doseq=True))
    return urlunparse(clean), schema


def _attach_postgres(con: duckdb.DuckDBPyConnection, url: str) -> set[str]:
    """Read the contract's tables from a PostgreSQL schema through psycopg 3 (COPY, binary).

    DuckDB's postgres extension would be downloaded at run time, which machines without internet
    cannot do, so the rows are streamed through the Python driver into Arrow instead.
    """
    import psycopg
    import pyarrow as pa

    dsn, schema = split_postgres_url(url)
    present: set[str] = set()
    try:
        pg = psycopg.connect(dsn)
    except psycopg.Error as exc:
        raise DataContractError(
            [Problem("source", None, 0, f"cannot connect to PostgreSQL: {exc}".strip())]
        ) from exc
    with pg:
        names = {
            r[0] for r in pg.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                [schema],
            ).fetchall()
        }
        for name in TABLES:
            if name not in names:
                continue
            with pg.cursor() as cur:
                cur.execute(f"SELECT * FROM {_quote(schema)}.{_quote(name)}")
                cols = [d.name for d in cur.description or []]
                rows = cur.fetchall()
            table = pa.table(
                {c: pa.array([r[i] for r in rows]) for i, c in enumerate(cols)}
            ) if rows else pa.table({c: pa.array([], pa.string()) for c in cols})
            con.register(f"_pg_{name}", table)
            con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM _pg_{name}")
            present.add(name)
    return present


def _raw_types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {
        r[0]: str(r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM raw_{table}").fetchall()
    }


def _typed_expr(col: ColumnSpec, raw_type: str) -> tuple[str, bool] | None:
    """SQL turning the raw column into the contract type, and whether values may fail to parse.

    None when the raw type can never hold the contract type (e.g. a boolean amount).
    """
    q = _quote(col.name)
    target = DUCKDB_TYPES[col.kind]
    text = raw_type.startswith("VARCHAR")
    if col.kind == "string":
        return f"CAST({q} AS VARCHAR)", False
    if text:
        if col.kind == "bool":
            return (f"CASE lower(trim({q})) WHEN 'true' THEN true WHEN '1' THEN true "
                    f"WHEN 'false' THEN false WHEN '0' THEN false END"), True
        return f"TRY_CAST(NULLIF(trim({q}), '') AS {target})", True
    if col.kind in ("timestamp", "date"):
        if raw_type.startswith(("TIMESTAMP", "DATE")):
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
    checks: list[tuple[ColumnSpec, str]] = []
    present: list[str] = []
    for col in spec.columns:
        if col.name not in raw:
            if col.required:
                problems.append(Problem(
                    spec.name, col.name, 0,
                    f"required column is missing (found: {', '.join(raw) or 'no columns'})",
                ))
            continue
        typed = _typed_expr(col, raw[col.name])
        if typed is None:
            problems.append(Problem(
                spec.name, col.name, 0,
                f"has type {raw[col.name]}, expected {col.kind} ({DUCKDB_TYPES[col.kind]})",
            ))
            continue
        expr, may_fail = typed
        selects.append(f"{expr} AS {_quote(col.name)}")
        present.append(col.name)
        if may_fail:
            checks.append((col, expr))
    if problems:
        return problems
    if spec.name == "customers":
        # Extra customer columns of a categorical type are the model's attributes.
        known = {c.name for c in spec.columns}
        for name, raw_type in raw.items():
            if name not in known and raw_type.startswith(_CATEGORICAL_TYPES):
                selects.append(f"CAST({_quote(name)} AS VARCHAR) AS {_quote(name)}")
    # Keep the raw text of parseable-but-suspect columns beside the typed value, so that bad
    # rows can be shown as they were written.
    raw_keep = [f"{_quote(c.name)} AS {_quote('__raw_' + c.name)}" for c, _ in checks]
    con.execute(
        f"CREATE VIEW typed_{spec.name} AS SELECT {', '.join(selects + raw_keep)} "
        f"FROM raw_{spec.name}"
    )
    columns[spec.name] = tuple(present)
    return problems


def _examples(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[str, ...]:
    rows = con.execute(f"{sql} LIMIT {MAX_EXAMPLES}").fetchall()
    return tuple(repr(r[0]) if len(r) == 1 else repr(tuple(r)) for r in rows)


def _parquet_nulls(
    con: duckdb.DuckDBPyConnection, files: str, columns: Sequence[str]
) -> tuple[int, dict[str, int]] | None:
    """Row count and null counts per column from Parquet metadata; None if stats are missing."""
    rows = con.execute(
        "SELECT path_in_schema, sum(stats_null_count), count(*) - count(stats_null_count) "
        f"FROM parquet_metadata({_literal(files)}) GROUP BY path_in_schema"
    ).fetchall()
    nulls = {r[0]: int(r[1] or 0) for r in rows if r[2] == 0}
    if any(c not in nulls for c in columns):
        return None
    total = con.execute(
        f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata({_literal(files)})"
    ).fetchall()[0][0]
    return int(total), nulls


def _check_rows(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, parquet_files: str | None
) -> list[Problem]:
    """Count empty tables, nulls in required columns, unparseable and out-of-range values."""
    view = f"typed_{spec.name}"
    present = set(
        r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
    )
    native = not any(c.startswith("__raw_") for c in present)
    if spec.name in _LARGE_TABLES and native and parquet_files:
        required = [c.name for c in spec.columns if not c.nullable and c.name in present]
        stats = _parquet_nulls(con, parquet_files, required)
        if stats is not None:
            total, nulls = stats
            if total == 0:
                return [Problem(spec.name, None, 0, "is empty (no rows)")]
            return [
                Problem(spec.name, c, nulls[c], "with an empty (null) value",
                        _examples(con, f"SELECT customer_id FROM {view} WHERE {_quote(c)} IS NULL"
                                  if c != "customer_id" else "SELECT NULL"))
                for c in required if nulls[c]
            ]
    conditions: list[tuple[ColumnSpec | None, str, str]] = []
    for col in spec.columns:
        if col.name not in present:
            continue
        q = _quote(col.name)
        raw = _quote("__raw_" + col.name)
        if f"__raw_{col.name}" in present:
            conditions.append((
                col, f"{raw} IS NOT NULL AND trim(CAST({raw} AS VARCHAR)) <> '' AND {q} IS NULL",
                f"that cannot be parsed as {col.kind}",
            ))
        if not col.nullable:
            null_cond = f"{q} IS NULL"
            if f"__raw_{col.name}" in present:
                null_cond = f"({raw} IS NULL OR trim(CAST({raw} AS VARCHAR)) = '')"
            conditions.append((col, null_cond, "with an empty (null) value"))
        if col.kind == "float":
            conditions.append((col, f"NOT isfinite({q})", "with a number that is not finite"))
        if col.name == "count":
            conditions.append((col, f"{q} < 1", "with a count below 1"))
    if spec.name == "subscriptions":
        conditions.append((spec.column("end_date"), '"end_date" < "start_date"',
                           "that end before they start"))
    aggregates = ", ".join(
        f"count(*) FILTER (WHERE {cond})" for _, cond, _ in conditions
    )
    row = con.execute(
        f"SELECT count(*){', ' + aggregates if aggregates else ''} FROM {view}"
    ).fetchall()[0]
    assert row is not None
    if row[0] == 0:
        return [Problem(spec.name, None, 0, "is empty (no rows)")]
    problems = []
    for (col, cond, message), n_bad in zip(conditions, row[1:], strict=True):
        if n_bad:
            shown = _quote("__raw_" + col.name) if col and f"__raw_{col.name}" in present \
                else (_quote(col.name) if col else "*")
            examples = _examples(
                con, f"SELECT {shown} FROM {view} WHERE {cond}"
            )
            problems.append(Problem(spec.name, col.name if col else None, int(n_bad), message,
                                    examples))
    return problems


def _clean_table(
    con: duckdb.DuckDBPyConnection,
    spec: TableSpec,
    reference_time: datetime,
    dedupe: bool,
) -> list[DataIssue]:
    """Create the final view ``<table>``: future rows and exact duplicates left out, reported."""
    view = f"typed_{spec.name}"
    cols = [
        r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
        if not r[0].startswith("__raw_")
    ]
    col_list = ", ".join(_quote(c) for c in cols)
    issues: list[DataIssue] = []
    where = "true"
    for time_col in spec.time_columns:
        ref = f"TIMESTAMP '{reference_time.isoformat(sep=' ')}'"
        cond = f"{_quote(time_col)} > {ref}"
        n_future = con.execute(f"SELECT count(*) FROM {view} WHERE {cond}").fetchall()[0]
        if n_future and n_future[0]:
            issues.append(DataIssue(
                spec.name, "future_timestamp", int(n_future[0]),
                _examples(con, f"SELECT CAST({_quote(time_col)} AS VARCHAR) FROM {view} "
                          f"WHERE {cond}"),
            ))
            where = f"NOT ({cond})"

    body = f"SELECT {col_list} FROM {view} WHERE {where}"
    if spec.name == "customers":
        dup = con.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM typed_customers"
        ).fetchall()[0]
        assert dup is not None
        if dup[0] != dup[1]:
            n_conflicting = con.execute(
                f"SELECT count(*) FROM (SELECT customer_id FROM (SELECT DISTINCT {col_list} "
                "FROM typed_customers) GROUP BY customer_id HAVING count(*) > 1)"
            ).fetchall()[0]
            if n_conflicting and n_conflicting[0]:
                raise DataContractError([Problem(
                    "customers", "customer_id", int(n_conflicting[0]),
                    "customer ids that appear more than once with different attributes",
                    _examples(con, "SELECT customer_id FROM typed_customers GROUP BY 1 "
                              "HAVING count(DISTINCT signup_date) > 1 OR count(*) > 1"),
                )])
            issues.append(DataIssue("customers", "duplicate", int(dup[0] - dup[1])))
            body = f"SELECT DISTINCT {col_list} FROM ({body})"
    elif dedupe:
        n_dup = con.execute(
            f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM ({body}) "
            f"GROUP BY ALL HAVING count(*) > 1)".replace("GROUP BY ALL", f"GROUP BY {col_list}")
        ).fetchall()[0]
        if n_dup and n_dup[0]:
            issues.append(DataIssue(
                spec.name, "duplicate", int(n_dup[0]),
                _examples(con, f"SELECT {col_list} FROM ({body}) GROUP BY {col_list} "
                          "HAVING count(*) > 1"),
            ))
            body = f"SELECT DISTINCT {col_list} FROM ({body})"
    con.execute(f"CREATE VIEW {spec.name} AS {body}")
    return issues


def unknown_customer_issues(con: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> list[
        DataIssue]:
    """Rows of ``tables`` whose customer is not in ``customers`` (reported; joins drop them)."""
    issues = []
    for name in tables:
        row = con.execute(
            f"SELECT count(*) FROM {name} t ANTI JOIN customers c USING (customer_id)"
        ).fetchall()[0]
        if row and row[0]:
            issues.append(DataIssue(
                name, "unknown_customer", int(row[0]),
                _examples(con, f"SELECT DISTINCT t.customer_id FROM {name} t "
                          "ANTI JOIN customers c USING (customer_id)"),
            ))
    return issues
