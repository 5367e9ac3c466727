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

import duckdb
import pyarrow as pa

from churnguard.features.definitions import MAX_EVENT_TYPES, FeatureSpec, event_type_code_sql
from churnguard.features.io import atomic_output
from churnguard.features.sources import DataContractError, DataIssue, Problem, Source

LabelMode = Literal["noncontractual", "contractual"]

_PLACEHOLDER = re.compile(r"\{T(?:-(\d+))?\}")


def render(sql: str, cutoff: date) -> str:
    """Replace ``{T}`` and ``{T-n}`` with DATE literals for ``cutoff`` (and n days before it)."""

    def sub(match: re.Match[str]) -> str:
        days = int(match.group(1) or 0)
        return f"DATE '{(cutoff - timedelta(days=days)).isoformat()}'"

    return _PLACEHOLDER.sub(sub, sql)


def txn_activity_sql(source_columns: Sequence[str] = (), table: str = "transactions") -> str:
    """Every purchase row as a row of the ``txn`` activity relation (no cutoff: see below).

    The relation does not depend on the cutoff: each aggregate filters ``day < T`` itself. Both
    window columns look only backwards (the previous row of the same customer), so they are
    point-in-time safe, and a relation built once serves every cutoff of a snapshot grid.
    A row identical to the previous one (same time, amount and ids) is an exact duplicate: it
    is flagged (``dup``) and contributes nothing.
    """
    keys = ["ts", "amount"] + [c for c in ("order_id", "quantity") if c in source_columns]
    same = " AND ".join(f"{k} IS NOT DISTINCT FROM lag({k}) OVER w" for k in keys)
    live = "dup = 0"
    return f"""
        SELECT customer_id, day,
               CASE WHEN {live} AND amount > 0 THEN 1 ELSE 0 END AS n_orders,
               CASE WHEN {live} AND amount > 0 THEN amount ELSE 0 END AS gross,
               CASE WHEN {live} THEN amount ELSE 0 END AS net,
               CASE WHEN {live} AND amount < 0 THEN 1 ELSE 0 END AS n_refunds,
               CASE WHEN {live} AND amount < 0 THEN -amount ELSE 0 END AS refund_amount,
               CASE WHEN {live} AND amount > 0 THEN date_diff('day', prev_day, day) END AS gap,
               dup,
               CASE WHEN isfinite(amount) THEN 0 ELSE 1 END AS nonfinite
        FROM (
            SELECT customer_id, amount, CAST(ts AS DATE) AS day,
                   lag(CAST(ts AS DATE)) OVER w AS prev_day,
                   CASE WHEN {same} THEN 1 ELSE 0 END AS dup
            FROM {table}
            WINDOW w AS (PARTITION BY customer_id, amount > 0 ORDER BY {", ".join(keys)})
        ) AS t"""


def evt_activity_sql(spec: FeatureSpec, source_columns: Sequence[str] = (),
                     table: str = "events") -> str:
    """Every interaction row as a row of the ``evt`` activity relation (no cutoff)."""
    n = 'coalesce("count", 1)' if "count" in source_columns else "1"
    codes = ", ".join(f"{sql} AS {name}" for name, sql in event_type_code_sql(spec).items())
    return f"""
        SELECT customer_id, CAST(ts AS DATE) AS day, {codes}, {n} AS n
        FROM {table}"""


# Each txn/evt aggregate reads only the past: every aggregate carries "day < T" itself,
# so one relation serves any cutoff (and DuckDB keeps its fast grouped-scan path).
_PAST = {"txn": "day < {T}", "evt": "day < {T}"}


def aggregate_sql(spec: FeatureSpec, cutoff: date, relation: str, source_sql: str) -> str:
    """Per-customer aggregates of one activity relation as of ``cutoff``."""
    cols = ",\n".join(
        f"    {render(a.sql(_PAST.get(relation)), cutoff)} AS {a.name}"
        for a in spec.aggregates() if a.relation == relation
    )
    return f"SELECT customer_id,\n{cols}\nFROM ({source_sql}) AS r GROUP BY customer_id"


