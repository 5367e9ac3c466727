"""The production batch job behind ``churnguard score``: every customer scored, never half-written.

Flow: features as of the cutoff (DuckDB, or Spark with the same feature SQL) → chunks of
``chunk_size`` customers → :func:`score_table` (the one scoring path, into one fixed
Arrow schema for every engine and destination) → a :class:`Sink`.

Atomic and idempotent:

- files (Parquet, CSV) are streamed to a hidden temporary name beside the target and renamed
  onto it only after the last chunk (``os.replace``); a Parquet *directory* is partitioned by
  ``as_of`` and holds one file per model version, swapped in the same way; temporaries left by
  a killed run are removed by the next one;
- PostgreSQL: every chunk is COPYed into a temporary staging table and one transaction upserts
  it on (customer_id, as_of, model_version) and deletes the rows of that key the run no longer
  produces; a re-run replaces, never duplicates, and a killed run commits nothing.

``checkpoint`` is called at named points (``features``, ``chunk:<i>``, ``before_commit``,
``after_commit``) so fault tests can kill the job there (the CLI wires it to an env var).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churnguard.features import sql
from churnguard.features.io import AtomicPath
from churnguard.features.sources import DataIssue, Source
from churnguard.model.bundle import ScoringBundle
from churnguard.model.score import FullScores, score_matrix

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

    from churnguard.features.spark import SparkSource

Checkpoint = Callable[[str], None]
Progress = Callable[[int, int], None]
DestKind = Literal["parquet", "parquet_dir", "csv", "postgres"]

#: One schema for every engine and destination; drivers and actions are JSON text.
OUTPUT_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("as_of", pa.date32()),
    ("churn_probability", pa.float64()),
    ("risk_tier", pa.string()),
    ("clv", pa.float64()),
    ("value_tier", pa.string()),
    ("lifecycle_stage", pa.string()),
    ("recommended_action", pa.string()),
    ("drivers", pa.string()),
    ("actions", pa.string()),
    ("p_buy", pa.float64()),
    ("expected_spend_if_buy", pa.float64()),
    ("model_version", pa.string()),
    ("scored_at", pa.timestamp("us", tz="UTC")),
])
KEY = ("customer_id", "as_of", "model_version")
_PG_TYPES = {pa.string(): "text", pa.date32(): "date", pa.float64(): "double precision",
             pa.timestamp("us", tz="UTC"): "timestamptz"}
_JSON_COLUMNS = ("drivers", "actions")


class BatchInputError(ValueError):
    """A bad destination, option or table: raised before anything is written."""


def _noop(_: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# Scoring: the bundle's one path, then the fixed output schema


def score_table(bundle: ScoringBundle, features: pa.Table | pa.RecordBatch, *,
                drivers: bool, as_of: date, model_version: str,
                scored_at: datetime) -> pa.Table:
    """Score one chunk of feature rows (:func:`~churnguard.model.score.score_matrix`) into
    :data:`OUTPUT_SCHEMA`, as the DuckDB and Spark engines both do. Drivers are null with
    ``drivers=False``; ``actions`` is the API's ``actions`` list as JSON text."""
    full = score_matrix(bundle, bundle.encode_arrow(features), drivers=drivers)
    return _output(features, full, drivers=drivers, as_of=as_of, model_version=model_version,
                   scored_at=scored_at)


