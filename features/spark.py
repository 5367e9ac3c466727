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

import logging
import os
import sys
import warnings
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
    missing_inputs,
    subscription_sql,
    txn_activity_sql,
)
from churnguard.features.checks import (
    DataContractError,
    DataIssue,
    Engine,
    Problem,
    TableCounts,
    check_problems,
    clean_table,
    count_table,
    dropped_checks,
    missing_column,
    missing_tables,
    purchases_before_signup,
    row_checks,
    unknown_customer_problems,
    unknown_customers,
    wrong_type,
)
from churnguard.features.contract import (
    CUSTOMERS,
    EVENTS,
    SPARK_TYPES,
    SUBSCRIPTIONS,
    TABLES,
    TableSpec,
)
from churnguard.features.definitions import FeatureSpec
from churnguard.features.sql import ident

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


class SparkUnavailableError(RuntimeError):
    """pyspark (or Java) is not installed: ``pip install 'churnguard[spark]'``."""


class TranspileError(ValueError):
    """A DuckDB-dialect expression has no Spark SQL equivalent in this module."""


def _require_pyspark() -> Any:
    # PySpark 4 warns on every import and pandas UDF that it "does not yet fully support
    # pandas >= 3". churnguard's Spark path exchanges Arrow batches (mapInArrow), not pandas
    # frames, and tests/integration/test_spark_parity.py checks it against DuckDB under pandas
    # 3; pinning pandas < 3 is no cure (pandas 2 writes nanosecond Parquet timestamps, which
    # Spark cannot read). So that one warning is silenced, nothing else.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                            category=FutureWarning)
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
        # The feature plans have a few hundred columns: print them, do not warn about them.
        "spark.sql.debug.maxToStringFields": "1000",
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
    """The Parquet file or folder of table ``name``; a table given more than once (also as a
    CSV file, which the DuckDB source would read) breaks the contract, as on DuckDB."""
    base = location.rstrip("/")
    found = [c for c in (f"{name}.parquet", name, f"{name}.csv", f"{name}.csv.gz")
             if _exists(spark, f"{base}/{c}")]
    if len(found) > 1:
        raise DataContractError([Problem(name, None, 0, (
            f"is given more than once in {location}: {' and '.join(found)}; keep one of them "
            "(move or rename the others)"))])
    parquet = [c for c in found if not c.endswith((".csv", ".csv.gz"))]
    return f"{base}/{parquet[0]}" if parquet else None


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

    The checks are the DuckDB source's (:mod:`churnguard.features.checks`, transpiled), all
    of a table's counted in one aggregate pass over it
    (:func:`~churnguard.features.checks.count_table`; examples are read only for what was
    found): missing tables and columns, uncastable types, empty tables, nulls in required
    columns, non-finite amounts, counts below 1, subscriptions ending before they start,
    conflicting customer rows, rows for unknown customers; rows dated after
    ``reference_time`` (default: now), implausible signup dates and exact duplicates of the
    small tables are left out and reported; purchases before the customer's signup are
    reported. Raises :class:`DataContractError`.
    """
    _require_pyspark()
    reference_time = reference_time or datetime.now().replace(microsecond=0)
    paths = {n: p for n in TABLES if (p := _parquet_path(spark, location, n)) is not None}
    present = set(paths)
    problems = missing_tables(present, f"{location} (Parquet)")
    if problems:
        raise DataContractError(problems)

    engine = _engine(spark)
    columns: dict[str, tuple[str, ...]] = {}
    attributes: tuple[str, ...] = ()
    typing: dict[str, list[Problem]] = {}
    for name in sorted(present):
        spec = TABLES[name]
        typed, extra, typing[name] = _type_table(spark, spec, paths[name], prefix)
        if not typing[name]:
            columns[name] = typed
            attributes = extra if spec is CUSTOMERS else attributes

    def typed_view(name: str) -> str:
        return ident(f"{prefix}_typed_{name}")

    # One pass per table counts everything the contract asks of it (Spark has no feature
    # aggregation for the checks to ride along in): the row checks, the rows left out, and,
    # joined to the customers given, unknown customers and purchases before the signup.
    customers_ok = CUSTOMERS.name in columns
    counts: dict[str, TableCounts] = {}
    for name in sorted(present):
        spec = TABLES[name]
        problems += typing[name]
        if typing[name]:
            continue
        checks = row_checks(spec, columns[name])
        joined = customers_ok and spec is not CUSTOMERS
        counts[name] = count_table(
            engine, typed_view(name), checks,
            dropped_checks(spec, columns[name], reference_time),
            customers=typed_view(CUSTOMERS.name) if joined else None,
            customer_dropped=dropped_checks(CUSTOMERS, columns[CUSTOMERS.name],
                                            reference_time) if joined else (),
            before_signup=joined and name == "transactions")
        problems += check_problems(engine, spec, typed_view(name), checks, counts[name])
    if problems:
        raise DataContractError(problems)

    issues: list[DataIssue] = []
    recount: set[str] = set()  # tables whose exact duplicates went: unknown rows of the rest
    for name in sorted(present):
        spec = TABLES[name]
        body, found = clean_table(
            engine, spec, typed_view(name),
            columns[name] + (attributes if spec is CUSTOMERS else ()), reference_time,
            dedupe=not spec.large, dropped=counts[name].dropped)
        spark.sql(to_spark_sql(body)).createOrReplaceTempView(f"{prefix}{name}")
        issues += found
        if any(i.kind == "duplicate" for i in found):
            recount.add(name)
    for absent in (EVENTS, SUBSCRIPTIONS):  # empty, as on DuckDB (a model's spec may use them)
        if absent.name in present:
            continue
        casts = ", ".join(f"CAST(NULL AS {SPARK_TYPES[c.kind]}) AS {ident(c.name, 'spark')}"
                          for c in absent.columns)
        spark.sql(f"SELECT {casts} WHERE false").createOrReplaceTempView(
            f"{prefix}{absent.name}")
        columns[absent.name] = tuple(c.name for c in absent.columns)

    # Every table at load (Spark has no aggregation for the check to ride along in). Against
    # every customer row given: a customer left out for its signup date takes its rows along.
    unknown = unknown_customers(
        engine, {name: ident(prefix + name) for name in sorted(present - {CUSTOMERS.name})},
        customers=typed_view(CUSTOMERS.name),
        counted={n: c.unknown for n, c in counts.items() if n not in recount})
    if unknown and not allow_unknown_customers:
        raise DataContractError(unknown_customer_problems(unknown))
    # Reported, and left out by the population join of the feature and label queries, as in
    # the DuckDB path.
    issues += unknown
    issues += purchases_before_signup(engine, ident(prefix + "transactions"),
                                      ident(prefix + CUSTOMERS.name),
                                      counted=counts["transactions"].before_signup)
    return SparkSource(spark, location, frozenset(present), columns, attributes,
                       reference_time, issues, prefix)


def _engine(spark: SparkSession) -> Engine:
    """The contract checks on Spark: their DuckDB SQL transpiled; examples shown as text, none
    for duplicate rows."""
    def query(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in spark.sql(to_spark_sql(sql)).collect()]

    return Engine(query, text_examples=True, duplicate_examples=False)


def _type_table(spark: SparkSession, spec: TableSpec, path: str, prefix: str) -> tuple[
        tuple[str, ...], tuple[str, ...], list[Problem]]:
    """Register ``<prefix>_raw_<table>`` and ``<prefix>_typed_<table>`` (the contract columns
    cast to the contract types, plus the customer attributes): (contract columns present,
    attribute columns, problems)."""
    from pyspark.errors import AnalysisException

    try:
        raw = spark.read.parquet(path)
    except AnalysisException as exc:
        raise DataContractError([Problem(spec.name, None, 0, f"cannot read {path}: {exc}")]) \
            from None
    raw_view = f"{prefix}_raw_{spec.name}"
    raw.createOrReplaceTempView(raw_view)
    raw_types = {f.name: f.dataType.simpleString() for f in raw.schema.fields}
    selects, present, problems = _typed_columns(spec, raw_types)
    if problems:
        return (), (), problems
    attributes: tuple[str, ...] = ()
    if spec is CUSTOMERS:
        known = {c.name for c in spec.columns}
        attributes = tuple(c for c, t in raw_types.items()
                           if c not in known and t in ("string", "boolean"))
        selects += [f"CAST({ident(c, 'spark')} AS STRING) AS {ident(c, 'spark')}"
                    for c in attributes]
    spark.sql(f"SELECT {', '.join(selects)} FROM {raw_view}").createOrReplaceTempView(
        f"{prefix}_typed_{spec.name}")
    return tuple(present), attributes, []


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
                problems.append(Problem(spec.name, col.name, 0, missing_column(raw_types)))
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
                                    wrong_type(raw, col, SPARK_TYPES[col.kind])))
            continue
        q = ident(col.name, "spark")
        selects.append(f"CAST({q} AS {SPARK_TYPES[col.kind]}) AS {q}")
        present.append(col.name)
    return selects, present, problems


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
    # (A source without subscriptions has an empty view of them, as on DuckDB.)
    sql = feature_sql(
        spec, cutoff,
        txn=txn_activity_sql(src.columns.get("transactions", ())),
        evt=evt_activity_sql(spec, src.columns.get("events", ())),
        sub=(subscription_sql(cutoff, source_columns=src.columns.get("subscriptions"))
             if spec.subscriptions else None),
        attributes=src.attribute_columns,
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

    for gap in missing_inputs(spec, src.tables, src.attribute_columns):
        log.warning("feature spec %s: %s", spec.fingerprint(), gap)
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
