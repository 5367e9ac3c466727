"""The prediction log: what churnguard scored, for whom, with which model (README, "Prediction
log").

Every ``churnguard score`` run and every API score is recorded as one row per customer in
:data:`LOG_SCHEMA`, so that what was predicted can later be measured against what happened.
Where it goes is :func:`prediction_log_location` of the settings: a Parquet dataset under
``prediction_log_path``, or with ``prediction_log_url`` set a PostgreSQL table
(:class:`PostgresLog`). The Parquet dataset is partitioned by scoring date (Hive layout,
``date=YYYY-MM-DD``: the as-of date of a batch run, the UTC day of an API request):

- a batch run (:func:`batch_log_sink`) writes ``date=<as_of>/batch-<model name>-v<version>
  .parquet``, replaced atomically when the same model version scores the same as-of date
  again, so a re-run never duplicates rows (:class:`BatchLogSink`, committed after the scores
  themselves); in PostgreSQL (:class:`PostgresBatchLogSink`) one transaction deletes the rows
  of that run's (as-of date, model name, model version) and inserts the new ones;
- the API (scores and campaign plans) hands its rows to :class:`ApiPredictionLog`: a bounded
  queue a background thread writes every few seconds, as ``date=<day>/api-<pid>-<n>.parquet``
  or one transaction per flush into the table. A request never waits for the log, and never
  fails because of it: rows that do not fit in the queue, or whose write fails (a database
  that is down: the next flush reconnects), are counted as dropped
  (``churnguard_prediction_log_dropped_rows_total``).

:func:`read_prediction_log` reads either back (one table, ``date`` as a column).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from churnguard.features import sql
from churnguard.features.io import AtomicPath

if TYPE_CHECKING:  # pragma: no cover
    from churnguard.config import Settings

log = logging.getLogger(__name__)

#: One row per scored customer. ``scored_as_of``: the batch run's as-of date (its features
#: are from rows before it), or for the API the UTC day of the request; ``top_action``: the
#: first recommended action (null: none worth its cost); ``holdout``: whether the customer
#: was held out of the recommendation (null: the scoring assigned no hold-out).
LOG_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("scored_as_of", pa.date32()),
    ("scored_at", pa.timestamp("us", tz="UTC")),
    ("channel", pa.string()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("churn_probability", pa.float64()),
    ("clv", pa.float64()),
    ("risk_tier", pa.string()),
    ("top_action", pa.string()),
    ("holdout", pa.bool_()),
    ("value_tier", pa.string()),
    ("lifecycle_stage", pa.string()),
])


#: The table of a PostgreSQL prediction log unless ``prediction_log_table`` says otherwise.
DEFAULT_TABLE = "churnguard_prediction_log"
#: Seconds the API's log waits for its database to answer a connection: a host that is down
#: costs a flush this long at most, never a request.
CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class PostgresLog:
    """The prediction log as a PostgreSQL table: ``table`` (``name`` or ``schema.name``; an
    unqualified name is in the connection's current schema) of the database at ``url``. The
    URL may hold a password: it is neither shown (``repr``, ``str``) nor logged."""

    url: str = field(repr=False)
    table: str = DEFAULT_TABLE

    @property
    def schema(self) -> str | None:
        return self.table.rpartition(".")[0] or None

    @property
    def name(self) -> str:
        return self.table.rpartition(".")[2]

    @property
    def qualified(self) -> str:
        return sql.qualified(*(p for p in (self.schema, self.name) if p), dialect="postgres")

    def __str__(self) -> str:
        return f"PostgreSQL table {self.table}"


#: Where the prediction log is: a Parquet dataset's folder, or a PostgreSQL table.
LogLocation: TypeAlias = Path | PostgresLog


def prediction_log_location(settings: Settings) -> LogLocation:
    """The settings' prediction log: the table ``prediction_log_table`` of
    ``prediction_log_url`` when that is set, else the folder ``prediction_log_path``. The one
    place that decides, for ``churnguard score``, the API and ``churnguard monitor`` alike."""
    if settings.prediction_log_url:
        return PostgresLog(settings.prediction_log_url, settings.prediction_log_table)
    return settings.prediction_log_path


def model_name_of(uri: str, default: str) -> str:
    """The registered model name in a ``models:/NAME/...`` or ``models:/NAME@alias`` URI; for a
    bundle directory, its folder name; ``default`` if neither gives one."""
    if uri.startswith("models:/"):
        name = uri.removeprefix("models:/").split("/")[0].split("@")[0]
        return name or default
    return Path(uri).name or default


def _safe(text: str) -> str:
    """``text`` as one file-name part (a version may be a path: ``local:/…``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[-120:]


def _partition(root: Path, day: date) -> Path:
    return Path(root) / f"date={day.isoformat()}"


def log_rows(scores: pa.Table, *, model_name: str, channel: str) -> pa.Table:
    """The log rows of a batch output chunk (``serving.batch.OUTPUT_SCHEMA`` columns)."""
    n = scores.num_rows
    return pa.Table.from_arrays([
        pc.cast(scores.column("customer_id"), pa.string()),
        pc.cast(scores.column("as_of"), pa.date32()),
        pc.cast(scores.column("scored_at"), pa.timestamp("us", tz="UTC")),
        pa.repeat(pa.scalar(channel, pa.string()), n),
        pa.repeat(pa.scalar(model_name, pa.string()), n),
        pc.cast(scores.column("model_version"), pa.string()),
        pc.cast(scores.column("churn_probability"), pa.float64()),
        pc.cast(scores.column("clv"), pa.float64()),
        pc.cast(scores.column("risk_tier"), pa.string()),
        pc.cast(scores.column("recommended_action"), pa.string()),
        pa.nulls(n, pa.bool_()),
        pc.cast(scores.column("value_tier"), pa.string()),
        pc.cast(scores.column("lifecycle_stage"), pa.string()),
    ], schema=LOG_SCHEMA)


class BatchLog(Protocol):
    """The prediction log of one batch run (:func:`batch_log_sink`): prepared before scoring,
    written chunk by chunk, committed after the scores, or aborted (the previous run's rows of
    the same model version and as-of date stay)."""

    rows: int

    @property
    def where(self) -> str:
        """Where the rows go, to show (never a password)."""
        ...

    def prepare(self) -> None: ...
    def write(self, scores: pa.Table) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


def batch_log_sink(location: LogLocation, *, as_of: date, model_name: str,
                   model_version: str) -> BatchLog:
    """The prediction log sink of a batch run at ``location``: a Parquet file of the as-of
    partition (:class:`BatchLogSink`) or a PostgreSQL transaction (:class:`PostgresBatchLogSink`).
    """
    if isinstance(location, PostgresLog):
        return PostgresBatchLogSink(location, as_of=as_of, model_name=model_name,
                                    model_version=model_version)
    return BatchLogSink(location, as_of=as_of, model_name=model_name,
                        model_version=model_version)


class BatchLogSink:
    """The prediction log of one batch run: its file of the as-of partition, streamed to a
    temporary and renamed onto the previous run's file of the same model version."""

    def __init__(self, root: Path, *, as_of: date, model_name: str, model_version: str) -> None:
        self.target = (_partition(root, as_of)
                       / f"batch-{_safe(model_name)}-v{_safe(model_version)}.parquet")
        self.model_name = model_name
        self.atomic = AtomicPath(self.target)
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    @property
    def where(self) -> str:
        return str(self.target)

    def prepare(self) -> None:
        self.atomic.prepare()

    def write(self, scores: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.atomic.tmp, LOG_SCHEMA, compression="zstd")
        self._writer.write_table(log_rows(scores, model_name=self.model_name, channel="batch"))
        self.rows += scores.num_rows

    def commit(self) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.atomic.tmp, LOG_SCHEMA, compression="zstd")
        self._writer.close()
        self._writer = None
        self.atomic.sync()
        self.atomic.replace()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
        self.atomic.abort()


# ---------------------------------------------------------------------------------------------
# PostgreSQL: the table, its batch sink and the API's writer (serving.batch's helpers)


def _pg_missing_columns(con: Any, location: PostgresLog) -> list[str] | None:
    """The :data:`LOG_SCHEMA` columns the table lacks; None if there is no table."""
    from churnguard.serving.batch import _pg_columns

    have = _pg_columns(con, location.schema, location.name)
    if not have:
        return None
    return [c for c in LOG_SCHEMA.names if c not in have]


def _pg_refuse_other_shapes(con: Any, location: PostgresLog) -> None:
    from churnguard.serving.batch import BatchInputError

    missing = _pg_missing_columns(con, location)
    if missing:
        raise BatchInputError(
            f"table {location.qualified} exists but lacks the prediction-log columns "
            f"{', '.join(missing)}; set CHURNGUARD_PREDICTION_LOG_TABLE to another table")


def _pg_create_table(con: Any, location: PostgresLog) -> None:
    """In the caller's transaction, under the table's advisory lock (held to its end): create
    the table (and its index on a run's key) unless it exists, or refuse one of another shape.
    """
    from churnguard.serving.batch import _pg_type, _pg_xact_lock

    _pg_xact_lock(con, "churnguard.prediction_log", location.schema, location.name)
    if _pg_missing_columns(con, location) is None:
        cols = ", ".join(f"{sql.ident(f.name, 'postgres')} {_pg_type(f)}" for f in LOG_SCHEMA)
        index = sql.ident(f"{location.name[:50]}_run_idx", "postgres")
        con.execute(f"CREATE TABLE IF NOT EXISTS {location.qualified} ({cols})")
        con.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {location.qualified} "
                    "(scored_as_of, model_version, channel)")
    else:
        _pg_refuse_other_shapes(con, location)


