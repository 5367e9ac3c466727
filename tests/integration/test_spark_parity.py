"""DuckDB and Spark agree: the same feature SQL (transpiled) and the same bundle scoring code."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")

from churnguard.features.build import build_features, build_snapshot_grid, infer_spec
from churnguard.features.sources import DataContractError, open_source
from churnguard.features.spark import (
    open_spark_source,
    spark_features,
    spark_session,
    spark_snapshot_grid,
    to_spark_sql,
)
from churnguard.serving.batch import (
    BatchJob,
    DuckDBEngine,
    SparkEngine,
    parse_destination,
    run_batch,
)

pytestmark = pytest.mark.spark
AS_OF = date(2025, 7, 1)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    session = spark_session("local[2]")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def demo300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`churnguard demo-data --customers 300 --seed 1`."""
    from churnguard.features.demo_data import generate_demo_data

    out = tmp_path_factory.mktemp("demo300") / "demo"
    generate_demo_data(out, n_customers=300, seed=1)
    return out


def assert_same(duck: pd.DataFrame, spark_frame: pd.DataFrame, rtol: float = 1e-9) -> None:
    duck = duck.sort_values("customer_id").reset_index(drop=True)
    spark_frame = spark_frame.sort_values("customer_id").reset_index(drop=True)
    assert list(duck.columns) == list(spark_frame.columns)
    assert len(duck) == len(spark_frame) > 0
    for col in duck.columns:
        a, b = duck[col], spark_frame[col]
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), rtol=rtol,
                                       atol=0, equal_nan=True, err_msg=col)
        elif a.dtype.kind in "iu":
            assert b.dtype.kind in "iu", col
            assert (a.to_numpy() == b.to_numpy()).all(), col  # counts: exact
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col


def test_features_identical_on_demo_data(spark: Any, demo300: Path) -> None:
    with open_source(demo300) as source:
        spec = infer_spec(source, as_of=AS_OF)
        duck = build_features(source, spec, AS_OF).to_pandas()
    src = open_spark_source(spark, str(demo300))
    got = spark_features(src, spec, AS_OF).toPandas()
    assert_same(duck, got)
    assert (duck.dtypes.to_numpy() == got.dtypes.to_numpy()).all()
    # The fixture exercises what the rewrites are for: non-integer ratios and bitmaps.
    assert duck["purchase_trend"].dropna().mod(1).ne(0).any()
    assert duck["active_days_90d"].gt(0).any()


def test_snapshot_grid_with_labels_identical(spark: Any, demo300: Path) -> None:
    cutoffs = [date(2025, 3, 1), date(2025, 5, 1)]
    with open_source(demo300) as source:
        spec = infer_spec(source, as_of=cutoffs[-1])
        duck = build_snapshot_grid(source, spec, cutoffs, horizon_days=60,
                                   clv_horizon_days=90).to_pandas()
    src = open_spark_source(spark, str(demo300))
    got = spark_snapshot_grid(src, spec, cutoffs, horizon_days=60,
                              clv_horizon_days=90).toPandas()
    duck["key"] = duck["customer_id"] + duck["as_of"].astype(str)
    got["key"] = got["customer_id"] + got["as_of"].astype(str)
    assert_same(duck.drop(columns="customer_id").rename(columns={"key": "customer_id"}),
                got.drop(columns="customer_id").rename(columns={"key": "customer_id"}))
    assert set(duck["churned"]) == {0, 1}


def test_batch_scores_identical_including_actions(spark: Any, demo300: Path,
                                                  fake_bundle: Any, tmp_path: Path) -> None:
    bundle = fake_bundle
    at = datetime(2025, 7, 2, tzinfo=UTC)
    with open_source(demo300) as source:
        duck = run_batch(BatchJob(bundle, AS_OF, "1", chunk_size=100, scored_at=at),
                         DuckDBEngine(source), parse_destination(str(tmp_path / "duck.parquet")))
    # A run killed earlier left its staging directory (every score) behind: this run removes
    # it, stages its own in a private directory and removes that too.
    staging = tmp_path / "staging"
    killed = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
    stale = staging / f"churnguard-spark-{socket.gethostname()}-{int(killed.stdout)}-x1y2z3w4"
    (stale / "scores").mkdir(parents=True)
    (stale / "scores" / "part-00000.parquet").write_bytes(b"PAR1")
    modes: list[int] = []

    def look(point: str) -> None:
        if point == "features":
            modes.extend(stat.S_IMODE(p.stat().st_mode) for p in staging.iterdir())

    src = open_spark_source(spark, str(demo300))
    spk = run_batch(BatchJob(bundle, AS_OF, "1", chunk_size=100, scored_at=at),
                    SparkEngine(src, staging_dir=staging),
                    parse_destination(str(tmp_path / "spark.parquet")), checkpoint=look)
    assert modes == [0o700]  # only this run's directory, private to the user
    assert list(staging.iterdir()) == []
    assert duck.n_scored == spk.n_scored and duck.skipped == spk.skipped
    a = pq.read_table(tmp_path / "duck.parquet").to_pandas()
    b = pq.read_table(tmp_path / "spark.parquet").to_pandas()
    assert_same(a, b, rtol=1e-6)
    assert a["actions"].str.len().gt(2).all()  # the recommended actions are compared too
    assert (b["horizon_days"] == bundle.horizon_days).all()
    assert (b["clv_horizon_days"] == bundle.clv_horizon_days).all()


