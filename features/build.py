"""Point-in-time features, labels and the snapshot grid, computed by DuckDB.

The SQL is assembled from :mod:`churnguard.features.definitions` (one definition per feature);
this module only decides which rows feed it: rows strictly before the cutoff for features, rows
in [cutoff, cutoff + horizon) for labels.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import pyarrow as pa

from churnguard.features.definitions import FeatureSpec, MAX_EVENT_TYPES
from churnguard.features.io import atomic_output
from churnguard.features.sources import Source

LabelMode = Literal["noncontractual", "contractual"]

_PLACEHOLDER = re.compile(r"\{T(?:-(\d+))?\}")


def render(sql: str, cutoff: date) -> str:
    """Replace ``{T}`` and ``{T-n}`` with DATE literals for ``cutoff`` (and n days before it)."""

    def sub(match: re.Match[str]) -> str:
        days = int(match.group(1) or 0)
        return f"DATE '{(cutoff - timedelta(days=days)).isoformat()}'"

    return _PLACEHOLDER.sub(sub, sql)


def txn_activity_sql(cutoff: date, table: str = "transactions") -> str:
    """Raw purchases before ``cutoff`` as rows of the ``txn`` activity relation."""
    return f"""
        SELECT customer_id,
               CAST(ts AS DATE) AS day,
               CASE WHEN amount > 0 THEN 1 ELSE 0 END AS n_orders,
               CASE WHEN amount > 0 THEN amount ELSE 0 END AS gross,
               amount AS net,
               CASE WHEN amount < 0 THEN 1 ELSE 0 END AS n_refunds,
               CASE WHEN amount < 0 THEN -amount ELSE 0 END AS refund_amount,
               CASE WHEN amount > 0 THEN date_diff('day',
                    lag(CAST(ts AS DATE)) OVER (PARTITION BY customer_id, amount > 0
                                                ORDER BY ts),
                    CAST(ts AS DATE)) END AS gap
        FROM {table}
        WHERE ts < DATE '{cutoff.isoformat()}'"""


def evt_activity_sql(cutoff: date, table: str = "events", has_count: bool = True) -> str:
    """Raw interactions before ``cutoff`` as rows of the ``evt`` activity relation."""
    n = "coalesce(\"count\", 1)" if has_count else "1"
    return f"""
        SELECT customer_id, CAST(ts AS DATE) AS day, event_type, {n} AS n
        FROM {table}
        WHERE ts < DATE '{cutoff.isoformat()}'"""


def feature_sql(
    spec: FeatureSpec,
    cutoff: date,
    *,
    txn: str,
    evt: str,
    sub: str | None = None,
    customers: str = "customers",
) -> str:
    """The whole feature query for one cutoff, over the given activity relations (SQL text)."""
    aggs = spec.aggregates()

    def agg_block(relation: str, source_sql: str) -> str:
        cols = ",\n".join(
            f"    {render(a.sql, cutoff)} AS {a.name}" for a in aggs if a.relation == relation
        )
        return f"SELECT customer_id,\n{cols}\nFROM ({source_sql}) GROUP BY customer_id"

    attrs = "".join(f', "{c}"' for c in spec.attribute_columns)
    ctes = [
        f"pop AS (SELECT customer_id, signup_date{attrs} FROM {customers} "
        f"WHERE signup_date < DATE '{cutoff.isoformat()}')",
        f"ta AS ({agg_block('txn', txn)})",
        f"ea AS ({agg_block('evt', evt)})",
    ]
    joins = "LEFT JOIN ta USING (customer_id) LEFT JOIN ea USING (customer_id)"
    if spec.subscriptions:
        if sub is None:
            raise ValueError("the feature spec uses subscriptions but the source has none")
        ctes.append(f"sa AS ({agg_block('sub', sub)})")
        joins += " LEFT JOIN sa USING (customer_id)"
    selects = [
        "pop.customer_id AS customer_id",
        f"DATE '{cutoff.isoformat()}' AS as_of",
    ]
    for feat in spec.features():
        expr = render(feat.sql, cutoff)
        cast = {"float": "DOUBLE", "int": "BIGINT", "category": "VARCHAR"}[feat.kind]
        selects.append(f"CAST({expr} AS {cast}) AS \"{feat.name}\"")
    return (
        "WITH " + ",\n".join(ctes)
        + "\nSELECT " + ",\n       ".join(selects)
        + f"\nFROM pop {joins}"
    )


def source_feature_sql(source: Source, spec: FeatureSpec, cutoff: date) -> str:
    """The feature query for one cutoff straight over the source's tables."""
    sub = None
    if spec.subscriptions:
        sub = (f"SELECT * FROM subscriptions "
               f"WHERE start_date < DATE '{cutoff.isoformat()}'")
    return feature_sql(
        spec,
        cutoff,
        txn=txn_activity_sql(cutoff),
        evt=evt_activity_sql(cutoff, has_count="count" in source.columns.get("events", ())),
        sub=sub,
    )