class PostgresBatchLogSink:
    """The prediction log of one batch run in a PostgreSQL table, one transaction from
    :meth:`prepare` to :meth:`commit`: the chunks are COPYed into a temporary table, then the
    table is created if missing, the rows of the run's (as-of date, model name, model version)
    of the ``batch`` channel deleted and the new ones inserted. :meth:`abort` rolls it all back.
    """

    STAGE = "_churnguard_log_stage"

    def __init__(self, location: PostgresLog, *, as_of: date, model_name: str,
                 model_version: str) -> None:
        self.location = location
        self.as_of = as_of
        self.model_name = model_name
        self.model_version = model_version
        self._pg: Any = None
        self.rows = 0

    @property
    def where(self) -> str:
        return str(self.location)

    def prepare(self) -> None:
        """Connect, refuse a table of another shape, and start the transaction (creating
        nothing but the temporary table): before any feature is built."""
        from churnguard.serving.batch import BatchInputError, _pg_connect, _pg_type

        self._pg = _pg_connect(self.location.url)
        try:
            try:
                _pg_refuse_other_shapes(self._pg, self.location)
            finally:
                self._pg.rollback()
            cols = ", ".join(f"{sql.ident(f.name, 'postgres')} {_pg_type(f)}"
                             for f in LOG_SCHEMA)
            self._pg.execute(f"CREATE TEMP TABLE {self.STAGE} ({cols}) ON COMMIT DROP")
        except BatchInputError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise BatchInputError(f"prediction log: {exc}".strip()) from None

    def write(self, scores: pa.Table) -> None:
        from churnguard.serving.batch import _pg_copy

        _pg_copy(self._pg, self.STAGE,
                 log_rows(scores, model_name=self.model_name, channel="batch"))
        self.rows += scores.num_rows

    def commit(self) -> None:
        _pg_create_table(self._pg, self.location)
        names = ", ".join(sql.ident(c, "postgres") for c in LOG_SCHEMA.names)
        self._pg.execute(f"DELETE FROM {self.location.qualified} WHERE scored_as_of = %s AND "
                         "model_version = %s AND channel = 'batch' AND model_name = %s",
                         [self.as_of, self.model_version, self.model_name])
        self._pg.execute(f"INSERT INTO {self.location.qualified} ({names}) "
                         f"SELECT {names} FROM {self.STAGE}")
        self._pg.commit()
        self._pg.close()
        self._pg = None

    def abort(self) -> None:
        if self._pg is not None:
            from churnguard.serving.batch import _pg_discard

            _pg_discard(self._pg)
            self._pg = None


