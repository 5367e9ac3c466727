"""A PostgreSQL source: read in typed batches (column types from PostgreSQL, not the values)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from churnguard.features.adapters.postgres import read_table
from churnguard.features.build import build_features, infer_spec
from churnguard.features.sources import DataContractError, open_source
from tests.tables import tiny_tables

PG_URL = os.environ.get("CHURNGUARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CUTOFF = date(2024, 5, 1)
pytestmark = pytest.mark.postgres


@pytest.fixture()
def pg() -> Iterator[tuple[Any, str]]:
    psycopg = pytest.importorskip("psycopg")
    try:
        con = psycopg.connect(PG_URL, autocommit=True)
    except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    schema = f"cg_src_{uuid.uuid4().hex[:8]}"
    con.execute(f"CREATE SCHEMA {schema}")
    try:
        yield con, schema
    finally:
        con.execute(f"DROP SCHEMA {schema} CASCADE")
        con.close()


def _load_tiny(con: Any, schema: str, *, amount: str = "double precision") -> None:
    ddl = {"customers": "customer_id text, signup_date date, segment text",
           "transactions": f"customer_id text, ts timestamp, amount {amount}",
           "events": "customer_id text, ts timestamp, event_type text, count integer"}
    for name, frame in tiny_tables().items():
        con.execute(f"CREATE TABLE {schema}.{name} ({ddl[name]})")
        with con.cursor() as cur, cur.copy(f"COPY {schema}.{name} FROM STDIN") as copy:
            for row in frame.itertuples(index=False):
                copy.write_row(list(row))


def test_features_from_postgres_equal_those_from_files(pg: tuple[Any, str]) -> None:
    con, schema = pg
    _load_tiny(con, schema, amount="numeric(12, 2)")
    with open_source(tiny_tables()) as files:
        expected = build_features(files, infer_spec(files), CUTOFF)
    with open_source(f"{PG_URL}?schema={schema}") as src:
        types = dict(src.con.execute("DESCRIBE raw_transactions").fetchall() and [
            (r[0], r[1]) for r in src.con.execute("DESCRIBE raw_transactions").fetchall()])
        assert types == {"customer_id": "VARCHAR", "ts": "TIMESTAMP", "amount": "DECIMAL(12,2)"}
        assert build_features(src, infer_spec(src), CUTOFF).equals(expected)


def test_batches_and_both_read_paths_give_the_same_table(pg: tuple[Any, str]) -> None:
    con, schema = pg
    con.execute(f"CREATE TABLE {schema}.events AS SELECT 'c' || (i % 7) AS customer_id, "
                "TIMESTAMP '2024-01-01' + i * INTERVAL '1 hour' AS ts, "
                "CASE WHEN i % 3 = 0 THEN NULL ELSE 'login' END AS event_type, "
                "(1 + i % 4)::int AS count FROM generate_series(1, 2500) i")
    whole = read_table(con, schema, "events", 10_000)
    assert whole.num_rows == 2500
    assert [str(t) for t in whole.schema.types] == ["string", "timestamp[us]", "string", "int64"]
    for chunked in (True, False):
        assert read_table(con, schema, "events", 333, chunked=chunked).equals(whole)


def test_column_types_come_from_postgres_not_from_the_values(pg: tuple[Any, str]) -> None:
    con, schema = pg
    _load_tiny(con, schema)
    # Every subscription active (end_date all NULL), an enum plan (read as text), a treated
    # column all NULL: all keep their types.
    con.execute(f"CREATE TYPE {schema}.plan AS ENUM ('basic', 'pro')")
    con.execute(f"CREATE TABLE {schema}.subscriptions (customer_id text, start_date date, "
                f"end_date date, plan {schema}.plan, mrr real, renewal_date date)")
    con.execute(f"INSERT INTO {schema}.subscriptions VALUES "
                "('a', '2024-01-01', NULL, 'pro', 9.5, '2024-07-01'), "
                "('b', '2024-02-01', NULL, 'basic', 5, NULL)")
    con.execute(f"CREATE TABLE {schema}.campaigns (customer_id text, ts timestamptz, "
                "action_id text, treated boolean)")
    con.execute(f"INSERT INTO {schema}.campaigns VALUES ('a', '2024-03-01 10:00+02', 'call', "
                "NULL)")
    # All NULL, the column is still BOOLEAN: the contract refuses the nulls, not the type.
    with pytest.raises(DataContractError) as exc:
        open_source(f"{PG_URL}?schema={schema}")
    assert str(exc.value).endswith("campaigns.treated: 1 row with an empty (null) value "
                                   "(e.g. None)")
    con.execute(f"UPDATE {schema}.campaigns SET treated = true")
    with open_source(f"{PG_URL}?schema={schema}") as src:
        raw = {r[0]: r[1] for r in src.con.execute("DESCRIBE raw_subscriptions").fetchall()}
        assert raw["end_date"] == "DATE" and raw["plan"] == "VARCHAR"
        assert src.con.execute("SELECT count(*) FROM subscriptions").fetchall()[0][0] == 2
        raw = {r[0]: r[1] for r in src.con.execute("DESCRIBE raw_campaigns").fetchall()}
        assert raw["ts"] == "TIMESTAMP WITH TIME ZONE" and raw["treated"] == "BOOLEAN"
        assert src.con.execute("SELECT CAST(ts AS VARCHAR) FROM campaigns").fetchall() == [
            ("2024-03-01 08:00:00",)]  # the UTC instant
    # An empty table is still empty, now with its own types.
    con.execute(f"DELETE FROM {schema}.events")
    with pytest.raises(DataContractError, match=r"events: is empty \(no rows\)"):
        open_source(f"{PG_URL}?schema={schema}")