def _output(features: pa.Table | pa.RecordBatch, full: FullScores, *, drivers: bool,
            as_of: date, model_version: str, scored_at: datetime) -> pa.Table:
    n = features.num_rows
    a = full.assessment
    recs = a.recommendations(full.policy)
    action_ids = np.asarray([act.id for act in full.policy.actions], dtype=object)
    arrays: dict[str, Any] = {
        "customer_id": pc.cast(features.column("customer_id"), pa.string()),
        "as_of": pa.repeat(pa.scalar(as_of, pa.date32()), n),
        "churn_probability": full.churn_probability,
        "risk_tier": a.risk_tier,
        "clv": full.clv,
        "value_tier": a.value_tier,
        "lifecycle_stage": a.lifecycle_stage,
        "recommended_action": action_ids[recs.first()],
        "drivers": _to_json(full.drivers, n) if drivers else None,
        "actions": a.actions_json(full.policy),
        "p_buy": full.p_buy,
        "expected_spend_if_buy": full.expected_spend_if_buy,
        "model_version": pa.repeat(pa.scalar(model_version, pa.string()), n),
        "scored_at": pa.repeat(pa.scalar(scored_at, pa.timestamp("us", tz="UTC")), n),
    }
    cols = []
    for f in OUTPUT_SCHEMA:
        value = arrays[f.name]
        if value is None:
            cols.append(pa.nulls(n, f.type))
        elif isinstance(value, pa.Array | pa.ChunkedArray):
            cols.append(value.cast(f.type))
        else:
            cols.append(pa.array(value, f.type))
    return pa.Table.from_arrays(cols, schema=OUTPUT_SCHEMA)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _to_json(values: Any, n: int) -> list[str | None]:
    if values is None:
        return [None] * n
    return [json.dumps(v, separators=(",", ":"), default=_json_default) for v in values]


# ---------------------------------------------------------------------------------------------
# Destinations


@dataclass(frozen=True)
class Destination:
    kind: DestKind
    target: str  # a path, or the PostgreSQL URL
    table: str | None = None

    def __str__(self) -> str:
        return f"{self.target} (table {self.table})" if self.table else self.target


_PG_URL = re.compile(r"^postgres(ql)?(\+\w+)?://")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def parse_destination(out: str, table: str | None = None) -> Destination:
    """Where scores go: a ``.parquet`` or ``.csv`` file, a directory (Parquet, partitioned by
    as_of), or ``postgresql://…`` with ``table`` (``name`` or ``schema.name``)."""
    if _PG_URL.match(out):
        if not table:
            raise BatchInputError("a PostgreSQL destination needs --table NAME "
                                  "(or SCHEMA.NAME)")
        parts = table.split(".")
        if len(parts) > 2 or not all(_IDENT.match(p) for p in parts):
            raise BatchInputError(f"--table must be NAME or SCHEMA.NAME (letters, digits, _), "
                                  f"got {table!r}")
        return Destination("postgres", out, table)
    if table:
        raise BatchInputError("--table is only for a postgresql:// destination")
    if "://" in out:
        raise BatchInputError(f"unsupported destination {out!r}: use a .parquet or .csv file, "
                              "a directory, or a postgresql:// URL")
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        kind: DestKind = "csv"
    elif suffix == ".parquet" and not path.is_dir():
        kind = "parquet"
    elif path.is_dir() or out.endswith(("/", os.sep)) or not suffix:
        kind = "parquet_dir"
    else:
        raise BatchInputError(f"--out must be a .parquet or .csv file, a directory, or a "
                              f"postgresql:// URL, got {out!r}")
    if path.exists() and kind != "parquet_dir" and path.is_dir():
        raise BatchInputError(f"{out} is a directory")
    if kind != "parquet_dir" and path.parent.exists() and not path.parent.is_dir():
        raise BatchInputError(f"{path.parent} is not a directory")
    return Destination(kind, str(path))


class Sink(Protocol):
    def prepare(self) -> None: ...
    def write(self, table: pa.Table) -> None: ...
    def commit(self, checkpoint: Checkpoint) -> None: ...
    def abort(self) -> None: ...


