"""The feature definitions on Apache Spark: the DuckDB feature query, transpiled, not rewritten.

There is one definition of every feature (:mod:`churnguard.features.definitions`), composed into
one DuckDB-dialect statement by :func:`churnguard.features.build.feature_sql`. This module
transpiles that text to Spark SQL with sqlglot, patches the few functions Spark lacks at the
syntax-tree level (generic rewrites, never a feature by name), and runs it over the contract
tables registered as Spark temp views read from Parquet (local paths or object storage URIs).

Gaps closed here (see :func:`to_spark_sql`):

- ``isfinite(x)`` → ``abs(x) < CAST('Infinity' AS DOUBLE)`` (NULL stays NULL, NaN is false, as
  in DuckDB);
- decimal literals that are operands of ``/`` become DOUBLE: DuckDB divides DECIMALs in double
  precision, Spark in DECIMAL arithmetic rounded to a few digits, which breaks 1e-9 parity.

pyspark is an optional dependency (``pip install churnguard[spark]``); it is imported only when
a function here runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from churnguard.features.build import (
    LabelMode,
    evt_activity_sql,
    feature_sql,
    label_sql,
    subscription_sql,
    txn_activity_sql,
)
from churnguard.features.contract import TABLES, TableSpec
from churnguard.features.definitions import FeatureSpec
from churnguard.features.sources import MAX_EXAMPLES, DataContractError, DataIssue, Problem

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

#: Contract kinds → Spark SQL types.
SPARK_TYPES = {"string": "STRING", "date": "DATE", "timestamp": "TIMESTAMP_NTZ",
               "float": "DOUBLE", "int": "BIGINT", "bool": "BOOLEAN"}
_LARGE_TABLES = frozenset({"transactions", "events"})


class SparkUnavailableError(RuntimeError):
    """pyspark (or Java) is not installed: ``pip install 'churnguard[spark]'``."""


class TranspileError(ValueError):
    """A DuckDB-dialect expression has no Spark SQL equivalent in this module."""


def _require_pyspark() -> Any:
    try:
        import pyspark
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SparkUnavailableError(
            "the Spark engine needs pyspark: pip install 'churnguard[spark]'") from exc
    return pyspark


def spark_session(master: str | None = None, app_name: str = "churnguard",
                  conf: dict[str, str] | None = None) -> SparkSession:
    """A Spark session with churnguard's settings (UTC; Arrow for pandas conversions).

    ``master=None`` keeps whatever ``spark-submit`` configured (use that on a cluster), else
    ``local[*]``.
    """
    _require_pyspark()
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    conf_in = SparkConf()
    if master or not conf_in.contains("spark.master"):
        builder = builder.master(master or "local[*]")
    local = (master or conf_in.get("spark.master", "local[*]") or "").startswith("local")
    if local and not conf_in.contains("spark.pyspark.python"):
        # Local Python workers must run this interpreter (the one churnguard is installed in),
        # not whatever `python3` is first on the PATH.
        # (PySpark reads the worker executable from PYSPARK_PYTHON when the context starts.)
        builder = builder.config("spark.pyspark.python", sys.executable)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.ansi.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        **(conf or {}),
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    # getOrCreate may return an existing session: the settings that matter for parity are
    # session-level SQL settings, so apply them again.
    for key in ("spark.sql.session.timeZone", "spark.sql.ansi.enabled"):
        session.conf.set(key, settings[key])
    return session


# ---------------------------------------------------------------------------------------------
# DuckDB SQL → Spark SQL


def _to_double(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Literal) and not node.is_string and any(
            ch in node.this for ch in ".eE"):
        return exp.cast(node, "DOUBLE")
    return node


def _spark_fix(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Anonymous) and node.name.lower() == "isfinite":
        if len(node.expressions) != 1:
            raise TranspileError("isfinite() takes exactly one argument")
        return exp.LT(this=exp.Abs(this=node.expressions[0].copy()),
                      expression=exp.cast(exp.Literal.string("Infinity"), "DOUBLE"))
    if isinstance(node, exp.Div):
        node.set("this", _to_double(node.this))
        node.set("expression", _to_double(node.expression))
        return node
    return node


def to_spark_sql(duckdb_sql: str) -> str:
    """The DuckDB-dialect statement as Spark SQL (raises :class:`TranspileError`)."""
    try:
        tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
        tree = tree.transform(_spark_fix)
        return tree.sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as exc:
        raise TranspileError(f"cannot transpile the feature SQL to Spark: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Contract tables as Spark views


@dataclass
class SparkSource:
    """Contract tables registered as temp views in ``spark`` (names as in the contract)."""

    spark: SparkSession
    location: str
    tables: frozenset[str]
    columns: dict[str, tuple[str, ...]]
    attribute_columns: tuple[str, ...]
    reference_time: datetime
    issues: list[DataIssue] = field(default_factory=list)
    prefix: str = ""

    def has(self, table: str) -> bool:
        return table in self.tables

    def view(self, table: str) -> str:
        return f"{self.prefix}{table}"


def _exists(spark: SparkSession, path: str) -> bool:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return bool(fs.exists(hpath))


def _parquet_path(spark: SparkSession, location: str, name: str) -> str | None:
    base = location.rstrip("/")
    for candidate in (f"{base}/{name}.parquet", f"{base}/{name}"):
        if _exists(spark, candidate):
            return candidate
    return None


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _lit(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def open_spark_source(
    spark: SparkSession,
    location: str,
    *,
    reference_time: datetime | None = None,
    allow_unknown_customers: bool = False,
    prefix: str = "",
) -> SparkSource:
    """Register the contract tables under ``location`` (a directory or object-storage prefix
    holding ``<table>.parquet`` files or ``<table>/`` Parquet folders) as typed temp views.

    The same checks as the DuckDB path, each one aggregate pass per table: missing tables and
    columns, uncastable types, nulls in required columns, non-finite amounts, counts below 1,
    subscriptions ending before they start, rows for unknown customers; rows dated after
    ``reference_time`` (default: now) and exact duplicates of the small tables are left out and
    reported. Raises :class:`DataContractError`.
    """
    _require_pyspark()
    from pyspark.errors import AnalysisException

    reference_time = reference_time or datetime.now().replace(microsecond=0)
    paths = {n: _parquet_path(spark, location, n) for n in TABLES}
    present = {n for n, p in paths.items() if p is not None}
    problems = [Problem(s.name, None, 0, f"table not found in {location} (Parquet)")
                for s in TABLES.values() if s.required and s.name not in present]
    if problems:
        raise DataContractError(problems)

    columns: dict[str, tuple[str, ...]] = {}
    attributes: tuple[str, ...] = ()
    issues: list[DataIssue] = []
    for name in sorted(present):
        spec = TABLES[name]
        path = paths[name]
        assert path is not None
        try:
            raw = spark.read.parquet(path)
        except AnalysisException as exc:
            raise DataContractError([Problem(name, None, 0, f"cannot read {path}: {exc}")]) \
                from None
        raw_view = f"{prefix}_raw_{name}"
        raw.createOrReplaceTempView(raw_view)
        raw_types = {f.name: f.dataType.simpleString() for f in raw.schema.fields}
        selects, present_cols, probs = _typed_columns(spec, raw_types)
        if probs:
            problems += probs
            continue
        if name == "customers":
            known = {c.name for c in spec.columns}
            attributes = tuple(c for c, t in raw_types.items()
                               if c not in known and t in ("string", "boolean"))
            selects += [f"CAST({_q(c)} AS STRING) AS {_q(c)}" for c in attributes]
        columns[name] = tuple(present_cols)
        typed_view = f"{prefix}_typed_{name}"
        spark.sql(f"SELECT {', '.join(selects)} FROM {raw_view}").createOrReplaceTempView(
            typed_view)
        problems += _check_rows(spark, spec, typed_view, raw_view, present_cols)
    if problems:
        raise DataContractError(problems)

    for name in sorted(present):
        issues += _clean(spark, TABLES[name], prefix, columns[name] + (
            attributes if name == "customers" else ()), reference_time)
    if "events" not in present:
        casts = ", ".join(f"CAST(NULL AS {SPARK_TYPES[c.kind]}) AS {_q(c.name)}"
                          for c in TABLES["events"].columns)
        spark.sql(f"SELECT {casts} WHERE false").createOrReplaceTempView(f"{prefix}events")
        columns["events"] = tuple(c.name for c in TABLES["events"].columns)

    unknown = []
    for name in sorted(present - {"customers"}):
        n, examples = _unknown(spark, prefix, name)
        if n:
            unknown.append(DataIssue(name, "unknown_customer", n, examples))
    if unknown and not allow_unknown_customers:
        raise DataContractError([
            Problem(i.table, "customer_id", i.n_rows,
                    "for customers that are not in the customers table", i.examples)
            for i in unknown])
    # Reported, and left out by the population join of the feature and label queries, as in
    # the DuckDB path.
    issues += unknown
    return SparkSource(spark, location, frozenset(present), columns, attributes,
                       reference_time, issues, prefix)


def _typed_columns(spec: TableSpec, raw_types: dict[str, str]) -> tuple[
        list[str], list[str], list[Problem]]:
    selects: list[str] = []
    present: list[str] = []
    problems: list[Problem] = []
    numeric = ("tinyint", "smallint", "int", "bigint", "float", "double")
    for col in spec.columns:
        raw = raw_types.get(col.name)
        if raw is None:
            if col.required:
                problems.append(Problem(spec.name, col.name, 0, "required column is missing "
                                        f"(found: {', '.join(raw_types) or 'no columns'})"))
            continue
        ok = {
            "string": True,
            "date": raw in ("date", "timestamp", "timestamp_ntz"),
            "timestamp": raw in ("date", "timestamp", "timestamp_ntz"),
            "float": raw in numeric or raw.startswith("decimal"),
            "int": raw in numeric[:4],
            "bool": raw == "boolean",
        }[col.kind]
        if not ok:
            problems.append(Problem(spec.name, col.name, 0,
                                    f"has type {raw}, expected {col.kind} "
                                    f"({SPARK_TYPES[col.kind]})"))
            continue
        selects.append(f"CAST({_q(col.name)} AS {SPARK_TYPES[col.kind]}) AS {_q(col.name)}")
        present.append(col.name)
    return selects, present, problems


def _check_rows(spark: SparkSession, spec: TableSpec, view: str, raw_view: str,
                present: Sequence[str]) -> list[Problem]:
    conds: list[tuple[str | None, str, str]] = []
    for col in spec.columns:
        if col.name not in present:
            continue
        if not col.nullable:
            conds.append((col.name, f"{_q(col.name)} IS NULL", "with an empty (null) value"))
        if col.kind == "float":
            conds.append((col.name, f"NOT (abs({_q(col.name)}) < CAST('Infinity' AS DOUBLE))",
                          "with a number that is not finite"))
        if col.name == "count":
            conds.append((col.name, f"{_q(col.name)} < 1", "with a count below 1"))
    if spec.name == "subscriptions" and "end_date" in present:
        conds.append(("end_date", "end_date < start_date", "that end before they start"))
    aggs = "".join(f", count_if({c})" for _, c, _ in conds)
    row = spark.sql(f"SELECT count(*){aggs} FROM {view}").collect()[0]
    if row[0] == 0:
        return [Problem(spec.name, None, 0, "is empty (no rows)")]
    problems = []
    for (col, cond, message), n_bad in zip(conds, list(row)[1:], strict=True):
        if n_bad:
            shown = "customer_id" if col in (None, "customer_id") else _q(col)
            ex = spark.sql(f"SELECT CAST({shown} AS STRING) FROM {view} WHERE {cond} "
                           f"LIMIT {MAX_EXAMPLES}").collect()
            problems.append(Problem(spec.name, col, int(n_bad), message,
                                    tuple(repr(r[0]) for r in ex)))
    return problems


def _clean(spark: SparkSession, spec: TableSpec, prefix: str, cols: Sequence[str],
           reference_time: datetime) -> list[DataIssue]:
    typed = f"{prefix}_typed_{spec.name}"
    col_list = ", ".join(_q(c) for c in cols)
    where = "true"
    issues: list[DataIssue] = []
    ref = f"TIMESTAMP_NTZ '{reference_time.isoformat(sep=' ')}'"
    for time_col in spec.time_columns:
        if time_col not in cols:
            continue
        cond = f"{_q(time_col)} > {ref}"
        n = spark.sql(f"SELECT count_if({cond}) FROM {typed}").collect()[0][0]
        if n:
            ex = spark.sql(f"SELECT CAST({_q(time_col)} AS STRING) FROM {typed} WHERE {cond} "
                           f"LIMIT {MAX_EXAMPLES}").collect()
            issues.append(DataIssue(spec.name, "future_timestamp", int(n),
                                    tuple(repr(r[0]) for r in ex)))
            where = f"NOT ({cond})"
    body = f"SELECT {col_list} FROM {typed} WHERE {where}"
    if spec.name not in _LARGE_TABLES:
        # Small tables: exact duplicates are reported and left out (the DuckDB path does the
        # same; duplicate transactions are flagged inside the feature query itself).
        total, distinct = spark.sql(
            f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT * FROM ({body}))) "
            f"FROM ({body})").collect()[0]
        if total != distinct:
            if spec.name == "customers":
                n_conf = spark.sql(f"SELECT count(*) FROM (SELECT customer_id FROM (SELECT "
                                   f"DISTINCT * FROM ({body})) GROUP BY customer_id "
                                   "HAVING count(*) > 1)").collect()[0][0]
                if n_conf:
                    raise DataContractError([Problem(
                        "customers", "customer_id", int(n_conf),
                        "customer ids that appear more than once with different attributes")])
            issues.append(DataIssue(spec.name, "duplicate", int(total - distinct)))
            body = f"SELECT DISTINCT * FROM ({body})"
    spark.sql(body).createOrReplaceTempView(f"{prefix}{spec.name}")
    return issues


def _unknown(spark: SparkSession, prefix: str, name: str) -> tuple[int, tuple[str, ...]]:
    sql = (f"FROM {prefix}{name} t LEFT ANTI JOIN {prefix}customers c "
           "ON t.customer_id = c.customer_id")
    n = int(spark.sql(f"SELECT count(*) {sql}").collect()[0][0])
    if not n:
        return 0, ()
    ex = spark.sql(f"SELECT DISTINCT t.customer_id {sql} LIMIT {MAX_EXAMPLES}").collect()
    return n, tuple(repr(r[0]) for r in ex)


# ---------------------------------------------------------------------------------------------
# Features, labels and the snapshot grid


def _prefixed(sql: str, prefix: str) -> str:
    """Point the contract table names of a DuckDB statement at ``prefix``-ed views."""
    if not prefix:
        return sql
    tree = sqlglot.parse_one(sql, read="duckdb")
    ctes = {c.alias for c in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if table.name in TABLES and table.name not in ctes and not table.db:
            table.set("this", exp.to_identifier(prefix + table.name))
    return tree.sql(dialect="duckdb")


def feature_query(src: SparkSource, spec: FeatureSpec, cutoff: date) -> str:
    """The Spark SQL text of the feature query for one cutoff over ``src``'s views."""
    if spec.subscriptions and not src.has("subscriptions"):
        raise ValueError("the feature spec uses subscriptions but the source has none")
    sql = feature_sql(
        spec, cutoff,
        txn=txn_activity_sql(src.columns.get("transactions", ())),
        evt=evt_activity_sql(spec, src.columns.get("events", ())),
        sub=subscription_sql(cutoff) if spec.subscriptions else None,
    )
    return to_spark_sql(_prefixed(sql, src.prefix))