def population_sql(spec: FeatureSpec, cutoff: date, customers: str = "customers") -> str:
    attrs = "".join(f', "{c}"' for c in spec.attribute_columns)
    return (f"SELECT customer_id, signup_date{attrs} FROM {customers} "
            f"WHERE signup_date < DATE '{cutoff.isoformat()}'")


def final_sql(spec: FeatureSpec, cutoff: date, *, pop: str, ta: str, ea: str,
              sa: str | None = None) -> str:
    """Feature expressions over the population joined to the per-customer aggregates."""
    joins = f"LEFT JOIN {ta} USING (customer_id) LEFT JOIN {ea} USING (customer_id)"
    if spec.subscriptions:
        if sa is None:
            raise ValueError("the feature spec uses subscriptions but the source has none")
        joins += f" LEFT JOIN {sa} USING (customer_id)"
    selects = ["pop.customer_id AS customer_id", f"DATE '{cutoff.isoformat()}' AS as_of"]
    for feat in spec.features():
        cast = {"float": "DOUBLE", "int": "BIGINT", "category": "VARCHAR"}[feat.kind]
        selects.append(f'CAST({render(feat.sql, cutoff)} AS {cast}) AS "{feat.name}"')
    return "SELECT " + ",\n       ".join(selects) + f"\nFROM {pop} AS pop {joins}"


def subscription_sql(cutoff: date, table: str = "subscriptions") -> str:
    return f"SELECT * FROM {table} WHERE start_date < DATE '{cutoff.isoformat()}'"


def feature_sql(
    spec: FeatureSpec,
    cutoff: date,
    *,
    txn: str,
    evt: str,
    sub: str | None = None,
    customers: str = "customers",
) -> str:
    """The whole feature query for one cutoff as one statement (e.g. for another engine)."""
    ctes = [
        f"pop AS ({population_sql(spec, cutoff, customers)})",
        f"ta AS ({aggregate_sql(spec, cutoff, 'txn', txn)})",
        f"ea AS ({aggregate_sql(spec, cutoff, 'evt', evt)})",
    ]
    if spec.subscriptions:
        if sub is None:
            raise ValueError("the feature spec uses subscriptions but the source has none")
        ctes.append(f"sa AS ({aggregate_sql(spec, cutoff, 'sub', sub)})")
    return ("WITH " + ",\n".join(ctes) + "\n"
            + final_sql(spec, cutoff, pop="pop", ta="ta", ea="ea",
                        sa="sa" if spec.subscriptions else None))


def source_feature_sql(source: Source, spec: FeatureSpec, cutoff: date) -> str:
    """The feature query for one cutoff straight over the source's tables."""
    return feature_sql(
        spec,
        cutoff,
        txn=txn_activity_sql(source.columns.get("transactions", ())),
        evt=evt_activity_sql(spec, source.columns.get("events", ())),
        sub=subscription_sql(cutoff) if spec.subscriptions else None,
    )


def materialize_features(source: Source, spec: FeatureSpec, cutoff: date,
                         name: str = "features") -> str:
    """Compute features as of ``cutoff`` into temp table ``name``, checking the rows read.

    The per-customer aggregates are materialised first so the row checks that ride along in
    them (non-finite amounts, counts below 1, duplicates, unknown customers) are settled before
    anything is written. Raises :class:`DataContractError`; returns the table name.
    """
    con = source.con
    con.execute(f"CREATE OR REPLACE TEMP TABLE _ta AS "
                f"{aggregate_sql(spec, cutoff, 'txn', _txn_source(source))}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _ea AS "
                f"{aggregate_sql(spec, cutoff, 'evt', _evt_source(source, spec))}")
    sa = None
    if spec.subscriptions:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _sa AS "
                    f"{aggregate_sql(spec, cutoff, 'sub', subscription_sql(cutoff))}")
        sa = "_sa"
    check_aggregates(source, cutoff)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS " + final_sql(
        spec, cutoff, pop=f"({population_sql(spec, cutoff)})", ta="_ta", ea="_ea", sa=sa))
    return name


def _txn_source(source: Source) -> str:
    return txn_activity_sql(source.columns.get("transactions", ()))


