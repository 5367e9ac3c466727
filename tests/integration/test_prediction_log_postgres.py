"""The prediction log in a PostgreSQL table (CHURNGUARD_PREDICTION_LOG_URL): a batch run is one
transaction that replaces its rows, an abort keeps the previous ones, the API's rows arrive (and
are dropped and counted, never raised, while the database is away), the table reads back as the
Parquet log does, and ``churnguard monitor`` measures realized performance from it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from churnguard.cli import app
from churnguard.serving.batch import BatchInputError
from churnguard.serving.predlog import (
    LOG_SCHEMA,
    ApiPredictionLog,
    PostgresLog,
    _PostgresRows,
    batch_log_sink,
    read_prediction_log,
)
from tests.integration.test_monitor_cli import T0, _monitor
from tests.integration.test_monitor_cli import profiled_model as profiled_model  # the fixture

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get("CHURNGUARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AS_OF = date(2025, 7, 1)
AT = datetime(2025, 7, 1, 6, 30, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture()
def pg_log() -> Iterator[PostgresLog]:
    """A table of its own in a schema of its own (dropped after the test)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        con = psycopg.connect(PG_URL, autocommit=True)
    except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    schema = f"cg_plog_{uuid.uuid4().hex[:8]}"
    con.execute(f"CREATE SCHEMA {schema}")
    try:
        yield PostgresLog(PG_URL, f"{schema}.prediction_log")
    finally:
        con.execute(f"DROP SCHEMA {schema} CASCADE")
        con.close()


