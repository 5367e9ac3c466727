"""The batch job (`churnguard score`): atomic, idempotent, every destination, killed mid-way."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from churnguard.cli import app
from churnguard.features.sources import DataContractError, open_source
from churnguard.serving.batch import (
    OUTPUT_SCHEMA,
    BatchInputError,
    BatchJob,
    DuckDBEngine,
    check_destination,
    fault_checkpoint,
    parse_destination,
    partition_file,
    remove_stale_staging,
    run_batch,
)

PG_URL = os.environ.get("CHURNGUARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AS_OF = date(2025, 5, 1)
EARLIER = date(2025, 3, 1)
SCORED_AT = datetime(2025, 5, 2, 6, 0, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture(scope="module")
def model_uri(fake_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's fake-fit bundle as a local MLflow pyfunc model (a URI load_bundle accepts;
    the batch job only needs *a* fitted bundle)."""
    import mlflow.pyfunc

    from churnguard.model.pyfunc import ChurnguardPyfunc

    root = tmp_path_factory.mktemp("model")
    mlflow.pyfunc.save_model(str(root / "pyfunc"), python_model=ChurnguardPyfunc(),
                             artifacts={"bundle": str(fake_bundle_dir)})
    return str(root / "pyfunc")


def _cli(data: Path, out: str, model: str, *extra: str, as_of: date = AS_OF,
         fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHURNGUARD_BATCH_FAULT": fault or ""}
    return subprocess.run(
        [sys.executable, "-m", "churnguard.cli", "score", "--data", str(data), "--as-of",
         as_of.isoformat(), "--out", out, "--model", model, "--chunk-size", "200", *extra],
        env=env, capture_output=True, text=True, timeout=300)


def _frame(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path) if path.suffix == ".csv" else pq.read_table(path).to_pandas()
    return frame.drop(columns=["scored_at"]).reset_index(drop=True)


def _tmp_leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*tmp-*")]


# ---------------------------------------------------------------------------------------------
# Files: killed at several points, previous output intact, re-run == uninterrupted run


@pytest.fixture(scope="module")
def reference(small_demo_dir: Path, model_uri: str,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted CLI run."""
    path = tmp_path_factory.mktemp("reference") / "reference.parquet"
    ok = _cli(small_demo_dir, str(path), model_uri)
    assert ok.returncode == 0, ok.stderr
    assert "scored" in ok.stdout and "skipped" in ok.stdout
    return path


@pytest.mark.parametrize("point", ["chunk:1", "chunk:3", "before_commit"])
def test_killed_parquet_job_keeps_previous_output_and_rerun_completes(
        point: str, small_demo_dir: Path, model_uri: str, reference: Path,
        tmp_path: Path) -> None:
    out = tmp_path / "crm" / "scores.parquet"
    prev = _cli(small_demo_dir, str(out), model_uri, as_of=EARLIER)
    assert prev.returncode == 0, prev.stderr
    before = out.read_bytes()

    killed = _cli(small_demo_dir, str(out), model_uri, fault=point)
    assert killed.returncode == 86, killed.stderr  # os._exit: no cleanup ran, like SIGKILL
    assert out.read_bytes() == before
    assert _tmp_leftovers(out.parent), "the killed run should have left its temporary behind"

    again = _cli(small_demo_dir, str(out), model_uri)
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(_frame(out), _frame(reference))
    assert not _tmp_leftovers(out.parent)
    assert len(_frame(out)) > 400  # several chunks of 200


def test_fault_in_process_rolls_back_csv_and_partitioned_directory(
        small_source: Any, fake_bundle: Any, tmp_path: Path) -> None:
    bundle = fake_bundle
    for out in (tmp_path / "scores.csv", tmp_path / "lake"):
        dest = parse_destination(str(out))
        target = out if dest.kind == "csv" else partition_file(out, AS_OF)
        with pytest.raises(RuntimeError, match="injected fault at chunk:2"):
            run_batch(BatchJob(bundle, AS_OF, "7", chunk_size=150, scored_at=SCORED_AT),
                      DuckDBEngine(small_source), dest,
                      checkpoint=fault_checkpoint("chunk:2=raise"))
        assert not target.exists() and not _tmp_leftovers(tmp_path)
        first = run_batch(BatchJob(bundle, AS_OF, "7", chunk_size=150, scored_at=SCORED_AT),
                          DuckDBEngine(small_source), dest)
        content = target.read_bytes()
        chunked = _frame(target)
        with pytest.raises(RuntimeError, match="before_commit"):
            run_batch(BatchJob(bundle, AS_OF, "7", chunk_size=1000, scored_at=SCORED_AT),
                      DuckDBEngine(small_source), dest,
                      checkpoint=fault_checkpoint("before_commit=raise"))
        assert target.read_bytes() == content
        second = run_batch(BatchJob(bundle, AS_OF, "7", chunk_size=1000, scored_at=SCORED_AT),
                           DuckDBEngine(small_source), dest)
        assert second.n_scored == first.n_scored > 0 and first.n_chunks > second.n_chunks
        # Chunking does not change a byte of the scores.
        pd.testing.assert_frame_equal(_frame(target), chunked)
        if dest.kind == "parquet_dir":
            read = pq.read_table(out, partitioning="hive").to_pandas()
            assert len(read) == first.n_scored and set(read["as_of"].astype(str)) == {
                AS_OF.isoformat()}


def test_every_score_field_is_written(small_source: Any, fake_bundle: Any,
                                      tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    job = BatchJob(fake_bundle, AS_OF, "3", chunk_size=10_000, scored_at=SCORED_AT)
    summary = run_batch(job, DuckDBEngine(small_source), parse_destination(str(out)))
    table = pq.read_table(out)
    assert table.schema.equals(OUTPUT_SCHEMA)
    frame = table.to_pandas()
    assert len(frame) == summary.n_scored and frame["customer_id"].is_unique
    assert frame["churn_probability"].between(0, 1).all() and (frame["clv"] >= 0).all()
    assert frame["risk_tier"].notna().all() and frame["lifecycle_stage"].notna().all()
    assert frame["recommended_action"].notna().all()
    assert frame["drivers"].str.startswith("[{").all()
    assert (frame["model_version"] == "3").all()
    # The windows the two numbers are about, named as the API names them.
    assert (frame["horizon_days"] == fake_bundle.horizon_days).all()
    assert (frame["clv_horizon_days"] == fake_bundle.clv_horizon_days).all()
    names = OUTPUT_SCHEMA.names
    assert names.index("horizon_days") == names.index("churn_probability") + 1
    assert names.index("clv_horizon_days") == names.index("clv") + 1
    # The CLV's 80 % prediction interval, beside it (README, "CLV intervals").
    assert names.index("clv_low") == names.index("clv_horizon_days") + 1
    assert frame["clv_low"].notna().all() and frame["clv_high"].notna().all()
    assert ((frame["clv_low"] >= 0) & (frame["clv_low"] <= frame["clv_high"])).all()
    assert (frame.loc[frame["p_buy"] <= 0.9, "clv_low"] == 0).all()
    n_later = int(small_source.con.execute(
        "SELECT count(*) FROM customers WHERE signup_date >= ?", [AS_OF]).fetchall()[0][0])
    assert summary.skipped == ({"signed up on or after the as-of date": n_later}
                               if n_later else {})


def test_parquet_directory_keeps_one_complete_output_per_partition(
        small_source: Any, fake_bundle: Any, tmp_path: Path) -> None:
    """Scoring a cutoff with v1 then v2 leaves v2's rows only (one file per partition, the
    version a column); a reader of the directory at any point of a run (every checkpoint, the
    rename included) sees one complete scoring, never both and never neither."""
    lake = tmp_path / "lake"
    dest = parse_destination(str(lake))

    def read() -> pd.DataFrame:
        return pq.read_table(lake, partitioning="hive").to_pandas()

    seen: list[tuple[str, int, frozenset[str]]] = []

    def reader(point: str) -> None:
        if list(lake.glob("as_of=*/[!.]*")):  # (before the first commit there is nothing)
            frame = read()
            seen.append((point, len(frame), frozenset(frame["model_version"])))

    def run(version: str, as_of: date = AS_OF, fault: str | None = None) -> Any:
        check = fault_checkpoint(fault) if fault else reader
        return run_batch(BatchJob(fake_bundle, as_of, version, chunk_size=150,
                                  scored_at=SCORED_AT), DuckDBEngine(small_source), dest,
                         checkpoint=check)

    n = run("1").n_scored
    with pytest.raises(RuntimeError, match="before_commit"):
        run("2", fault="before_commit=raise")
    assert len(pq.read_table(partition_file(lake, AS_OF))) == n
    seen.clear()
    assert run("2").n_scored == n
    frame = read()
    assert len(frame) == n and frame["customer_id"].is_unique
    assert set(frame["model_version"]) == {"2"}
    # At every point of the second run, the rename included: all of the first scoring, then
    # all of the second one.
    assert {(rows, versions) for _, rows, versions in seen} == {
        (n, frozenset({"1"})), (n, frozenset({"2"}))}
    assert seen[-1] == ("after_commit", n, frozenset({"2"}))
    assert seen[-2] == ("before_commit", n, frozenset({"1"}))

    # An earlier churnguard wrote one file per model version: the next run removes them.
    legacy = partition_file(lake, AS_OF).with_name("scores-1.parquet")
    pq.write_table(pq.read_table(partition_file(lake, AS_OF)), legacy)
    run("3")
    assert [p.name for p in partition_file(lake, AS_OF).parent.iterdir()] == ["scores.parquet"]
    assert len(read()) == n and set(read()["model_version"]) == {"3"}

    run("1", as_of=EARLIER)  # another cutoff: its own partition, the others untouched
    frame = read()
    counts = frame.groupby(frame["as_of"].astype(str))["model_version"].agg(["size", "unique"])
    assert counts.loc[AS_OF.isoformat(), "size"] == n
    assert list(counts.loc[AS_OF.isoformat(), "unique"]) == ["3"]
    assert list(counts.loc[EARLIER.isoformat(), "unique"]) == ["1"]


# ---------------------------------------------------------------------------------------------
# Bad input fails before anything is written


def test_bad_input_fails_before_anything_is_written(small_demo_dir: Path, model_uri: str,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous output")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "customers.parquet").write_bytes((small_demo_dir / "customers.parquet")
                                               .read_bytes())
    tx = pq.read_table(small_demo_dir / "transactions.parquet").drop_columns(["amount"])
    pq.write_table(tx, broken / "transactions.parquet")
    cases = [
        (["--data", str(broken), "--out", str(out)], "transactions.amount"),
        (["--data", str(small_demo_dir), "--out", str(tmp_path / "s.json")], "--out must"),
        (["--data", str(small_demo_dir), "--out", PG_URL], "--table"),
        (["--data", str(small_demo_dir), "--out", str(out), "--engine", "flink"], "--engine"),
        (["--data", str(small_demo_dir), "--out", str(out), "--table", "x"], "--table"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["score", "--as-of", AS_OF.isoformat(), "--model",
                                     model_uri, *args])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert out.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "scores.parquet"]


def test_bad_source_or_destination_creates_nothing(small_demo_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong --data or --out is reported (exit 2) before the model registry is touched:
    no data folder, no mlflow.db, no output folder; with no registry yet the default model
    fails with exit 1, again creating nothing."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CHURNGUARD_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    store = tmp_path / "store"
    monkeypatch.setenv("CHURNGUARD_DATA_DIR", str(store))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = [
        (["--data", str(tmp_path / "no-such-data"), "--out", "out/s.parquet"], 2,
         "no-such-data"),
        (["--data", str(small_demo_dir), "--out", str(blocker / "s.parquet")], 2,
         "is not a directory"),
        (["--data", str(small_demo_dir), "--out", str(blocker / "lake") + "/"], 2,
         "is not a directory"),
        (["--data", str(small_demo_dir), "--out", "out/s.parquet"], 1, "no model registry"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, ["score", "--as-of", AS_OF.isoformat(), *args])
        assert result.exit_code == code, result.output
        assert message in result.output, result.output
        assert "Traceback" not in result.output
        assert not store.exists() and list(work.iterdir()) == [], (args, list(work.iterdir()))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(BatchInputError, match="cannot write"):
            check_destination(parse_destination(str(locked / "deeper" / "s.parquet")))


def test_destination_parsing() -> None:
    assert parse_destination("a/b.parquet").kind == "parquet"
    assert parse_destination("a/b.CSV").kind == "csv"
    assert parse_destination("a/lake/").kind == "parquet_dir"
    assert parse_destination(PG_URL, "crm.scores").table == "crm.scores"
    for out, table in (("s3://bucket/x.parquet", None), (PG_URL, "a.b.c"),
                       (PG_URL, "x; drop table y"), ("a/b.txt", None)):
        with pytest.raises(BatchInputError):
            parse_destination(out, table)


# ---------------------------------------------------------------------------------------------
# PostgreSQL: one transaction, upsert, never partial or duplicate rows; PostgreSQL as a source


@pytest.fixture()
def pg_schema() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        con = psycopg.connect(PG_URL, autocommit=True)
    except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"cg_batch_{uuid.uuid4().hex[:8]}"
    con.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        con.execute(f"DROP SCHEMA {name} CASCADE")
        con.close()


def _pg_rows(schema: str, table: str = "scores") -> pd.DataFrame:
    import psycopg

    with psycopg.connect(PG_URL) as con:
        exists = con.execute("SELECT to_regclass(%s)", [f"{schema}.{table}"]).fetchall()[0][0]
        if exists is None:
            return pd.DataFrame()
        cur = con.execute(f"SELECT customer_id, as_of, churn_probability, clv, risk_tier, "
                          f"recommended_action, drivers::text, model_version FROM "
                          f"{schema}.{table} ORDER BY model_version, as_of, customer_id")
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description or []])


@pytest.mark.postgres
def test_postgres_upsert_is_atomic_and_idempotent(pg_schema: str, small_source: Any,
                                                  fake_bundle: Any, small_demo_dir: Path,
                                                  model_uri: str) -> None:
    bundle = fake_bundle
    dest = parse_destination(PG_URL, f"{pg_schema}.scores")

    def run(version: str, fault: str | None = None, chunk: int = 150) -> Any:
        return run_batch(BatchJob(bundle, AS_OF, version, chunk_size=chunk, scored_at=SCORED_AT),
                         DuckDBEngine(small_source), dest, checkpoint=fault_checkpoint(fault))

    with pytest.raises(RuntimeError):
        run("1", "chunk:2=raise")
    assert _pg_rows(pg_schema).empty  # not even the table: it is created in the transaction
    first = run("1")
    rows = _pg_rows(pg_schema)
    assert len(rows) == first.n_scored and not rows.duplicated(["customer_id", "as_of"]).any()
    with pytest.raises(RuntimeError):
        run("1", "before_commit=raise")
    pd.testing.assert_frame_equal(_pg_rows(pg_schema), rows)
    run("1", chunk=10_000)  # re-run: replaces, never duplicates
    pd.testing.assert_frame_equal(_pg_rows(pg_schema), rows)
    run("2")  # another model version lives beside it
    both = _pg_rows(pg_schema)
    assert len(both) == 2 * len(rows)
    assert list(both.groupby("model_version").size()) == [len(rows), len(rows)]

    # Killed for real (os._exit) at the commit: the server rolls back, nothing changes.
    killed = _cli(small_demo_dir, PG_URL, model_uri, "--table", f"{pg_schema}.scores",
                  fault="before_commit")
    assert killed.returncode == 86, killed.stderr
    pd.testing.assert_frame_equal(_pg_rows(pg_schema), both)


@pytest.mark.postgres
def test_postgres_table_of_another_shape_is_refused_before_scoring(
        pg_schema: str, small_source: Any, fake_bundle: Any) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"CREATE TABLE {pg_schema}.other (customer_id text, score float)")
    with pytest.raises(BatchInputError, match="lacks the score columns"):
        run_batch(BatchJob(fake_bundle, AS_OF, "1"), DuckDBEngine(small_source),
                  parse_destination(PG_URL, f"{pg_schema}.other"))


@pytest.mark.postgres
def test_concurrent_first_runs_on_a_new_postgres_table_both_succeed(
        pg_schema: str, small_demo_dir: Path, fake_bundle: Any) -> None:
    """Several jobs scoring into a table that does not exist yet, all prepared (connected,
    staging) before any commits: every one succeeds (no UniqueViolation from two CREATE
    TABLEs), and the table holds each version's customers once."""
    dest = parse_destination(PG_URL, f"{pg_schema}.scores")
    jobs = 3
    ready = threading.Barrier(jobs, timeout=120)
    results: dict[int, Any] = {}

    def job(i: int) -> None:
        def together(point: str) -> None:
            if point == "features":  # every job has prepared its transaction
                ready.wait()
        try:
            with open_source(small_demo_dir) as source:  # a DuckDB connection per thread
                results[i] = run_batch(
                    BatchJob(fake_bundle, AS_OF, str(i % 2 + 1), chunk_size=200,
                             scored_at=SCORED_AT),
                    DuckDBEngine(source), dest, checkpoint=together)
        except BaseException as exc:  # pragma: no cover - shows the failure
            results[i] = exc

    threads = [threading.Thread(target=job, args=(i,)) for i in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    failures = {i: r for i, r in results.items() if isinstance(r, BaseException)}
    assert not failures and len(results) == jobs, failures
    rows = _pg_rows(pg_schema)
    n = results[0].n_scored
    assert len(rows) == 2 * n and not rows.duplicated(["customer_id", "as_of",
                                                       "model_version"]).any()


@pytest.mark.postgres
def test_postgres_table_of_the_earlier_shape_gets_the_horizon_columns(
        pg_schema: str, small_source: Any, fake_bundle: Any) -> None:
    """A table created before horizon_days/clv_horizon_days existed is given them (null in
    its earlier rows) by the next run's transaction; a killed run adds nothing."""
    import psycopg

    from churnguard.serving.batch import ADDED_COLUMNS, _pg_type

    old = [f for f in OUTPUT_SCHEMA if f.name not in ADDED_COLUMNS]
    cols = ", ".join(f"{f.name} {_pg_type(f)}" for f in old)
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"CREATE TABLE {pg_schema}.scores ({cols}, "
                    "PRIMARY KEY (customer_id, as_of, model_version))")
        con.execute(f"INSERT INTO {pg_schema}.scores (customer_id, as_of, model_version) "
                    "VALUES ('C-old', '2025-01-01', '0')")
    dest = parse_destination(PG_URL, f"{pg_schema}.scores")
    with pytest.raises(RuntimeError):
        run_batch(BatchJob(fake_bundle, AS_OF, "1", chunk_size=300), DuckDBEngine(small_source),
                  dest, checkpoint=fault_checkpoint("before_commit=raise"))

    def columns() -> list[str]:
        with psycopg.connect(PG_URL) as con:
            return [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = 'scores'", [pg_schema]).fetchall()]

    assert not set(ADDED_COLUMNS) & set(columns())
    summary = run_batch(BatchJob(fake_bundle, AS_OF, "1"), DuckDBEngine(small_source), dest)
    assert set(ADDED_COLUMNS) <= set(columns())
    with psycopg.connect(PG_URL) as con:
        got = con.execute(f"SELECT model_version, count(*), min(horizon_days), "
                          f"max(clv_horizon_days) FROM {pg_schema}.scores GROUP BY 1 "
                          "ORDER BY 1").fetchall()
    assert got == [("0", 1, None, None), ("1", summary.n_scored, fake_bundle.horizon_days,
                                          fake_bundle.clv_horizon_days)]


@pytest.mark.postgres
def test_postgres_source_scores_like_files(pg_schema: str, small_demo_dir: Path,
                                           small_source: Any, fake_bundle: Any,
                                           tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as con:
        for name, ddl in (("customers", "customer_id text, signup_date date, segment text, "
                           "region text, channel text"),
                          ("transactions", "customer_id text, ts timestamp, amount double "
                           "precision, order_id text, quantity bigint"),
                          ("events", "customer_id text, ts timestamp, event_type text, "
                           "channel text, count bigint")):
            con.execute(f"CREATE TABLE {pg_schema}.{name} ({ddl})")
            frame = pq.read_table(small_demo_dir / f"{name}.parquet").to_pandas()
            cols = [c.split()[0] for c in ddl.split(", ")]
            with con.cursor() as cur, cur.copy(
                    f"COPY {pg_schema}.{name} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in frame[cols].itertuples(index=False):
                    copy.write_row([None if pd.isna(v) else v for v in row])
    files = tmp_path / "files.parquet"
    db = tmp_path / "db.parquet"
    run_batch(BatchJob(fake_bundle, AS_OF, "1", scored_at=SCORED_AT),
              DuckDBEngine(small_source), parse_destination(str(files)))
    try:
        pg_source = open_source(f"{PG_URL}?schema={pg_schema}")
    except DataContractError as exc:  # pragma: no cover - shows the reason on failure
        raise AssertionError(str(exc)) from exc
    with pg_source:
        run_batch(BatchJob(fake_bundle, AS_OF, "1", scored_at=SCORED_AT),
                  DuckDBEngine(pg_source), parse_destination(str(db)))
    pd.testing.assert_frame_equal(_frame(db), _frame(files), check_exact=False, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# Very large populations: features built one customer hash partition at a time


def test_partitioned_feature_build_scores_every_customer_the_same(
        small_demo_dir: Path, fake_bundle: Any, tmp_path: Path) -> None:
    """Forcing partitions on small data: the same customers with the same scores (only the
    order changes: partition by partition), and unknown-customer counts summed over them."""
    data = tmp_path / "data"
    data.mkdir()
    for f in small_demo_dir.glob("*.parquet"):
        (data / f.name).symlink_to(f)
    tx = pq.read_table(small_demo_dir / "transactions.parquet").to_pandas()
    ghosts = tx.head(40).assign(customer_id=[f"ghost-{i % 13}" for i in range(40)],
                                ts=[pd.Timestamp("2024-06-01") + pd.Timedelta(hours=i)
                                    for i in range(40)])
    (data / "transactions.parquet").unlink()
    pd.concat([tx, ghosts]).to_parquet(data / "transactions.parquet")
    frames = {}
    summaries = {}
    for label, rows in (("whole", 10**12), ("parts", 10_000)):
        out = tmp_path / f"{label}.parquet"
        with open_source(data, allow_unknown_customers=True) as src:
            n_activity = sum(int(src.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0])
                             for t in ("transactions", "events"))
            job = BatchJob(fake_bundle, AS_OF, "1", chunk_size=500,
                           scored_at=SCORED_AT)
            summaries[label] = run_batch(job, DuckDBEngine(src, partition_rows=rows),
                                         parse_destination(str(out)))
        frames[label] = _frame(out).sort_values("customer_id").reset_index(drop=True)
    assert n_activity > 3 * 10_000  # at least four partitions
    pd.testing.assert_frame_equal(frames["parts"], frames["whole"])
    assert summaries["parts"].n_scored == summaries["whole"].n_scored == len(frames["whole"])
    key = "transactions rows for unknown customers"
    assert summaries["parts"].skipped[key] == summaries["whole"].skipped[key] == 40


# ---------------------------------------------------------------------------------------------
# Spark staging directories of killed runs (the Spark run itself: tests/integration/
# test_spark_parity.py)


def test_stale_spark_staging_of_dead_processes_is_removed(tmp_path: Path) -> None:
    import socket

    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    names = {
        "stale": f"churnguard-spark-{host}-{dead_pid}-abcd1234",
        "live": f"churnguard-spark-{host}-{os.getppid()}-efgh5678",
        "mine": f"churnguard-spark-{host}-{os.getpid()}-ijkl9012",
        "other_host": f"churnguard-spark-elsewhere-{dead_pid}-mnop3456",
        "earlier_layout": "churnguard-spark-qrst7890",
    }
    for name in names.values():
        (tmp_path / name / "scores").mkdir(parents=True)
        (tmp_path / name / "scores" / "part-0.parquet").write_text("scores")
    removed = remove_stale_staging(tmp_path)
    assert removed == [tmp_path / names["stale"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        v for k, v in names.items() if k != "stale")


def test_score_logs_what_it_scored_once_per_model_version_and_date(
        small_demo_dir: Path, model_uri: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scored customer is one prediction-log row with the output's numbers; a re-run of
    the same version and as-of date replaces its rows; --no-prediction-log writes none."""
    from churnguard.serving.predlog import read_prediction_log

    log_dir = tmp_path / "log"
    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(log_dir))
    out = tmp_path / "scores.parquet"
    args = ["score", "--data", str(small_demo_dir), "--as-of", AS_OF.isoformat(), "--out",
            str(out), "--model", model_uri, "--no-drivers", "--chunk-size", "300"]
    for _ in range(2):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "prediction log:" in result.output
    scores = pd.read_parquet(out).set_index("customer_id")
    logged = read_prediction_log(log_dir).to_pandas()
    assert len(logged) == len(scores) and logged["customer_id"].is_unique
    logged = logged.set_index("customer_id").loc[scores.index]
    np.testing.assert_array_equal(logged["churn_probability"], scores["churn_probability"])
    np.testing.assert_array_equal(logged["clv"], scores["clv"])
    assert (logged["risk_tier"] == scores["risk_tier"]).all()
    assert logged["top_action"].fillna("-").equals(scores["recommended_action"].fillna("-"))
    assert set(logged["channel"]) == {"batch"} and set(logged["date"]) == {AS_OF.isoformat()}
    assert (logged["scored_as_of"] == AS_OF).all()
    assert set(logged["model_version"]) == set(scores["model_version"])

    quiet = tmp_path / "quiet"
    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(quiet))
    result = runner.invoke(app, [*args, "--no-prediction-log"])
    assert result.exit_code == 0, result.output
    assert not quiet.exists()