class FileSink:
    """One Parquet or CSV file, streamed to a temporary beside it and renamed onto it
    (:class:`~churnguard.features.io.AtomicPath`)."""

    def __init__(self, target: Path, fmt: Literal["parquet", "csv"],
                 schema: pa.Schema = OUTPUT_SCHEMA) -> None:
        self.target = Path(target)
        self.fmt = fmt
        self.schema = schema
        self.atomic = AtomicPath(self.target)
        self._writer: Any = None

    def prepare(self) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(self.target.parent, os.W_OK):
            raise BatchInputError(f"cannot write to {self.target.parent}")
        self.atomic.prepare()

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names)
        if self._writer is None:
            if self.fmt == "parquet":
                self._writer = pq.ParquetWriter(self.atomic.tmp, self.schema,
                                                compression="zstd")
            else:
                self._writer = pacsv.CSVWriter(self.atomic.tmp, self.schema)
        self._writer.write_table(table)

    def commit(self, checkpoint: Checkpoint) -> None:
        if self._writer is None:  # no customers: still an (empty) file with the schema
            self.write(self.schema.empty_table())
        self._writer.close()
        self._writer = None
        self.atomic.sync()
        checkpoint("before_commit")
        self.atomic.replace()
        checkpoint("after_commit")

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self.atomic.abort()