def label_sql(
    cutoff: date,
    horizon_days: int,
    clv_horizon_days: int,
    mode: LabelMode = "noncontractual",
    customers: str = "customers",
) -> str:
    """Labels for the customers in the population at ``cutoff``, from rows on/after it.

    Non-contractual: ``churned`` = no purchase in [T, T + horizon). Contractual: the customer has
    a subscription active at T and none active at T + horizon (it ended and none followed).
    ``future_spend`` = net spend in [T, T + clv_horizon), floored at 0; ``future_orders`` =
    orders in the same window.
    """
    t0 = f"DATE '{cutoff.isoformat()}'"
    th = f"DATE '{(cutoff + timedelta(days=horizon_days)).isoformat()}'"
    tc = f"DATE '{(cutoff + timedelta(days=clv_horizon_days)).isoformat()}'"
    t_end = f"DATE '{(cutoff + timedelta(days=max(horizon_days, clv_horizon_days))).isoformat()}'"
    future = f"""
        SELECT customer_id,
               count(*) FILTER (WHERE amount > 0 AND ts < {th}) AS orders_h,
               count(*) FILTER (WHERE amount > 0 AND ts < {tc}) AS orders_c,
               sum(amount) FILTER (WHERE ts < {tc}) AS net_c
        FROM transactions WHERE ts >= {t0} AND ts < {t_end} GROUP BY customer_id"""
    if mode == "contractual":
        churn = f"""CASE WHEN EXISTS (SELECT 1 FROM subscriptions s
                     WHERE s.customer_id = pop.customer_id AND s.start_date < {th}
                       AND (s.end_date IS NULL OR s.end_date >= {th})) THEN 0 ELSE 1 END"""
        population = f"""pop AS (SELECT DISTINCT c.customer_id FROM {customers} c
                 JOIN subscriptions s ON s.customer_id = c.customer_id
                 WHERE s.start_date < {t0} AND (s.end_date IS NULL OR s.end_date >= {t0})
                   AND c.signup_date < {t0})"""
    else:
        churn = "CASE WHEN coalesce(f.orders_h, 0) = 0 THEN 1 ELSE 0 END"
        population = (f"pop AS (SELECT customer_id FROM {customers} "
                      f"WHERE signup_date < {t0})")
    return f"""
        WITH {population}, f AS ({future})
        SELECT pop.customer_id AS customer_id,
               {t0} AS as_of,
               CAST({churn} AS BIGINT) AS churned,
               CAST(greatest(coalesce(f.net_c, 0), 0) AS DOUBLE) AS future_spend,
               CAST(coalesce(f.orders_c, 0) AS BIGINT) AS future_orders
        FROM pop LEFT JOIN f USING (customer_id)"""


def infer_spec(source: Source, *, max_event_types: int = MAX_EVENT_TYPES) -> FeatureSpec:
    """The feature spec the data supports: its most frequent event types and its attributes."""
    event_types = tuple(
        r[0] for r in source.con.execute(
            "SELECT event_type FROM events GROUP BY event_type "
            f"ORDER BY count(*) DESC, event_type LIMIT {int(max_event_types)}"
        ).fetchall()
    )
    categories = {}
    for col in source.attribute_columns:
        categories[col] = tuple(
            str(r[0]) for r in source.con.execute(
                f'SELECT DISTINCT CAST("{col}" AS VARCHAR) FROM raw_customers '
                f'WHERE "{col}" IS NOT NULL ORDER BY 1'
            ).fetchall()
        )
    return FeatureSpec(
        event_types=tuple(sorted(event_types)),
        attribute_columns=source.attribute_columns,
        subscriptions=source.has("subscriptions"),
        attribute_categories=categories,
    )