def spark_features(src: SparkSource, spec: FeatureSpec, cutoff: date) -> DataFrame:
    """Features of every customer signed up before ``cutoff``, from rows strictly before it:
    the same columns and types as :func:`churnguard.features.build.build_features`."""
    return _sql(src.spark, feature_query(src, spec, cutoff))


def _sql(spark: SparkSession, text: str) -> DataFrame:
    from pyspark.errors import AnalysisException

    try:
        return spark.sql(text)
    except AnalysisException as exc:
        if "UNRESOLVED_ROUTINE" in str(exc):
            raise TranspileError(
                "a function in the feature SQL has no Spark equivalent after transpilation; "
                "write its definition with portable SQL or add a generic rewrite to "
                f"features/spark.py: {str(exc).splitlines()[0]}") from None
        raise


def spark_snapshot_grid(
    src: SparkSource,
    spec: FeatureSpec,
    cutoffs: Sequence[date],
    *,
    horizon_days: int,
    clv_horizon_days: int,
    mode: LabelMode = "noncontractual",
    progress: Callable[[int, int], None] | None = None,
) -> DataFrame:
    """Several cutoffs stacked, each with its point-in-time features and labels (the same
    ``feature_sql`` + ``label_sql`` as the DuckDB grid), as one lazy Spark DataFrame."""
    if not cutoffs:
        raise ValueError("the snapshot grid needs at least one cutoff")
    if mode == "contractual" and not src.has("subscriptions"):
        raise ValueError("contractual labels need a subscriptions table")
    frames = []
    join = "inner" if mode == "contractual" else "left"
    ordered = sorted(cutoffs)
    for i, cutoff in enumerate(ordered):
        feats = spark_features(src, spec, cutoff)
        labels = _sql(src.spark, to_spark_sql(_prefixed(
            label_sql(cutoff, horizon_days, clv_horizon_days, mode), src.prefix)))
        frames.append(feats.join(labels.drop("as_of"), on="customer_id", how=join))
        if progress:
            progress(i + 1, len(ordered))
    grid = frames[0]
    for frame in frames[1:]:
        grid = grid.unionByName(frame)
    return grid


