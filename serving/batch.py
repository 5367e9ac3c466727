"""The production batch job behind ``churnguard score``: every customer scored, never half-written.

Flow: features as of the cutoff (DuckDB, or Spark with the same feature SQL) → chunks of
``chunk_size`` customers → :func:`score_table` (the one scoring path, into one fixed
Arrow schema for every engine and destination) → a :class:`Sink`.

Atomic and idempotent:

- files (Parquet, CSV) are streamed to a hidden temporary name beside the target and renamed
  onto it only after the last chunk (``os.replace``); temporaries left by a killed run are
  removed by the next one;
- a Parquet *directory* is partitioned by ``as_of``: each partition holds exactly one file,
  ``as_of=<date>/scores.parquet`` (:func:`partition_file`), with the ``model_version`` of the
  run as a column. The newest run of a cutoff replaces it in the same way (one ``os.replace``),
  so a reader of the directory sees the previous run's partition or the new one, never both
  and never neither, whatever model version scored either;
- PostgreSQL: every chunk is COPYed into a temporary staging table and one transaction upserts
  it on (customer_id, as_of, model_version) and deletes the rows of that key the run no longer
  produces; a re-run replaces, never duplicates, and a killed run commits nothing. The table is
  created (or given the columns added since, :data:`ADDED_COLUMNS`) in that same transaction,
  under a transaction-level advisory lock on the table's name, so concurrent first runs wait
  for each other instead of failing.

Bad destinations are refused by :func:`check_destination` before any model is loaded or any
feature built; it creates nothing. The Spark engine stages its scores in a private (0700)
temporary directory named after its host and process, and removes the ones of killed runs.

``checkpoint`` is called at named points (``features``, ``chunk:<i>``, ``before_commit``,
``after_commit``) so fault tests can kill the job there (the CLI wires it to an env var).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import socket
import tempfile
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
from churnguard.features.io import AtomicPath, _pid_alive
from churnguard.features.sources import DataIssue, Source
from churnguard.model.bundle import ScoringBundle
from churnguard.model.score import FullScores, score_matrix
from churnguard.serving.predlog import BatchLog

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

    from churnguard.features.spark import SparkSource

log = logging.getLogger(__name__)
Checkpoint = Callable[[str], None]
Progress = Callable[[int, int], None]
DestKind = Literal["parquet", "parquet_dir", "csv", "postgres"]

#: One schema for every engine and destination; drivers and actions are JSON text.
#: ``horizon_days`` is the window ``churn_probability`` is about and ``clv_horizon_days`` the
#: one ``clv`` is about (the bundle's, as the API reports them: README, "Batch scoring");
#: ``clv_low`` / ``clv_high`` the CLV's 80 % prediction interval (null for a bundle trained
#: before intervals).
OUTPUT_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("as_of", pa.date32()),
    ("churn_probability", pa.float64()),
    ("horizon_days", pa.int32()),
    ("risk_tier", pa.string()),
    ("clv", pa.float64()),
    ("clv_horizon_days", pa.int32()),
    ("clv_low", pa.float64()),
    ("clv_high", pa.float64()),
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
#: Columns added to :data:`OUTPUT_SCHEMA` after tables were first created: a PostgreSQL table
#: that lacks only these gets them (``ALTER TABLE … ADD COLUMN``, null in the rows already
#: there) in the run's transaction; a table lacking any other score column is refused.
ADDED_COLUMNS = ("horizon_days", "clv_horizon_days", "clv_low", "clv_high")
_PG_TYPES = {pa.string(): "text", pa.date32(): "date", pa.float64(): "double precision",
             pa.int32(): "integer", pa.timestamp("us", tz="UTC"): "timestamptz",
             pa.bool_(): "boolean"}
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
                   scored_at=scored_at, horizons=(bundle.horizon_days, bundle.clv_horizon_days))


def _output(features: pa.Table | pa.RecordBatch, full: FullScores, *, drivers: bool,
            as_of: date, model_version: str, scored_at: datetime,
            horizons: tuple[int, int]) -> pa.Table:
    n = features.num_rows
    a = full.assessment
    recs = a.recommendations(full.policy)
    action_ids = np.asarray([act.id for act in full.policy.actions], dtype=object)
    arrays: dict[str, Any] = {
        "customer_id": pc.cast(features.column("customer_id"), pa.string()),
        "as_of": pa.repeat(pa.scalar(as_of, pa.date32()), n),
        "churn_probability": full.churn_probability,
        "horizon_days": pa.repeat(pa.scalar(horizons[0], pa.int32()), n),
        "risk_tier": a.risk_tier,
        "clv": full.clv,
        "clv_horizon_days": pa.repeat(pa.scalar(horizons[1], pa.int32()), n),
        # Null (not NaN) for a bundle trained before intervals: a CRM reads "unknown".
        "clv_low": full.clv_low,
        "clv_high": full.clv_high,
        "value_tier": a.value_tier,
        "lifecycle_stage": a.lifecycle_stage,
        "recommended_action": action_ids[recs.first()],
        "drivers": full.drivers_json() if drivers else None,
        "actions": recs.text,
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


#: The one file of each ``as_of=<date>`` partition of a Parquet directory destination.
PARTITION_FILE = "scores.parquet"
#: Files of the earlier layout (one per model version in a partition), removed from a partition
#: once the new run's file is in place.
_LEGACY_PARTITION_FILES = "scores-*.parquet"


def partition_file(root: Path, as_of: date) -> Path:
    """The file of cutoff ``as_of`` in a Parquet directory destination (Hive layout: ``as_of``
    lives in the path, ``model_version`` in the file)."""
    return Path(root) / f"as_of={as_of.isoformat()}" / PARTITION_FILE


class PartitionSink(FileSink):
    """One ``as_of`` partition of a Parquet directory: its one file replaced atomically."""

    def __init__(self, root: Path, as_of: date) -> None:
        super().__init__(partition_file(root, as_of), "parquet",
                         pa.schema([f for f in OUTPUT_SCHEMA if f.name != "as_of"]))

    def commit(self, checkpoint: Checkpoint) -> None:
        super().commit(checkpoint)
        # A partition written by an earlier churnguard held one file per model version; the
        # new file now stands for the whole partition, so those go (readers skip the hidden
        # temporaries, not these).
        for legacy in self.target.parent.glob(_LEGACY_PARTITION_FILES):
            log.info("removing %s (earlier layout: one file per model version)", legacy)
            legacy.unlink(missing_ok=True)


def check_destination(dest: Destination) -> None:
    """Raise :class:`BatchInputError` if scores could not be written to ``dest``: a path whose
    nearest existing folder is not a writable directory, a PostgreSQL server that does not
    answer or a table of another shape. Creates nothing, so a command can check its
    destination before it loads a model or builds a feature."""
    if dest.kind == "postgres":
        assert dest.table
        schema, _, name = dest.table.rpartition(".")
        con = _pg_connect(dest.target)
        try:
            _pg_existing_columns(con, schema or None, name, sql.qualified(
                *(p for p in (schema, name) if p), dialect="postgres"))
        finally:
            con.close()
        return
    target = Path(dest.target)
    if dest.kind == "parquet_dir" and target.exists() and not target.is_dir():
        raise BatchInputError(f"{target} exists and is not a directory")
    folder = target if dest.kind == "parquet_dir" else target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise BatchInputError(f"{folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BatchInputError(f"cannot write to {folder}")


def sink_for(dest: Destination, *, as_of: date, model_version: str) -> Sink:
    if dest.kind == "parquet":
        return FileSink(Path(dest.target), "parquet")
    if dest.kind == "csv":
        return FileSink(Path(dest.target), "csv")
    if dest.kind == "parquet_dir":
        return PartitionSink(Path(dest.target), as_of)
    assert dest.table
    return PostgresSink(dest.target, dest.table, as_of=as_of, model_version=model_version)


def _pg_connect(url: str, *, connect_timeout: int | None = None) -> Any:
    """A connection (not in autocommit) to ``url``, or :class:`BatchInputError`;
    ``connect_timeout`` in seconds (default: libpq's, which may wait minutes on a host that
    does not answer)."""
    import psycopg

    from churnguard.features.sources import split_postgres_url

    dsn, _ = split_postgres_url(url)
    options: dict[str, Any] = {}
    if connect_timeout is not None:
        options["connect_timeout"] = connect_timeout
    try:
        return psycopg.connect(dsn, autocommit=False, **options)
    except psycopg.Error as exc:
        raise BatchInputError(f"cannot connect to PostgreSQL: {exc}".strip()) from None


def _pg_existing_columns(con: Any, schema: str | None, name: str, qualified: str) -> set[str]:
    """The columns of the destination table (empty if it does not exist yet), or
    :class:`BatchInputError` if it lacks score columns other than :data:`ADDED_COLUMNS`, or if
    it has no unique key on :data:`KEY` (an upsert needs one). Ends the transaction it reads in.
    """
    try:
        have = _pg_columns(con, schema, name)
        if not have:
            return have
        missing = [c for c in OUTPUT_SCHEMA.names if c not in have and c not in ADDED_COLUMNS]
        if missing:
            raise BatchInputError(
                f"table {qualified} exists but lacks the score columns "
                f"{', '.join(missing)}; use another --table or add them")
        ok = con.execute(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "WHERE i.indisunique AND c.oid = %s::regclass AND "
            "(SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a "
            " WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) = %s",
            [qualified, sorted(KEY)]).fetchall()
        if not ok:
            raise BatchInputError(f"table {qualified} has no unique key on "
                                  f"({', '.join(KEY)}); the upsert needs one")
        return have
    finally:
        con.rollback()


def _pg_columns(con: Any, schema: str | None, name: str) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND "
        "table_schema = coalesce(%s, current_schema())", [name, schema]).fetchall()}


def _pg_type(f: pa.Field) -> str:
    return "jsonb" if f.name in _JSON_COLUMNS else _PG_TYPES[f.type]


def _pg_discard(conn: Any) -> None:
    """Roll back and close a connection being given up on (its errors no longer matter)."""
    with contextlib.suppress(Exception):
        conn.rollback()
        conn.close()


def _pg_copy(con: Any, qualified: str, table: pa.Table) -> None:
    """COPY ``table``'s rows into the table ``qualified`` (its columns by name) as CSV: null
    is an unquoted empty field, text is quoted, so an empty string stays an empty string."""
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
    names = ", ".join(sql.ident(c, "postgres") for c in table.column_names)
    with con.cursor() as cur, cur.copy(
            f"COPY {qualified} ({names}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buf.getvalue())


def _pg_xact_lock(con: Any, kind: str, schema: str | None, name: str) -> None:
    """Wait for the other writers of table ``schema.name`` (default: the current schema) that
    create or change it: a transaction-level advisory lock on ``kind`` and the name, released
    at commit or rollback. Without it two first runs both create the table and the second
    fails on a unique violation of the catalog, ``IF NOT EXISTS`` or not."""
    con.execute("SELECT pg_advisory_xact_lock(hashtextextended("
                "%s || ':' || coalesce(%s, current_schema()) || '.' || %s, 0))",
                [kind, schema, name])


class PostgresSink:
    """Upsert into a PostgreSQL table in one transaction (COPY into a staging table first)."""

    def __init__(self, url: str, table: str, *, as_of: date, model_version: str) -> None:
        self.url = url
        schema, _, name = table.rpartition(".")
        self.schema = schema or None
        self.name = name
        self.as_of = as_of
        self.model_version = model_version
        self._pg: Any = None
        self.n_rows = 0

    @property
    def qualified(self) -> str:
        return sql.qualified(*(p for p in (self.schema, self.name) if p), dialect="postgres")

    def prepare(self) -> None:
        self._pg = _pg_connect(self.url)
        try:
            # Checked before scoring (a table of another shape fails now, not at the end), and
            # again under the lock at commit, where the table is created or given new columns.
            _pg_existing_columns(self._pg, self.schema, self.name, self.qualified)
        except BatchInputError:
            self.abort()
            raise
        stage_cols = ", ".join(f"{sql.ident(f.name, 'postgres')} {_pg_type(f)}"
                               for f in OUTPUT_SCHEMA)
        self._pg.execute(f"CREATE TEMP TABLE _churnguard_stage ({stage_cols}) ON COMMIT DROP")

    def _create_or_extend(self) -> None:
        """Inside the commit's transaction: wait for any other run writing this table (an
        advisory lock on its schema-qualified name, released at commit or rollback), then create
        it, or add the columns it lacks among :data:`ADDED_COLUMNS`. Without the lock two first
        runs both create the table and the second fails on a unique violation of the catalog."""
        _pg_xact_lock(self._pg, "churnguard.scores", self.schema, self.name)
        have = _pg_columns(self._pg, self.schema, self.name)
        if not have:
            cols = ", ".join(f"{sql.ident(f.name, 'postgres')} {_pg_type(f)}"
                             + (" NOT NULL" if f.name in KEY else "") for f in OUTPUT_SCHEMA)
            self._pg.execute(f"CREATE TABLE {self.qualified} ({cols}, "
                             f"PRIMARY KEY ({', '.join(KEY)}))")
            return
        missing = [f for f in OUTPUT_SCHEMA if f.name not in have]
        if any(f.name not in ADDED_COLUMNS for f in missing):
            raise BatchInputError(f"table {self.qualified} changed while scoring: it lacks "
                                  f"{', '.join(f.name for f in missing)}")
        if missing:
            log.warning("adding columns %s to %s (rows already there get null)",
                        ", ".join(f.name for f in missing), self.qualified)
            self._pg.execute(f"ALTER TABLE {self.qualified} " + ", ".join(
                f"ADD COLUMN IF NOT EXISTS {sql.ident(f.name, 'postgres')} {_pg_type(f)}"
                for f in missing))

    def write(self, table: pa.Table) -> None:
        _pg_copy(self._pg, "_churnguard_stage", table.select(OUTPUT_SCHEMA.names))
        self.n_rows += table.num_rows

    def commit(self, checkpoint: Checkpoint) -> None:
        self._create_or_extend()
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
            _pg_discard(self._pg)
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


#: Spark staging directories are named ``<prefix><host>-<pid>-<random>``.
STAGING_PREFIX = "churnguard-spark-"


def _staging_owner() -> str:
    host = re.sub(r"[^0-9A-Za-z_.]+", "_", socket.gethostname()) or "host"
    return f"{STAGING_PREFIX}{host}-{os.getpid()}-"


def remove_stale_staging(parent: Path | None = None) -> list[Path]:
    """Remove the Spark staging directories under ``parent`` (default: the temporary
    directory) left by killed runs on this host: those whose process is gone. They hold every
    customer's scores. Directories of other hosts (a shared ``staging_dir``) and of live
    processes are kept. Returns what was removed."""
    root = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    mine = _staging_owner().rsplit("-", 2)[0]
    removed = []
    for path in root.glob(f"{STAGING_PREFIX}*"):
        owner, _, rest = path.name.rpartition("-")[0].rpartition("-")
        if owner != mine or not rest.isdigit() or not path.is_dir():
            continue
        pid = int(rest)
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %d staging director%s of killed Spark runs under %s", len(removed),
                 "y" if len(removed) == 1 else "ies", root)
    return removed


class SparkEngine:
    """Features built by Spark (the same feature SQL, transpiled), scored in Spark tasks
    (:func:`spark_scores`) into a local Parquet staging directory sorted by customer id, then
    streamed back in chunks for the destination's sink.

    The staging directory (under ``staging_dir``, default the temporary directory) is private
    to the user (0700, it holds every score), named after the host and process, removed by
    :meth:`close`, and by the next run (:func:`remove_stale_staging`) when the job was killed.
    """

    name = "spark"

    def __init__(self, source: SparkSource, *, staging_dir: Path | None = None) -> None:
        self.source = source
        self.staging_dir = staging_dir
        self._staging: Path | None = None

    def scored_chunks(self, job: BatchJob) -> tuple[int, Iterator[pa.Table]]:
        import pyarrow.dataset as ds

        from churnguard.features.spark import spark_features

        remove_stale_staging(self.staging_dir)
        # 0700 is mkdtemp's mode, made explicit: the directory holds every customer's scores.
        self._staging = Path(tempfile.mkdtemp(prefix=_staging_owner(), dir=self.staging_dir))
        os.chmod(self._staging, 0o700)
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
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


def run_batch(job: BatchJob, engine: Engine, dest: Destination, *,
              progress: Progress | None = None, checkpoint: Checkpoint = _noop,
              prediction_log: BatchLog | None = None) -> BatchSummary:
    """Score every customer signed up before ``job.as_of`` on ``engine`` and write the scores
    to ``dest``, and with ``prediction_log`` the run's rows of the prediction log (committed
    after the scores; rolled back with them).

    The destination is checked (and a database connection opened) before any feature is built;
    contract violations raise :class:`~churnguard.features.sources.DataContractError` before
    anything is written. On any error the sink is rolled back: the previous output stays.
    """
    start = time.perf_counter()
    summary = BatchSummary(str(dest), job.as_of, job.model_version, engine.name)
    sink = sink_for(dest, as_of=job.as_of, model_version=job.model_version)
    sink.prepare()
    if prediction_log is not None:
        try:
            prediction_log.prepare()
        except BaseException:  # e.g. the log's database is down: nothing written, nothing held
            sink.abort()
            raise
    try:
        total, tables = engine.scored_chunks(job)
        later = engine.not_yet_signed_up(job.as_of)
        checkpoint("features")
        if progress:
            progress(0, total)
        for table in tables:
            sink.write(table)
            if prediction_log is not None:
                prediction_log.write(table)
            summary.n_scored += table.num_rows
            summary.n_chunks += 1
            if progress:
                progress(summary.n_scored, total)
            checkpoint(f"chunk:{summary.n_chunks}")
        if summary.n_scored != total:
            raise RuntimeError(f"scored {summary.n_scored} of {total} customers")
        sink.commit(checkpoint)
        if prediction_log is not None:
            prediction_log.commit()
    except BaseException:
        sink.abort()
        if prediction_log is not None:
            prediction_log.abort()
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