class _RowWriter(Protocol):
    """What :class:`ApiPredictionLog` writes its queued rows with: :meth:`write` returns how
    many of ``rows`` it wrote (the rest are dropped) or raises (all of them are)."""

    def write(self, rows: pa.Table) -> int: ...
    def close(self) -> None: ...


class _ParquetRows:
    """One file per day of the rows, ``date=<day>/api-<pid>-<n>.parquet``, each written to a
    temporary and renamed: a day whose file cannot be written is dropped, the others stay."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._files = itertools.count()

    def write(self, rows: pa.Table) -> int:
        written = 0
        for day in pc.unique(rows.column("scored_as_of")).to_pylist():
            part = rows.filter(pc.equal(rows.column("scored_as_of"),
                                        pa.scalar(day, pa.date32())))
            target = _partition(self.root, day) / f"api-{os.getpid()}-{next(self._files)}.parquet"
            try:
                atomic = AtomicPath(target)
                atomic.prepare()
                pq.write_table(part, atomic.tmp, compression="zstd")
                atomic.replace()
            except OSError as exc:
                log.warning("prediction log: %d rows not written to %s (%s)", part.num_rows,
                            target, exc)
                continue
            written += part.num_rows
        return written

    def close(self) -> None:
        return None


class _PostgresRows:
    """One transaction per flush: COPY the rows into the table (created on the first flush of
    a connection). A failure rolls back and closes the connection; the next flush reconnects."""

    def __init__(self, location: PostgresLog) -> None:
        self.location = location
        self._pg: Any = None
        self._ready = False

    def write(self, rows: pa.Table) -> int:
        from churnguard.serving.batch import _pg_connect, _pg_copy

        try:
            if self._pg is None:
                self._pg = _pg_connect(self.location.url, connect_timeout=CONNECT_TIMEOUT)
                self._ready = False
            if not self._ready:
                _pg_create_table(self._pg, self.location)
            _pg_copy(self._pg, self.location.qualified, rows)
            self._pg.commit()
            self._ready = True
        except Exception:
            self.close()
            raise
        return rows.num_rows

    def close(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.rollback()
                self._pg.close()
            self._pg = None


@dataclass(frozen=True)
class _Pending:
    """One request's rows as :meth:`ApiPredictionLog.submit` got them, waiting for a flush."""

    ids: Sequence[str]
    scored_at: datetime
    channel: str
    model_version: str
    churn_probability: np.ndarray
    clv: np.ndarray
    risk_tier: Sequence[str]
    top_action: Sequence[str | None]
    value_tier: Sequence[str] | None
    lifecycle_stage: Sequence[str] | None


