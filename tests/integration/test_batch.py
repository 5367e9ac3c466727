"""The batch job (`churnguard score`): atomic, idempotent, every destination, killed mid-way."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

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
    fault_checkpoint,
    parse_destination,
    partition_file,
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
        target = out if dest.kind == "csv" else partition_file(out, AS_OF, "7")
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
    n_later = int(small_source.con.execute(
        "SELECT count(*) FROM customers WHERE signup_date >= ?", [AS_OF]).fetchall()[0][0])
    assert summary.skipped == ({"signed up on or after the as-of date": n_later}
                               if n_later else {})


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
