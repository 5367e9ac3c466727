"""The prediction log: what churnguard scored, for whom, with which model (README, "Prediction
log").

Every ``churnguard score`` run and every API score is recorded as one row per customer in
:data:`LOG_SCHEMA`, so that what was predicted can later be measured against what happened.
The log is a Parquet dataset under the settings' ``prediction_log_path``, partitioned by
scoring date (Hive layout, ``date=YYYY-MM-DD``: the as-of date of a batch run, the UTC day of
an API request):

- a batch run writes ``date=<as_of>/batch-<model name>-v<version>.parquet``, replaced
  atomically when the same model version scores the same as-of date again, so a re-run never
  duplicates rows (:class:`BatchLogSink`, committed after the scores themselves);
- the API (scores and campaign plans) hands its rows to :class:`ApiPredictionLog`: a bounded
  queue a background thread writes every few seconds as ``date=<day>/api-<pid>-<n>.parquet``.
  A request never waits for the log, and never fails because of it: rows that do not fit in
  the queue, or whose write fails, are counted as dropped
  (``churnguard_prediction_log_dropped_rows_total``).

:func:`read_prediction_log` reads it back (one table, ``date`` as a column).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from churnguard.features.io import AtomicPath

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


class ApiPredictionLog:
    """The API's prediction log: :meth:`submit` queues a request's rows without waiting; a
    daemon thread writes what is queued every ``flush_seconds`` (and on :meth:`close`).

    At most ``max_rows`` rows wait in the queue: a request whose rows do not fit is dropped
    from the log (not from the response) and counted by ``on_dropped``; so are rows whose
    write fails (logged once per failure). ``on_written`` counts the rows written.
    """

    def __init__(self, root: Path, *, model_name: str, max_rows: int = 100_000,
                 flush_seconds: float = 2.0,
                 on_written: Callable[[int], None] = lambda n: None,
                 on_dropped: Callable[[int], None] = lambda n: None) -> None:
        self.root = Path(root)
        self.model_name = model_name
        self.max_rows = max_rows
        self.flush_seconds = flush_seconds
        self._on_written, self._on_dropped = on_written, on_dropped
        self._queue: queue.SimpleQueue[pa.Table] = queue.SimpleQueue()
        self._queued = 0
        self._lock = threading.Lock()
        self._files = itertools.count()
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
        dropped) if the queue is full."""
        n = len(ids)
        if n == 0:
            return True
        with self._lock:
            if self._queued + n > self.max_rows or self._stop.is_set():
                self._on_dropped(n)
                return False
            self._queued += n
        at = scored_at or datetime.now(UTC)
        table = pa.Table.from_arrays([
            pa.array(ids, pa.string()),
            pa.repeat(pa.scalar(at.date(), pa.date32()), n),
            pa.repeat(pa.scalar(at, pa.timestamp("us", tz="UTC")), n),
            pa.repeat(pa.scalar(channel, pa.string()), n),
            pa.repeat(pa.scalar(self.model_name, pa.string()), n),
            pa.repeat(pa.scalar(model_version, pa.string()), n),
            pa.array(np.asarray(churn_probability, dtype=float), pa.float64()),
            pa.array(np.asarray(clv, dtype=float), pa.float64()),
            pa.array(risk_tier, pa.string()),
            pa.array(top_action, pa.string()),
            pa.nulls(n, pa.bool_()),
            pa.array(value_tier, pa.string()) if value_tier is not None
            else pa.nulls(n, pa.string()),
            pa.array(lifecycle_stage, pa.string()) if lifecycle_stage is not None
            else pa.nulls(n, pa.string()),
        ], schema=LOG_SCHEMA)
        self._queue.put(table)
        return True

    def flush(self) -> int:
        """Write every queued row now (one file per day); the rows written."""
        tables: list[pa.Table] = []
        while True:
            try:
                tables.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not tables:
            return 0
        rows = pa.concat_tables(tables)
        with self._lock:
            self._queued -= rows.num_rows
        written = 0
        days = pc.unique(rows.column("scored_as_of")).to_pylist()
        for day in days:
            part = rows.filter(pc.equal(rows.column("scored_as_of"), pa.scalar(day,
                                                                              pa.date32())))
            target = _partition(self.root, day) / f"api-{os.getpid()}-{next(self._files)}.parquet"
            try:
                atomic = AtomicPath(target)
                atomic.prepare()
                pq.write_table(part, atomic.tmp, compression="zstd")
                atomic.replace()
            except OSError as exc:
                log.warning("prediction log: %d rows not written to %s (%s)", part.num_rows,
                            target, exc)
                self._on_dropped(part.num_rows)
                continue
            written += part.num_rows
        if written:
            self._on_written(written)
        return written

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
        self.flush()


def read_prediction_log(root: Path) -> pa.Table:
    """Every row of the prediction log under ``root`` (``date`` as a column; an empty table
    of :data:`LOG_SCHEMA` + ``date`` when nothing was logged)."""
    root = Path(root)
    schema = LOG_SCHEMA.append(pa.field("date", pa.string()))
    files = sorted(p for p in root.glob("date=*/*.parquet") if not p.name.startswith("."))
    if not files:
        return schema.empty_table()
    dataset = ds.dataset([str(p) for p in files], schema=schema, format="parquet",
                         partitioning=ds.partitioning(pa.schema([("date", pa.string())]),
                                                      flavor="hive"),
                         partition_base_dir=str(root))
    return dataset.to_table()