class ApiPredictionLog:
    """The API's prediction log at ``location`` (a folder, or a :class:`PostgresLog`):
    :meth:`submit` queues a request's rows without waiting; a daemon thread writes what is
    queued every ``flush_seconds`` (and on :meth:`close`).

    At most ``max_rows`` rows wait in the queue: a request whose rows do not fit is dropped
    from the log (not from the response) and counted by ``on_dropped``; so are rows whose
    write fails (logged once per failure). ``on_written`` counts the rows written. Only the
    writing step differs between Parquet and PostgreSQL.
    """

    def __init__(self, location: LogLocation, *, model_name: str, max_rows: int = 100_000,
                 flush_seconds: float = 2.0,
                 on_written: Callable[[int], None] = lambda n: None,
                 on_dropped: Callable[[int], None] = lambda n: None) -> None:
        self.location = location
        self._writer: _RowWriter = (_PostgresRows(location) if isinstance(location, PostgresLog)
                                    else _ParquetRows(location))
        self.model_name = model_name
        self.max_rows = max_rows
        self.flush_seconds = flush_seconds
        self._on_written, self._on_dropped = on_written, on_dropped
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._queued = 0
        self._lock = threading.Lock()
        # One flush at a time: the thread's, or close()'s after it (one connection, one file
        # counter).
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, ids: Sequence[str], model_version: str, churn_probability: np.ndarray,
               clv: np.ndarray, risk_tier: Sequence[str], top_action: Sequence[str | None],
               *, value_tier: Sequence[str] | None = None,
               lifecycle_stage: Sequence[str] | None = None, channel: str = "api",
               scored_at: datetime | None = None) -> bool:
        """Queue one request's scored customers (``channel``: ``api`` for scores, ``plan`` for
        a campaign plan, whose ``top_action`` is the assigned action); False (and counted as
        dropped) if the queue is full. The arguments are kept as they are until the next flush
        converts them: pass values nothing changes afterwards."""
        n = len(ids)
        if n == 0:
            return True
        with self._lock:
            if self._queued + n > self.max_rows or self._stop.is_set():
                self._on_dropped(n)
                return False
            self._queued += n
        # Plain references, no conversion: a request pays for a queue put, and the flush
        # builds one Arrow table from everything queued (_table).
        self._queue.put(_Pending(ids, scored_at or datetime.now(UTC), channel, model_version,
                                 churn_probability, clv, risk_tier, top_action, value_tier,
                                 lifecycle_stage))
        return True

    def flush(self) -> int:
        """Write every queued row now; the rows written (the others are counted as dropped)."""
        with self._flushing:
            pending: list[_Pending] = []
            while True:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not pending:
                return 0
            with self._lock:
                self._queued -= sum(len(p.ids) for p in pending)
            try:
                rows = self._table(pending)
                written = self._writer.write(rows)
            except Exception as exc:
                log.warning("prediction log: %d rows not written to %s (%s)",
                            sum(len(p.ids) for p in pending), self.location, exc)
                written = 0
        n = sum(len(p.ids) for p in pending)
        if written < n:
            self._on_dropped(n - written)
        if written:
            self._on_written(written)
        return written

    def _table(self, pending: list[_Pending]) -> pa.Table:
        """One :data:`LOG_SCHEMA` table of the queued requests, in the order they came."""
        counts = [len(p.ids) for p in pending]

        def each(values: Callable[[_Pending], Any]) -> list[Any]:
            """A per-request value repeated for each of its rows."""
            out: list[Any] = []
            for p, n in zip(pending, counts, strict=True):
                out += [values(p)] * n
            return out

        def column(values: Callable[[_Pending], Sequence[Any] | None]) -> list[Any]:
            """A per-row column (None: null for each of the request's rows)."""
            out: list[Any] = []
            for p, n in zip(pending, counts, strict=True):
                got = values(p)
                out += [None] * n if got is None else list(got)
            return out

        def floats(values: Callable[[_Pending], np.ndarray]) -> np.ndarray:
            return np.concatenate([np.asarray(values(p), dtype=float).reshape(-1)
                                   for p in pending])

        at = each(lambda p: p.scored_at)
        return pa.Table.from_arrays([
            pa.array(column(lambda p: p.ids), pa.string()),
            pa.array([t.date() for t in at], pa.date32()),
            pa.array(at, pa.timestamp("us", tz="UTC")),
            pa.array(each(lambda p: p.channel), pa.string()),
            pa.repeat(pa.scalar(self.model_name, pa.string()), len(at)),
            pa.array(each(lambda p: p.model_version), pa.string()),
            pa.array(floats(lambda p: p.churn_probability), pa.float64()),
            pa.array(floats(lambda p: p.clv), pa.float64()),
            pa.array(column(lambda p: p.risk_tier), pa.string()),
            pa.array(column(lambda p: p.top_action), pa.string()),
            pa.nulls(len(at), pa.bool_()),
            pa.array(column(lambda p: p.value_tier), pa.string()),
            pa.array(column(lambda p: p.lifecycle_stage), pa.string()),
        ], schema=LOG_SCHEMA)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # the log thread never dies; the next flush tries again
                log.exception("prediction log flush failed")

    def close(self) -> None:
        """Stop the thread and write what is queued (the API's shutdown)."""
        self._stop.set()
        self._thread.join(timeout=max(self.flush_seconds, 1.0) + 5.0)
        try:
            self.flush()
        finally:
            with self._flushing:
                self._writer.close()


