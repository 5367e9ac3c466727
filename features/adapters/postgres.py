"""A PostgreSQL schema (``postgresql://user@host/db?schema=crm``), read through psycopg 3.

DuckDB's postgres extension would be downloaded at run time, which machines without internet
cannot do. Instead each contract table is read through the Python driver ``BATCH_ROWS`` rows at a
time (streamed in chunks with libpq 17 or later, else from a server-side cursor), and every batch
becomes an Arrow record batch of fixed column types, so at most one batch of rows exists as
Python objects at a time. The record batches form one Arrow table per contract table, held in
memory (columnar, far smaller than the rows as Python objects) and registered with DuckDB.

Column types come from PostgreSQL, not from the values (a column that is all NULL keeps its
type): booleans, integers (as BIGINT), floats (as DOUBLE), text, dates, timestamps (with time
zone: as UTC instants) and ``numeric(p, s)`` map to the matching Arrow types; any other type
(unconstrained ``numeric``, ``uuid``, enums, ``json``, …) is read as its text, which the
contract check then parses like a CSV value.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import duckdb

from churnguard.features.adapters.base import Attached, create_raw_view
from churnguard.features.checks import DataContractError, Problem
from churnguard.features.contract import TABLES
from churnguard.features.sql import ident, qualified

BATCH_ROWS = 50_000
_URL = re.compile(r"^postgres(ql)?(\+\w+)?://")


def handles(location: str) -> bool:
    return bool(_URL.match(location))


def split_postgres_url(url: str) -> tuple[str, str]:
    """Split a ``?schema=`` parameter off a PostgreSQL URL: (libpq URL, schema)."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    schema = query.pop("schema", ["public"])[0]
    scheme = "postgresql"
    clean = parsed._replace(scheme=scheme, query=urlencode(query, doseq=True))
    return urlunparse(clean), schema


def attach(con: duckdb.DuckDBPyConnection, url: str) -> Attached:
    import psycopg

    dsn, schema = split_postgres_url(url)
    try:
        pg = psycopg.connect(dsn)
    except psycopg.Error as exc:
        raise DataContractError(
            [Problem("source", None, 0, f"cannot connect to PostgreSQL: {exc}".strip())]
        ) from exc
    present: set[str] = set()
    with pg:
        names = {
            r[0] for r in pg.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                [schema],
            ).fetchall()
        }
        for name in TABLES:
            if name in names:
                con.register(f"_pg_{name}", read_table(pg, schema, name))
                create_raw_view(con, name, f"SELECT * FROM _pg_{name}")
                present.add(name)
    return Attached(url, frozenset(present))


def read_table(pg: Any, schema: str, table: str, batch_rows: int | None = None,
               *, chunked: bool | None = None) -> Any:
    """``schema.table`` as an Arrow table, read ``batch_rows`` (default ``BATCH_ROWS``) rows at
    a time. ``chunked``: stream the rows in chunks (libpq 17 or later; the default when the
    installed libpq has it) instead of fetching them from a server-side cursor."""
    import psycopg
    import pyarrow as pa

    batch_rows = batch_rows or BATCH_ROWS
    if chunked is None:
        chunked = psycopg.pq.version() >= 170000
    source = qualified(schema, table, dialect="postgres")
    with pg.cursor() as cur:
        cur.execute(f"SELECT * FROM {source} LIMIT 0")
        columns = list(cur.description or [])
    fields, selects = [], []
    for col in columns:
        info = pg.adapters.types.get(col.type_code)
        arrow_type = _arrow_type(info.name if info else None, col.precision, col.scale)
        quoted = ident(col.name, "postgres")
        if arrow_type is None:
            arrow_type = pa.string()
            selects.append(f"{quoted}::text AS {quoted}")
        else:
            selects.append(quoted)
        fields.append(pa.field(col.name, arrow_type))
    arrow_schema = pa.schema(fields)
    if not fields:
        return arrow_schema.empty_table()
    query = f"SELECT {', '.join(selects)} FROM {source}"
    batches = []
    for rows in _batches(pg, query, batch_rows, chunked):
        values = list(zip(*rows, strict=True))
        batches.append(pa.record_batch(
            [pa.array(v, type=f.type) for v, f in zip(values, fields, strict=True)],
            schema=arrow_schema))
    return pa.Table.from_batches(batches, schema=arrow_schema)


def _batches(pg: Any, query: str, size: int, chunked: bool) -> Iterator[list[Any]]:
    """The result rows of ``query``, ``size`` at a time, never all of them at once: streamed in
    chunks of ``size`` rows, or fetched from a server-side (named) cursor that keeps the result
    on the server."""
    if chunked:
        with pg.cursor(binary=True) as cur:
            rows = cur.stream(query, size=size)
            while batch := list(itertools.islice(rows, size)):
                yield batch
        return
    # (A server-side cursor lives in a transaction: a savepoint if one is already open.)
    with pg.transaction(), pg.cursor(name="churnguard_read", binary=True) as cur:
        cur.execute(query)
        while batch := cur.fetchmany(size):
            yield batch


def _arrow_type(pg_type: str | None, precision: int | None, scale: int | None) -> Any | None:
    """The Arrow type a PostgreSQL column is read as; None: read its text."""
    import pyarrow as pa

    if pg_type == "numeric":
        if precision is not None and scale is not None and 0 < precision <= 38:
            return pa.decimal128(precision, scale)
        return None
    return _arrow_types().get(pg_type or "")


@functools.cache
def _arrow_types() -> dict[str, Any]:
    """PostgreSQL type name → the Arrow type its values are read as (pyarrow loads lazily)."""
    import pyarrow as pa

    return {
        "bool": pa.bool_(),
        "int2": pa.int64(),
        "int4": pa.int64(),
        "int8": pa.int64(),
        "float4": pa.float64(),
        "float8": pa.float64(),
        "text": pa.string(),
        "varchar": pa.string(),
        "bpchar": pa.string(),
        "name": pa.string(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
    }