def write_spark_features(src: SparkSource, spec: FeatureSpec, cutoff: date, out: str) -> int:
    """Write the features as of ``cutoff`` to ``out``; returns the row count.

    A local ``.parquet``/``.csv`` file is written as one file, sorted by customer_id, through a
    temporary name and an atomic rename (like the DuckDB path). Anything else (e.g.
    ``s3a://bucket/features/``) is a Parquet directory written by Spark's committer.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from churnguard.features.io import atomic_output

    frame = spark_features(src, spec, cutoff)
    if "://" not in out and out.lower().endswith((".parquet", ".csv")):
        target = Path(out)
        csv = target.suffix.lower() == ".csv"
        staging = Path(tempfile.mkdtemp(prefix=".spark-", dir=target.parent.resolve()
                                        if target.parent.exists() else None))
        try:
            writer = frame.repartition(1).sortWithinPartitions("customer_id").write.mode(
                "overwrite")
            if csv:
                writer.option("header", "true").csv(str(staging / "out"))
            else:
                writer.option("compression", "zstd").parquet(str(staging / "out"))
            parts = sorted((staging / "out").glob("part-*"))
            if len(parts) != 1:
                raise RuntimeError(f"Spark wrote {len(parts)} part files, expected 1")
            with atomic_output(target) as tmp:
                shutil.move(str(parts[0]), tmp)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return int(src.spark.read.parquet(str(target)).count()) if not csv else int(
            frame.count())
    frame.write.mode("overwrite").option("compression", "zstd").parquet(out)
    return int(src.spark.read.parquet(out).count())