def read_prediction_log(location: LogLocation, columns: list[str] | None = None) -> pa.Table:
    """Every row of the prediction log at ``location`` (a folder, or a :class:`PostgresLog`) as
    :data:`LOG_SCHEMA` + ``date`` (the ``scored_as_of`` day as text, the Parquet partition);
    an empty table of that schema when nothing was logged. Columns a log written by an earlier
    churnguard lacks are null. ``columns``: only those (a Parquet log reads no others: at a
    million logged customers the reasons and actions text is most of the log)."""
    schema = LOG_SCHEMA.append(pa.field("date", pa.string()))
    if isinstance(location, PostgresLog):
        table = _read_postgres(location)
        return table if columns is None else table.select(columns)
    root = Path(location)
    files = sorted(p for p in root.glob("date=*/*.parquet") if not p.name.startswith("."))
    if not files:
        empty = schema.empty_table()
        return empty if columns is None else empty.select(columns)
    dataset = ds.dataset([str(p) for p in files], schema=schema, format="parquet",
                         partitioning=ds.partitioning(pa.schema([("date", pa.string())]),
                                                      flavor="hive"),
                         partition_base_dir=str(root))
    return dataset.to_table(columns=columns)


def _read_postgres(location: PostgresLog) -> pa.Table:
    """The table read through :func:`~churnguard.features.adapters.postgres.read_table` (in
    batches, PostgreSQL's column types), in :data:`LOG_SCHEMA` order, ``date`` added."""
    from churnguard.features.adapters.postgres import read_table
    from churnguard.serving.batch import _pg_connect

    schema = LOG_SCHEMA.append(pa.field("date", pa.string()))
    con = _pg_connect(location.url)
    try:
        table_schema = location.schema or str(
            con.execute("SELECT current_schema()").fetchall()[0][0])
        if _pg_missing_columns(con, location) is None:
            return schema.empty_table()
        table = read_table(con, table_schema, location.name)
    finally:
        con.close()
    n = table.num_rows
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(n, f.type) for f in LOG_SCHEMA]
    cols.append(pc.cast(cols[LOG_SCHEMA.get_field_index("scored_as_of")], pa.string()))
    return pa.Table.from_arrays(cols, schema=schema)