def _evt_source(source: Source, spec: FeatureSpec) -> str:
    return evt_activity_sql(spec, source.columns.get("events", ()))


def check_aggregates(source: Source, cutoff: date) -> None:
    """Settle the row checks carried by ``_ta``/``_ea``: raise on bad rows, report the rest."""
    con = source.con
    problems: list[Problem] = []
    row = con.execute("SELECT coalesce(sum(p_nonfinite), 0), coalesce(sum(p_dups), 0) "
                      "FROM _ta").fetchall()[0]
    n_nonfinite, n_dups = int(row[0]), int(row[1])
    if n_nonfinite:
        problems.append(Problem("transactions", "amount", n_nonfinite,
                                "with a number that is not finite",
                                _ids(con, "SELECT customer_id FROM _ta WHERE p_nonfinite > 0")))
    n_bad_count = int(con.execute("SELECT coalesce(sum(e_bad_count), 0) FROM _ea")
                      .fetchall()[0][0])
    if n_bad_count:
        problems.append(Problem("events", "count", n_bad_count, "with a count below 1",
                                _ids(con, "SELECT customer_id FROM _ea WHERE e_bad_count > 0")))
    unknown = []
    for table, agg, rows in (("transactions", "_ta", "p_rows"), ("events", "_ea", "e_rows")):
        n = con.execute(f"SELECT coalesce(sum({rows}), 0) FROM {agg} ANTI JOIN customers "
                        "USING (customer_id)").fetchall()[0][0]
        if n:
            unknown.append(DataIssue(table, "unknown_customer", int(n), _ids(
                con, f"SELECT customer_id FROM {agg} ANTI JOIN customers USING (customer_id)")))
    if unknown and not source.allow_unknown_customers:
        problems += [Problem(i.table, "customer_id", i.n_rows,
                             "for customers that are not in the customers table",
                             i.examples) for i in unknown]
    if problems:
        raise DataContractError(problems)
    for issue in unknown + ([DataIssue("transactions", "duplicate", n_dups)] if n_dups else []):
        source.report(issue)


def _ids(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[str, ...]:
    return tuple(repr(r[0]) for r in con.execute(f"{sql} LIMIT 5").fetchall())


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


def infer_spec(source: Source, *, as_of: date | None = None,
               max_event_types: int = MAX_EVENT_TYPES) -> FeatureSpec:
    """The feature spec the data supports: its most frequent event types and its attributes.

    With ``as_of``, only events before it count, so a model trained as of a date never learns
    its columns from later rows.
    """
    where = f"WHERE ts < DATE '{as_of.isoformat()}'" if as_of else ""
    event_types = tuple(
        r[0] for r in source.con.execute(
            f"SELECT event_type FROM events {where} GROUP BY event_type "
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
    table = materialize_features(source, spec, as_of)
    return source.con.sql(f"SELECT * FROM {table} ORDER BY customer_id").to_arrow_table()


def write_features(
    source: Source, spec: FeatureSpec, as_of: date, out: Path
) -> BuildSummary:
    """Build features as of ``as_of`` and write them to ``out`` (.parquet or .csv), atomically."""
    start = time.perf_counter()
    table = materialize_features(source, spec, as_of)
    with atomic_output(out) as tmp:
        # Sorted, so that re-running a build writes the same file.
        _copy(source, f"SELECT * FROM {table} ORDER BY customer_id", tmp, out)
    n_rows = int(source.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    return BuildSummary(out, n_rows, len(spec.features()), (as_of,),
                        time.perf_counter() - start, spec.fingerprint())


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
    join = "JOIN" if mode == "contractual" else "LEFT JOIN"
    for i, cutoff in enumerate(sorted(cutoffs)):
        feats = materialize_features(source, spec, cutoff)
        labels = label_sql(cutoff, horizon_days, clv_horizon_days, mode)
        tables.append(source.con.sql(
            f"SELECT x.*, l.churned, l.future_spend, l.future_orders FROM {feats} x "
            f"{join} ({labels}) l USING (customer_id) ORDER BY customer_id").to_arrow_table())
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