def _slug(value: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", value).strip("._") or "model"


def partition_file(root: Path, as_of: date, model_version: str) -> Path:
    """The file of one (as_of, model version) in a Parquet directory destination."""
    return Path(root) / f"as_of={as_of.isoformat()}" / f"scores-{_slug(model_version)}.parquet"


def sink_for(dest: Destination, *, as_of: date, model_version: str) -> Sink:
    if dest.kind == "parquet":
        return FileSink(Path(dest.target), "parquet")
    if dest.kind == "csv":
        return FileSink(Path(dest.target), "csv")
    if dest.kind == "parquet_dir":
        # Hive layout: as_of lives in the path, not in the file (readers add it back).
        schema = pa.schema([f for f in OUTPUT_SCHEMA if f.name != "as_of"])
        return FileSink(partition_file(Path(dest.target), as_of, model_version), "parquet",
                        schema)
    assert dest.table
    return PostgresSink(dest.target, dest.table, as_of=as_of, model_version=model_version)


class PostgresSink:
    """Upsert into a PostgreSQL table in one transaction (COPY into a staging table first)."""

    def __init__(self, url: str, table: str, *, as_of: date, model_version: str) -> None:
        from churnguard.features.sources import split_postgres_url

        self.dsn, _ = split_postgres_url(url)
        schema, _, name = table.rpartition(".")
        self.schema = schema or None
        self.name = name
        self.as_of = as_of
        self.model_version = model_version
        self._pg: Any = None
        self._exists = False
        self.n_rows = 0

    @property
    def qualified(self) -> str:
        return sql.qualified(*(p for p in (self.schema, self.name) if p), dialect="postgres")

    def prepare(self) -> None:
        import psycopg

        try:
            self._pg = psycopg.connect(self.dsn, autocommit=False)
        except psycopg.Error as exc:
            raise BatchInputError(f"cannot connect to PostgreSQL: {exc}".strip()) from None
        rows = self._pg.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND "
            "table_schema = coalesce(%s, current_schema())", [self.name, self.schema]).fetchall()
        self._pg.rollback()
        have = {r[0] for r in rows}
        self._exists = bool(have)
        if have and not set(OUTPUT_SCHEMA.names) <= have:
            missing = [c for c in OUTPUT_SCHEMA.names if c not in have]
            self.abort()
            raise BatchInputError(
                f"table {self.qualified} exists but lacks the score columns "
                f"{', '.join(missing)}; use another --table or add them")
        cols = ", ".join(
            sql.ident(f.name, "postgres") + " "
            + ("jsonb" if f.name in _JSON_COLUMNS else _PG_TYPES[f.type])
            + (" NOT NULL" if f.name in KEY else "") for f in OUTPUT_SCHEMA)
        key = ", ".join(KEY)
        # Inside the transaction: a run that fails or is killed creates nothing.
        self._pg.execute(f"CREATE TABLE IF NOT EXISTS {self.qualified} ({cols}, "
                         f"PRIMARY KEY ({key}))")
        stage_cols = ", ".join(sql.ident(f.name, "postgres") + " " + (
            "jsonb" if f.name in _JSON_COLUMNS else _PG_TYPES[f.type]) for f in OUTPUT_SCHEMA)
        self._pg.execute(f"CREATE TEMP TABLE _churnguard_stage ({stage_cols}) ON COMMIT DROP")
        if self._exists:
            # An upsert needs a unique index on the key; say so before scoring, not at the end.
            ok = self._pg.execute(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                "WHERE i.indisunique AND c.oid = %s::regclass AND "
                "(SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a "
                " WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) = %s",
                [self.qualified, sorted(KEY)]).fetchall()
            if not ok:
                self.abort()
                raise BatchInputError(f"table {self.qualified} has no unique key on "
                                      f"({key}); the upsert needs one")

    def write(self, table: pa.Table) -> None:
        buf = io.BytesIO()
        pacsv.write_csv(table.select(OUTPUT_SCHEMA.names), buf,
                        pacsv.WriteOptions(include_header=False))
        names = ", ".join(sql.ident(c, "postgres") for c in OUTPUT_SCHEMA.names)
        with self._pg.cursor() as cur, cur.copy(
                f"COPY _churnguard_stage ({names}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(buf.getvalue())
        self.n_rows += table.num_rows

    def commit(self, checkpoint: Checkpoint) -> None:
        names = ", ".join(sql.ident(c, "postgres") for c in OUTPUT_SCHEMA.names)
        updates = ", ".join(f"{sql.ident(c, 'postgres')} = EXCLUDED.{sql.ident(c, 'postgres')}"
                            for c in OUTPUT_SCHEMA.names
                            if c not in KEY)
        self._pg.execute(f"INSERT INTO {self.qualified} ({names}) SELECT {names} FROM "
                         f"_churnguard_stage ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
                         f"{updates}")
        # A re-run replaces the whole (as_of, model_version) slice: customers no longer scored
        # (e.g. removed from the source) go too.
        self._pg.execute(f"DELETE FROM {self.qualified} t WHERE t.as_of = %s AND "
                         "t.model_version = %s AND NOT EXISTS (SELECT 1 FROM _churnguard_stage "
                         "s WHERE s.customer_id = t.customer_id)",
                         [self.as_of, self.model_version])
        checkpoint("before_commit")
        self._pg.commit()
        checkpoint("after_commit")
        self._pg.close()
        self._pg = None

    def abort(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.rollback()
                self._pg.close()
            self._pg = None


# ---------------------------------------------------------------------------------------------
# Engines: feature chunks in, output tables out


@dataclass
class BatchSummary:
    destination: str
    as_of: date
    model_version: str
    engine: str
    n_scored: int = 0
    n_chunks: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    issues: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchJob:
    """What one run scores and how: the bundle, the cutoff, the version label written with
    every row, the chunk size, whether to compute drivers, and the one scoring time."""

    bundle: ScoringBundle
    as_of: date
    model_version: str
    chunk_size: int = 100_000
    drivers: bool = True
    scored_at: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise BatchInputError("--chunk-size must be at least 1")

    def score(self, features: pa.Table | pa.RecordBatch) -> pa.Table:
        return score_table(self.bundle, features, drivers=self.drivers, as_of=self.as_of,
                           model_version=self.model_version, scored_at=self.scored_at)


class Engine(Protocol):
    """Where features are built and chunks scored: :class:`DuckDBEngine` or
    :class:`SparkEngine`."""

    name: str

    def scored_chunks(self, job: BatchJob) -> tuple[int, Iterator[pa.Table]]:
        """How many customers will be scored, and their scores in :data:`OUTPUT_SCHEMA`
        chunks sorted by customer id. Contract errors are raised before this returns."""
        ...

    def not_yet_signed_up(self, as_of: date) -> int: ...

    def issues(self) -> list[DataIssue]: ...

    def close(self) -> None: ...


#: Input rows (transactions + events) per feature partition of the batch job: about what a
#: 1M-customer demo data set holds, which builds within DuckDB's default 1.5 GB memory limit.
PARTITION_ROWS = 60_000_000


class DuckDBEngine:
    """Features built by DuckDB from an open :class:`~churnguard.features.sources.Source`.

    Above ``partition_rows`` input rows the customers are split into hash partitions built one
    after the other (each a full feature build over its customers only), so memory stays flat
    however many customers there are; partition 0 is built before :meth:`scored_chunks`
    returns, so contract errors of the usual kind stop the job before anything is written."""

    name = "duckdb"
    TABLE = "_batch_features"

    def __init__(self, source: Source, *, partition_rows: int = PARTITION_ROWS) -> None:
        self.source = source
        self.partition_rows = partition_rows
        self._seen: dict[tuple[str, str], DataIssue] = {}

    def scored_chunks(self, job: BatchJob) -> tuple[int, Iterator[pa.Table]]:
        con, name = self.source.con, self.TABLE
        self._seen = {}
        n_rows = sum(int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0])
                     for t in ("transactions", "events"))
        parts = max(1, -(-n_rows // max(self.partition_rows, 1)))
        self._build(job, 0, parts)
        if parts == 1:
            total = int(con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0])
        else:
            total = int(con.execute("SELECT count(*) FROM customers WHERE signup_date < ?",
                                    [job.as_of]).fetchall()[0][0])

        def chunks() -> Iterator[pa.Table]:
            for k in range(parts):
                if k:
                    self._build(job, k, parts)
                # Sorted, so that a re-run writes the same rows in the same order.
                reader = con.sql(f"SELECT * FROM {name} ORDER BY customer_id").to_arrow_reader(
                    job.chunk_size)
                for batch in reader:
                    if batch.num_rows:
                        # Scoring the next chunk in a thread while this one's text is formatted
                        # was measured and gained nothing: XGBoost keeps both cores busy.
                        yield job.score(batch)
                con.execute(f"DROP TABLE IF EXISTS {name}")

        return total, chunks()

    def _build(self, job: BatchJob, k: int, parts: int) -> None:
        from churnguard.features.build import materialize_features

        source = self.source
        if parts == 1:
            materialize_features(source, job.bundle.spec, job.as_of, name=self.TABLE)
            return
        # Each partition reports its own rows left out (unknown customers, duplicates): add
        # them up, where Source.report keeps one count per kind.
        before = list(source.issues)
        source.issues.clear()
        materialize_features(source, job.bundle.spec, job.as_of, name=self.TABLE,
                             customer_filter=f"hash(customer_id) % {parts} = {k}")
        found = list(source.issues)
        source.issues[:] = before
        for issue in found:
            key = (issue.table, issue.kind)
            old = self._seen.get(key)
            self._seen[key] = issue if old is None else replace(
                old, n_rows=old.n_rows + issue.n_rows,
                examples=(*old.examples, *issue.examples)[:5])
            source.report(self._seen[key])

    def not_yet_signed_up(self, as_of: date) -> int:
        return int(self.source.con.execute(
            "SELECT count(*) FROM customers WHERE signup_date >= ?", [as_of]).fetchall()[0][0])

    def issues(self) -> list[DataIssue]:
        return self.source.issues

    def close(self) -> None:
        return None


def spark_scores(features: DataFrame, job: BatchJob) -> DataFrame:
    """Score a Spark DataFrame of features with the same bundle code (``mapInArrow``):
    the output has :data:`OUTPUT_SCHEMA` and the numbers of the DuckDB path."""
    from pyspark.sql.pandas.types import from_arrow_schema

    spark = features.sparkSession
    shared = spark.sparkContext.broadcast(job)

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # Spark runs one task per core: an XGBoost thread team per task would oversubscribe.
        task_job = shared.value
        task_job.bundle.set_threads(1)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            yield from task_job.score(batch).to_batches()

    return features.mapInArrow(score_batches, from_arrow_schema(OUTPUT_SCHEMA))


class SparkEngine:
    """Features built by Spark (the same feature SQL, transpiled), scored in Spark tasks
    (:func:`spark_scores`) into a local Parquet staging directory sorted by customer id, then
    streamed back in chunks for the destination's sink."""

    name = "spark"

    def __init__(self, source: SparkSource, *, staging_dir: Path | None = None) -> None:
        self.source = source
        self.staging_dir = staging_dir
        self._staging: Path | None = None

    def scored_chunks(self, job: BatchJob) -> tuple[int, Iterator[pa.Table]]:
        import tempfile

        import pyarrow.dataset as ds

        from churnguard.features.spark import spark_features

        self._staging = Path(tempfile.mkdtemp(prefix="churnguard-spark-", dir=self.staging_dir))
        feats = spark_features(self.source, job.bundle.spec, job.as_of)
        out = self._staging / "scores"
        spark_scores(feats, job).orderBy("customer_id").write.mode("overwrite").parquet(
            str(out))
        dataset = ds.dataset(sorted(str(p) for p in out.glob("part-*.parquet")),
                             format="parquet")

        def chunks() -> Iterator[pa.Table]:
            for batch in dataset.to_batches(batch_size=job.chunk_size):
                if batch.num_rows:
                    yield pa.Table.from_batches([batch]).cast(OUTPUT_SCHEMA)

        return int(dataset.count_rows()), chunks()

    def not_yet_signed_up(self, as_of: date) -> int:
        return int(self.source.spark.sql(
            f"SELECT count(*) FROM {self.source.view('customers')} "
            f"WHERE signup_date >= DATE '{as_of.isoformat()}'").collect()[0][0])

    def issues(self) -> list[DataIssue]:
        return self.source.issues

    def close(self) -> None:
        if self._staging is not None:
            import shutil

            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


def run_batch(job: BatchJob, engine: Engine, dest: Destination, *,
              progress: Progress | None = None, checkpoint: Checkpoint = _noop
              ) -> BatchSummary:
    """Score every customer signed up before ``job.as_of`` on ``engine`` and write the scores
    to ``dest``.

    The destination is checked (and a database connection opened) before any feature is built;
    contract violations raise :class:`~churnguard.features.sources.DataContractError` before
    anything is written. On any error the sink is rolled back: the previous output stays.
    """
    start = time.perf_counter()
    summary = BatchSummary(str(dest), job.as_of, job.model_version, engine.name)
    sink = sink_for(dest, as_of=job.as_of, model_version=job.model_version)
    sink.prepare()
    try:
        total, tables = engine.scored_chunks(job)
        later = engine.not_yet_signed_up(job.as_of)
        checkpoint("features")
        if progress:
            progress(0, total)
        for table in tables:
            sink.write(table)
            summary.n_scored += table.num_rows
            summary.n_chunks += 1
            if progress:
                progress(summary.n_scored, total)
            checkpoint(f"chunk:{summary.n_chunks}")
        if summary.n_scored != total:
            raise RuntimeError(f"scored {summary.n_scored} of {total} customers")
        sink.commit(checkpoint)
    except BaseException:
        sink.abort()
        raise
    finally:
        engine.close()
    if later:
        summary.skipped["signed up on or after the as-of date"] = later
    for issue in engine.issues():
        if issue.kind == "unknown_customer":  # reported once per feature partition
            key = f"{issue.table} rows for unknown customers"
            summary.skipped[key] = summary.skipped.get(key, 0) + issue.n_rows
        summary.issues.append(str(issue))
    summary.seconds = time.perf_counter() - start
    return summary


def fault_checkpoint(spec: str | None) -> Checkpoint:
    """A checkpoint that kills the process at a named point: ``POINT`` or ``POINT=raise``
    (e.g. ``chunk:2``, ``before_commit``). ``os._exit`` skips every cleanup, like SIGKILL."""
    if not spec:
        return _noop
    point, _, action = spec.partition("=")

    def hit(name: str) -> None:
        if name == point:
            if action == "raise":
                raise RuntimeError(f"injected fault at {name}")
            os._exit(86)

    return hit
