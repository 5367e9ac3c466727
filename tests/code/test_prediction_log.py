"""The prediction log's two writers: a batch run's file (replaced on a re-run, rolled back on
failure) and the API's bounded, never-blocking queue."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from churnguard.serving.predlog import (
    ApiPredictionLog,
    BatchLogSink,
    model_name_of,
    read_prediction_log,
)

AS_OF = date(2025, 7, 1)
AT = datetime(2025, 7, 1, 6, 30, tzinfo=UTC)


def chunk(ids: list[str], version: str = "3", p: float = 0.2) -> pa.Table:
    n = len(ids)
    return pa.table({
        "customer_id": ids,
        "as_of": pa.array([AS_OF] * n, pa.date32()),
        "scored_at": pa.array([AT] * n, pa.timestamp("us", tz="UTC")),
        "model_version": [version] * n,
        "churn_probability": [p] * n,
        "clv": [10.0 * (i + 1) for i in range(n)],
        "risk_tier": ["low"] * n,
        "recommended_action": pa.array(["care_email"] + [None] * (n - 1), pa.string()),
        "value_tier": ["high"] * n,
        "lifecycle_stage": ["active"] * n,
    })


def run(root: Path, chunks: list[pa.Table], version: str = "3") -> BatchLogSink:
    sink = BatchLogSink(root, as_of=AS_OF, model_name="churnguard", model_version=version)
    sink.prepare()
    for c in chunks:
        sink.write(c)
    sink.commit()
    return sink


def test_a_batch_run_logs_every_scored_row(tmp_path: Path) -> None:
    sink = run(tmp_path, [chunk(["a", "b"]), chunk(["c"])])
    assert sink.rows == 3 and sink.target.parent.name == "date=2025-07-01"
    t = read_prediction_log(tmp_path).sort_by("customer_id").to_pylist()
    assert [r["customer_id"] for r in t] == ["a", "b", "c"]
    first = t[0]
    assert first["channel"] == "batch" and first["model_name"] == "churnguard"
    assert first["model_version"] == "3" and first["scored_as_of"] == AS_OF
    assert first["top_action"] == "care_email" and t[1]["top_action"] is None
    assert first["holdout"] is None and first["date"] == "2025-07-01"
    assert first["value_tier"] == "high" and first["lifecycle_stage"] == "active"


def test_a_log_written_before_the_tier_columns_still_reads(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from churnguard.serving.predlog import LOG_SCHEMA

    sink = run(tmp_path, [chunk(["a"])])
    old = pq.read_table(sink.target).drop_columns(["value_tier", "lifecycle_stage"])
    pq.write_table(old, sink.target)
    [row] = read_prediction_log(tmp_path).to_pylist()
    assert row["customer_id"] == "a" and row["value_tier"] is None
    assert set(LOG_SCHEMA.names) <= set(row)


def test_a_rerun_replaces_its_rows_and_another_version_adds_its_own(tmp_path: Path) -> None:
    run(tmp_path, [chunk(["a", "b"], p=0.2)])
    run(tmp_path, [chunk(["a", "b"], p=0.3)])
    rows = read_prediction_log(tmp_path)
    assert rows.num_rows == 2 and set(rows.column("churn_probability").to_pylist()) == {0.3}
    run(tmp_path, [chunk(["a", "b"], version="4")], version="4")
    assert read_prediction_log(tmp_path).num_rows == 4


def test_a_failed_run_leaves_the_previous_rows(tmp_path: Path) -> None:
    run(tmp_path, [chunk(["a"])])
    sink = BatchLogSink(tmp_path, as_of=AS_OF, model_name="churnguard", model_version="3")
    sink.prepare()
    sink.write(chunk(["x", "y"]))
    sink.abort()
    assert read_prediction_log(tmp_path).column("customer_id").to_pylist() == ["a"]
    assert not list(tmp_path.rglob(".*tmp-*"))


def test_an_empty_log_reads_as_an_empty_table(tmp_path: Path) -> None:
    empty = read_prediction_log(tmp_path / "nothing")
    assert empty.num_rows == 0 and "churn_probability" in empty.column_names


def api_log(root: Path, max_rows: int = 100_000
            ) -> tuple[ApiPredictionLog, list[int], list[int]]:
    written: list[int] = []
    dropped: list[int] = []
    plog = ApiPredictionLog(root, model_name="churnguard", flush_seconds=3600,
                            max_rows=max_rows, on_written=written.append,
                            on_dropped=dropped.append)
    return plog, written, dropped


def submit(plog: ApiPredictionLog, ids: list[str], channel: str = "api") -> bool:
    n = len(ids)
    return plog.submit(ids, "7", np.full(n, 0.4), np.full(n, 12.5), ["medium"] * n,
                       ["care_email"] * n, channel=channel, scored_at=AT)


def test_the_api_log_writes_queued_rows_on_close(tmp_path: Path) -> None:
    plog, written, dropped = api_log(tmp_path)
    assert submit(plog, ["a", "b"]) and submit(plog, ["c"], channel="plan")
    plog.close()
    rows = read_prediction_log(tmp_path).sort_by("customer_id").to_pylist()
    assert [r["customer_id"] for r in rows] == ["a", "b", "c"]
    assert [r["channel"] for r in rows] == ["api", "api", "plan"]
    assert rows[0]["scored_at"] == AT and rows[0]["scored_as_of"] == AT.date()
    assert sum(written) == 3 and not dropped
    assert not submit(plog, ["late"])  # after close: counted as dropped, not raised
    assert dropped == [1]


def test_a_full_queue_drops_whole_requests_and_counts_them(tmp_path: Path) -> None:
    plog, written, dropped = api_log(tmp_path, max_rows=3)
    assert submit(plog, ["a", "b"])
    assert not submit(plog, ["c", "d"])  # 4 > 3: dropped, the caller is not slowed
    assert submit(plog, ["e"])
    assert plog.flush() == 3 and submit(plog, ["f", "g"])  # room again after a flush
    plog.close()
    assert dropped == [2] and sum(written) == 5


def test_a_failed_write_is_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log folder should be")
    plog, written, dropped = api_log(blocker)
    submit(plog, ["a", "b"])
    assert plog.flush() == 0
    plog.close()
    assert dropped == [2] and not written


@pytest.mark.parametrize(("uri", "name"), [
    ("models:/churnguard@champion", "churnguard"), ("models:/saas/3", "saas"),
    ("/tmp/bundles/candidate", "candidate"), ("models:/", "fallback")])
def test_model_name_of(uri: str, name: str) -> None:
    assert model_name_of(uri, "fallback") == name


# ---------------------------------------------------------------------------------------------
# Where the log goes: the settings decide once (prediction_log_location), the same calls follow

SECRET = "s3cr3t-log-passw0rd"


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("CHURNGUARD_PREDICTION_LOG"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_without_a_url_the_log_is_the_parquet_folder(clean_env: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    from churnguard.config import load_settings
    from churnguard.serving.predlog import BatchLogSink, batch_log_sink, prediction_log_location

    clean_env.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(tmp_path))
    clean_env.setenv("CHURNGUARD_PREDICTION_LOG_URL", "  ")  # blank: unset
    settings = load_settings()
    assert settings.prediction_log_url is None
    assert prediction_log_location(settings) == tmp_path
    sink = batch_log_sink(tmp_path, as_of=AS_OF, model_name="m", model_version="1")
    assert isinstance(sink, BatchLogSink) and sink.where == str(sink.target)


def test_a_url_puts_the_log_in_postgresql_without_showing_the_password(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from churnguard.config import load_settings
    from churnguard.serving.predlog import (
        DEFAULT_TABLE,
        PostgresBatchLogSink,
        PostgresLog,
        batch_log_sink,
        prediction_log_location,
    )

    url = f"postgresql://crm:{SECRET}@db.example:5432/crm"
    clean_env.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(tmp_path))  # unused with a URL
    clean_env.setenv("CHURNGUARD_PREDICTION_LOG_URL", url)
    settings = load_settings()
    assert SECRET not in repr(settings)
    location = prediction_log_location(settings)
    assert location == PostgresLog(url, DEFAULT_TABLE) == PostgresLog(url)
    assert isinstance(location, PostgresLog)
    assert SECRET not in repr(location) and SECRET not in str(location)
    assert location.schema is None and location.qualified == f'"{DEFAULT_TABLE}"'

    clean_env.setenv("CHURNGUARD_PREDICTION_LOG_TABLE", "crm.scored")
    location = prediction_log_location(load_settings())
    assert isinstance(location, PostgresLog)
    assert (location.schema, location.name, location.qualified) == (
        "crm", "scored", '"crm"."scored"')
    # The sink connects only when prepared (before scoring), not when made.
    sink = batch_log_sink(location, as_of=AS_OF, model_name="m", model_version="1")
    assert isinstance(sink, PostgresBatchLogSink) and sink.where == "PostgreSQL table crm.scored"
    assert SECRET not in sink.where


@pytest.mark.parametrize(("variable", "value"), [
    ("CHURNGUARD_PREDICTION_LOG_URL", f"mysql://crm:{SECRET}@db/crm"),
    ("CHURNGUARD_PREDICTION_LOG_URL", f"/var/log/{SECRET}"),
    ("CHURNGUARD_PREDICTION_LOG_TABLE", f"a.b.{SECRET}"),
    ("CHURNGUARD_PREDICTION_LOG_TABLE", f"log; DROP TABLE {SECRET}"),
    ("CHURNGUARD_PREDICTION_LOG_TABLE", "1log"),
])
def test_a_bad_log_url_or_table_names_the_variable_not_the_value(
        clean_env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    from churnguard.config import SettingsError, load_settings

    clean_env.setenv(variable, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    [(name, what)] = exc.value.problems
    assert name == variable and SECRET not in str(exc.value)
    assert ("postgresql://" in what) if variable.endswith("URL") else ("SCHEMA.NAME" in what)


def test_an_unreachable_database_drops_and_counts_api_rows_without_failing() -> None:
    """Port 1 refuses at once: no server needed. submit never waits for it; each flush tries
    again (a new connection), counts its rows as dropped and raises nothing."""
    import time

    from churnguard.serving.predlog import PostgresLog

    down = PostgresLog(f"postgresql://crm:{SECRET}@127.0.0.1:1/crm", "log")
    written: list[int] = []
    dropped: list[int] = []
    plog = ApiPredictionLog(down, model_name="churnguard", flush_seconds=3600,
                            on_written=written.append, on_dropped=dropped.append)
    start = time.perf_counter()
    assert submit(plog, ["a", "b"])
    assert time.perf_counter() - start < 0.5
    assert plog.flush() == 0
    assert submit(plog, ["c"]) and plog.flush() == 0
    plog.close()
    assert dropped == [2, 1] and not written


def test_the_readme_lists_every_setting() -> None:
    from churnguard.config import Settings, _variable

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    readme = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    missing = [_variable(name) for name in Settings.model_fields
               if not any(f"`{v}`" in readme for v in _variable(name).split(" or "))]
    assert not missing, f"README's configuration table lacks {missing}"