def test_spark_source_rejects_contract_violations(spark: Any, demo300: Path,
                                                  tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pq.read_table(demo300 / "customers.parquet"), bad / "customers.parquet")
    tx = pq.read_table(demo300 / "transactions.parquet").to_pandas()
    tx.loc[:2, "amount"] = float("inf")
    tx.loc[3, "customer_id"] = "nobody"
    tx.to_parquet(bad / "transactions.parquet")
    with pytest.raises(DataContractError) as info:
        open_spark_source(spark, str(bad))
    text = str(info.value)
    assert "transactions.amount: 3 rows with a number that is not finite" in text
    with pytest.raises(DataContractError, match="table not found"):
        open_spark_source(spark, str(tmp_path / "nothing"))


def test_transpile_rewrites_are_generic() -> None:
    sql = to_spark_sql("SELECT CASE WHEN isfinite(x) THEN 1 END, count(*) / 90.0 FROM t")
    assert "ISFINITE" not in sql.upper()
    assert "CAST(90.0 AS DOUBLE)" in sql


def test_score_cli_on_spark_writes_the_duckdb_scores_without_warnings(
        demo300: Path, fake_bundle_dir: Path, tmp_path: Path) -> None:
    """`churnguard score --engine spark` as a user runs it (its own JVM): the DuckDB engine's
    rows, and no pandas-version or plan-truncation warning on the way."""
    outs = {}
    for engine in ("duckdb", "spark"):
        outs[engine] = tmp_path / f"{engine}.parquet"
        proc = subprocess.run(
            [sys.executable, "-m", "churnguard.cli", "score", "--data", str(demo300), "--as-of",
             AS_OF.isoformat(), "--out", str(outs[engine]), "--model", str(fake_bundle_dir),
             "--engine", engine], capture_output=True, text=True, timeout=600,
            env={**os.environ, "CHURNGUARD_DATA_DIR": str(tmp_path / "data")})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        for noise in ("does not yet fully support pandas", "Truncated the string representation",
                      "FutureWarning", "UserWarning"):
            assert noise not in proc.stderr, proc.stderr[-3000:]
    duck, spark_frame = (pd.read_parquet(outs[e]).drop(columns=["scored_at"])
                         .sort_values("customer_id").reset_index(drop=True) for e in outs)
    assert len(duck) > 0
    assert_same(duck, spark_frame)


def test_monitor_on_spark_reports_what_duckdb_reports(
        spark: Any, demo300: Path, fake_bundle: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`churnguard monitor --engine spark`: Spark builds the customers' features, and the
    drift and estimate are those of the DuckDB engine."""
    import json

    from typer.testing import CliRunner

    from churnguard.cli import app
    from churnguard.features.build import build_features
    from churnguard.features.sources import open_source
    from churnguard.model.bundle import ScoringBundle
    from tests.scoring import with_reference_profile

    bundle = ScoringBundle.load(fake_bundle.save(tmp_path / "copy"))
    ref_day = AS_OF - timedelta(days=60)
    with open_source(demo300) as src:
        ref = build_features(src, bundle.spec, ref_day).to_pandas()
    with_reference_profile(bundle, ref, ref_day.isoformat())
    model = bundle.save(tmp_path / "profiled")
    monkeypatch.setenv("CHURNGUARD_DATA_DIR", str(tmp_path / "data"))
    reports = {}
    for engine in ("duckdb", "spark"):
        result = CliRunner().invoke(app, [
            "monitor", "--data", str(demo300), "--as-of", AS_OF.isoformat(), "--model",
            str(model), "--out", str(tmp_path / engine), "--engine", engine, "--no-mlflow"])
        assert result.exit_code in (0, 3), result.output
        reports[engine] = json.loads((tmp_path / engine / "monitor.json").read_text())
    duck, on_spark = reports["duckdb"], reports["spark"]
    assert on_spark["customers"] == duck["customers"] > 0
    assert [f["name"] for f in on_spark["features"]] == [f["name"] for f in duck["features"]]
    for a, b in zip(duck["features"], on_spark["features"], strict=True):
        assert b["psi"] == pytest.approx(a["psi"], abs=1e-9), a["name"]
        assert b["null_rate"] == pytest.approx(a["null_rate"], abs=1e-12), a["name"]
    assert on_spark["score"]["psi"] == pytest.approx(duck["score"]["psi"], abs=1e-9)
    assert on_spark["estimated"] == duck["estimated"]
    assert on_spark["verdict"] == duck["verdict"]