def _sql(query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(PG_URL) as con:
        return con.execute(query, params).fetchall()


def chunk(ids: list[str], version: str = "3", p: float = 0.2) -> pa.Table:
    n = len(ids)
    return pa.table({
        "customer_id": ids,
        "as_of": pa.array([AS_OF] * n, pa.date32()),
        "scored_at": pa.array([AT] * n, pa.timestamp("us", tz="UTC")),
        "model_version": [version] * n,
        "churn_probability": [p + i / 1000 for i in range(n)],
        "clv": [10.0 * (i + 1) for i in range(n)],
        "risk_tier": ["low"] * n,
        "recommended_action": pa.array(["care_email"] + [None] * (n - 1), pa.string()),
        "value_tier": ["high"] * n,
        "lifecycle_stage": pa.array(["active"] + [""] * (n - 1), pa.string()),
    })


def run(location: Any, chunks: list[pa.Table], version: str = "3",
        model_name: str = "churnguard") -> Any:
    sink = batch_log_sink(location, as_of=AS_OF, model_name=model_name, model_version=version)
    sink.prepare()
    for c in chunks:
        sink.write(c)
    sink.commit()
    return sink


def _sorted(table: pa.Table) -> list[dict[str, Any]]:
    return table.sort_by([("model_version", "ascending"), ("customer_id", "ascending")]
                         ).to_pylist()


def test_a_batch_run_reads_back_as_the_parquet_log_does(pg_log: PostgresLog,
                                                        tmp_path: Path) -> None:
    chunks = [chunk(["a", "b"]), chunk(["c", "d", "e"])]
    sink = run(pg_log, chunks)
    run(tmp_path, chunks)
    assert sink.rows == 5 and sink.where == f"PostgreSQL table {pg_log.table}"
    from_pg = read_prediction_log(pg_log)
    from_files = read_prediction_log(tmp_path)
    assert from_pg.schema == from_files.schema == LOG_SCHEMA.append(pa.field("date", pa.string()))
    rows = _sorted(from_pg)
    assert rows == _sorted(from_files)  # nulls, empty text, floats and instants as written
    assert rows[0]["top_action"] == "care_email" and rows[1]["top_action"] is None
    assert rows[1]["lifecycle_stage"] == "" and rows[0]["holdout"] is None
    assert rows[0]["scored_at"] == AT and rows[0]["date"] == AS_OF.isoformat()
    # The table and its index on a run's key were created by the run.
    [(index,)] = _sql("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                      [pg_log.schema, pg_log.name])
    assert "(scored_as_of, model_version, channel)" in index


def test_a_rerun_replaces_its_rows_and_other_runs_keep_theirs(pg_log: PostgresLog) -> None:
    run(pg_log, [chunk(["a", "b", "c"], p=0.2)])
    run(pg_log, [chunk(["a", "b", "c"], version="4")], version="4")
    run(pg_log, [chunk(["a"], p=0.2)], model_name="other")
    run(pg_log, [chunk(["a", "b"], p=0.5)])  # the same run again, a customer fewer
    rows = read_prediction_log(pg_log)
    mine = [r for r in rows.to_pylist()
            if r["model_version"] == "3" and r["model_name"] == "churnguard"]
    assert sorted(r["customer_id"] for r in mine) == ["a", "b"]
    assert {round(r["churn_probability"], 1) for r in mine} == {0.5}
    assert rows.num_rows == 2 + 3 + 1


def test_an_aborted_run_keeps_the_previous_rows(pg_log: PostgresLog) -> None:
    run(pg_log, [chunk(["a"])])
    sink = batch_log_sink(pg_log, as_of=AS_OF, model_name="churnguard", model_version="3")
    sink.prepare()
    sink.write(chunk(["x", "y"]))
    sink.abort()
    assert read_prediction_log(pg_log).column("customer_id").to_pylist() == ["a"]
    # An abort of a first run creates nothing.
    fresh = PostgresLog(PG_URL, f"{pg_log.schema}.never")
    sink = batch_log_sink(fresh, as_of=AS_OF, model_name="churnguard", model_version="3")
    sink.prepare()
    sink.write(chunk(["x"]))
    sink.abort()
    assert _sql("SELECT to_regclass(%s)", [fresh.table]) == [(None,)]
    assert read_prediction_log(fresh).num_rows == 0


def test_a_table_of_another_shape_is_refused_before_scoring(pg_log: PostgresLog) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"CREATE TABLE {pg_log.qualified} (customer_id text, note text)")
    sink = batch_log_sink(pg_log, as_of=AS_OF, model_name="churnguard", model_version="3")
    with pytest.raises(BatchInputError, match="lacks the prediction-log columns"):
        sink.prepare()
    down = PostgresLog("postgresql://postgres:s3cr3t@127.0.0.1:1/test", "log")
    with pytest.raises(BatchInputError, match="cannot connect") as exc:
        batch_log_sink(down, as_of=AS_OF, model_name="m", model_version="1").prepare()
    assert "s3cr3t" not in str(exc.value)


def _submit(plog: ApiPredictionLog, ids: list[str], channel: str = "api") -> bool:
    n = len(ids)
    return plog.submit(ids, "7", np.full(n, 0.4), np.full(n, 12.5), ["medium"] * n,
                       ["care_email"] * n, channel=channel, scored_at=AT)


def test_api_rows_arrive_and_a_lost_connection_is_reopened(pg_log: PostgresLog) -> None:
    written: list[int] = []
    dropped: list[int] = []
    plog = ApiPredictionLog(pg_log, model_name="churnguard", flush_seconds=3600,
                            on_written=written.append, on_dropped=dropped.append)
    assert _submit(plog, ["a", "b"]) and _submit(plog, ["c"], channel="plan")
    assert plog.flush() == 3
    # The server ends the log's connection (a restart, an idle timeout): the rows of the flush
    # that meets the dead connection are dropped and counted, the next flush reconnects.
    writer = plog._writer
    assert isinstance(writer, _PostgresRows)
    pid = writer._pg.info.backend_pid
    assert _sql("SELECT pg_terminate_backend(%s)", [pid]) == [(True,)]
    _submit(plog, ["d"])
    assert plog.flush() == 0 and dropped == [1]
    _submit(plog, ["e", "f"])
    assert plog.flush() == 2
    _submit(plog, ["g"])
    plog.close()  # writes what is queued
    rows = read_prediction_log(pg_log).sort_by("customer_id").to_pylist()
    ids = [r["customer_id"] for r in rows]
    assert ids == ["a", "b", "c", "e", "f", "g"]
    assert written == [3, 2, 1] and dropped == [1]
    assert [r["channel"] for r in rows[:3]] == ["api", "api", "plan"]
    assert rows[0]["scored_at"] == AT and rows[0]["scored_as_of"] == AT.date()
    assert rows[0]["model_name"] == "churnguard" and rows[0]["model_version"] == "7"


def test_monitor_measures_realized_performance_from_a_postgres_log(
        small_demo_dir: Path, profiled_model: str, pg_log: PostgresLog, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``churnguard score`` then ``churnguard monitor`` with the log in PostgreSQL: the same
    realized run as with the Parquet log; a re-run of the batch changes nothing."""
    score = ["score", "--data", str(small_demo_dir), "--as-of", T0.isoformat(), "--out",
             str(tmp_path / "scores.parquet"), "--model", profiled_model, "--no-drivers"]
    as_of = T0 + timedelta(days=95)
    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(tmp_path / "log"))
    assert runner.invoke(app, score).exit_code == 0
    _, from_files = _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m0",
                             "--no-mlflow")
    [realized] = from_files["realized"]

    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(tmp_path / "unused"))
    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_URL", PG_URL)
    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_TABLE", pg_log.table)
    for _ in range(2):
        result = runner.invoke(app, score)
        assert result.exit_code == 0, result.output
        assert f"rows in PostgreSQL table {pg_log.table}" in result.output
    assert not (tmp_path / "unused").exists()
    [(n,)] = _sql(f"SELECT count(*) FROM {pg_log.qualified}")
    assert n == realized["n"] > 0
    _, from_pg = _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m1", "--no-mlflow")
    assert from_pg["realized"] == from_files["realized"]
    assert from_pg["realized"][0]["scored_as_of"] == T0.isoformat()