@dataclass(frozen=True)
class BuildSummary:
    out: Path
    n_rows: int
    n_features: int
    cutoffs: tuple[date, ...]
    seconds: float
    spec_fingerprint: str


def build_features(source: Source, spec: FeatureSpec, as_of: date) -> pa.Table:
    """Features of every customer signed up before ``as_of``, from rows strictly before it."""
    return source.con.sql(source_feature_sql(source, spec, as_of)).to_arrow_table()


def write_features(
    source: Source, spec: FeatureSpec, as_of: date, out: Path
) -> BuildSummary:
    """Build features as of ``as_of`` and write them to ``out`` (.parquet or .csv), atomically."""
    start = time.perf_counter()
    sql = source_feature_sql(source, spec, as_of)
    with atomic_output(out) as tmp:
        _copy(source, sql, tmp, out)
    n_rows = _count_rows(source, out)
    return BuildSummary(out, n_rows, len(spec.features()), (as_of,),
                        time.perf_counter() - start, spec.fingerprint())


def snapshot_sql(
    source: Source,
    spec: FeatureSpec,
    cutoff: date,
    horizon_days: int,
    clv_horizon_days: int,
    mode: LabelMode = "noncontractual",
) -> str:
    """Features joined to labels for one cutoff (one block of the snapshot grid)."""
    feats = source_feature_sql(source, spec, cutoff)
    labels = label_sql(cutoff, horizon_days, clv_horizon_days, mode)
    join = "JOIN" if mode == "contractual" else "LEFT JOIN"
    return (f"SELECT x.*, l.churned, l.future_spend, l.future_orders FROM ({feats}) x "
            f"{join} ({labels}) l USING (customer_id)")


def build_snapshot_grid(
    source: Source,
    spec: FeatureSpec,
    cutoffs: Sequence[date],
    *,
    horizon_days: int,
    clv_horizon_days: int,
    mode: LabelMode = "noncontractual",
    progress: Callable[[int, int], None] | None = None,
) -> pa.Table:
    """Several cutoffs stacked, each with its own point-in-time features and labels."""
    if not cutoffs:
        raise ValueError("the snapshot grid needs at least one cutoff")
    tables = []
    for i, cutoff in enumerate(sorted(cutoffs)):
        sql = snapshot_sql(source, spec, cutoff, horizon_days, clv_horizon_days, mode)
        tables.append(source.con.sql(sql).to_arrow_table())
        if progress:
            progress(i + 1, len(cutoffs))
    return pa.concat_tables(tables)


def monthly_cutoffs(first: date, last: date, step_months: int = 1) -> list[date]:
    """First-of-month cutoffs from ``first`` (rounded up to a month start) to ``last``."""
    if step_months < 1:
        raise ValueError("step_months must be at least 1")
    y, m = first.year, first.month
    if first.day != 1:
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    out = []
    while date(y, m, 1) <= last:
        out.append(date(y, m, 1))
        m += step_months
        while m > 12:
            y, m = y + 1, m - 12
    return out


def _copy(source: Source, sql: str, tmp: Path, out: Path) -> None:
    fmt = "CSV, HEADER" if out.suffix.lower() == ".csv" else "PARQUET, COMPRESSION zstd"
    source.con.execute(f"COPY ({sql}) TO '{tmp.as_posix()}' (FORMAT {fmt})")


def _count_rows(source: Source, out: Path) -> int:
    reader = "read_csv" if out.suffix.lower() == ".csv" else "read_parquet"
    row = source.con.execute(f"SELECT count(*) FROM {reader}('{out.as_posix()}')").fetchall()[0]
    return int(row[0]) if row else 0
