"""Point-in-time features, labels and the snapshot grid, computed by DuckDB.

The SQL is assembled from :mod:`churnguard.features.definitions` (one definition per feature);
this module only decides which rows feed it: rows strictly before the cutoff for features, rows
in [cutoff, cutoff + horizon) for labels.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa

from churnguard.features.checks import (
    CARRIED_BY_AGGREGATES,
    MAX_EXAMPLES,
    NON_FINITE,
    DataContractError,
    DataIssue,
    Problem,
    unknown_customer_problems,
    unknown_customer_sql,
)
from churnguard.features.contract import DUCKDB_TYPES, SUBSCRIPTIONS
from churnguard.features.definitions import (
    MAX_EVENT_TYPES,
    Aggregate,
    FeatureSpec,
    event_type_code_sql,
)
from churnguard.features.io import atomic_output
from churnguard.features.sources import KNOWN_CUSTOMERS, Source
from churnguard.features.sql import ident, literal

log = logging.getLogger(__name__)

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
    is flagged (``dup``) and contributes nothing. ``nonfinite`` flags the rows whose amount
    breaks the contract's non-finite check (``features.checks.NON_FINITE``); the aggregates
    count both, so the checks need no scan of their own (see :func:`check_aggregates`).
    """
    keys = ["ts", "amount"] + [c for c in ("order_id", "quantity") if c in source_columns]
    same = " AND ".join(f"{k} IS NOT DISTINCT FROM lag({k}) OVER w" for k in keys)
    # Sorting on (ts, amount) alone makes identical rows neighbours but for the freak case of
    # two different orders in the same second for the same amount; sorting on the string ids
    # too would cost a third of the whole build.
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
               CASE WHEN {NON_FINITE.sql("amount")} THEN 1 ELSE 0 END AS nonfinite
        FROM (
            SELECT customer_id, amount, CAST(ts AS DATE) AS day,
                   lag(CAST(ts AS DATE)) OVER w AS prev_day,
                   CASE WHEN {same} THEN 1 ELSE 0 END AS dup
            FROM {table}
            WINDOW w AS (PARTITION BY customer_id, amount > 0 ORDER BY ts, amount)
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


def population_sql(spec: FeatureSpec, cutoff: date, customers: str = "customers",
                   attributes: Collection[str] | None = None) -> str:
    """The customers signed up before ``cutoff``, with the spec's attribute columns.

    ``attributes``: the attribute columns the source has (None: all of the spec's); an
    attribute of the spec the source lacks is a missing (null) category, so that the features
    of a model's spec always have the model's columns.
    """
    attrs = "".join(
        f", {ident(c)}" if attributes is None or c in attributes
        else f", CAST(NULL AS VARCHAR) AS {ident(c)}"
        for c in spec.attribute_columns)
    return (f"SELECT customer_id, signup_date{attrs} FROM {customers} "
            f"WHERE signup_date < DATE '{cutoff.isoformat()}'")


def missing_inputs(spec: FeatureSpec, tables: Collection[str],
                   attributes: Collection[str]) -> list[str]:
    """What a spec (e.g. a model's) uses that the source lacks, as sentences: those features
    take their "no activity" value (counts 0, a missing category). An event type the data does
    not have is not listed: its counts are 0 like those of any type without rows."""
    found = [f"customer attribute {c!r} is not a text column of the customers table: its "
             "feature is a missing category" for c in spec.attribute_columns
             if c not in attributes]
    if spec.subscriptions and "subscriptions" not in tables:
        found.append("the source has no subscriptions table: the subscription features take "
                     "their no-subscription values")
    return found


def _warn_missing_inputs(source: Source, spec: FeatureSpec) -> None:
    for gap in missing_inputs(spec, source.tables, source.attribute_columns):
        log.warning("feature spec %s: %s", spec.fingerprint(), gap)


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
        selects.append(f"CAST({render(feat.sql, cutoff)} AS {cast}) AS {ident(feat.name)}")
    return "SELECT " + ",\n       ".join(selects) + f"\nFROM {pop} AS pop {joins}"


def _months_before(start: str, until: str) -> str:
    """SQL: the number of whole months m with ``start`` + m months (clamped to the month's end,
    as DuckDB's and Spark's month arithmetic do) strictly before ``until`` — the anniversaries
    of ``start`` passed by ``until``, in calendar arithmetic both engines share."""
    return (f"((year({until}) - year({start})) * 12 + month({until}) - month({start}) - "
            f"CASE WHEN least(day({start}), day(last_day({until}))) < day({until}) "
            "THEN 0 ELSE 1 END)")


def subscription_sql(cutoff: date, table: str = "subscriptions",
                     source_columns: Collection[str] | None = None) -> str:
    """The ``sub`` relation as of ``cutoff``: the subscription rows known at T, with what the
    subscription aggregates read per row.

    Only what is known at T: rows that started before it; a row's end date counts only once it
    has passed (``end_date < T``); its other columns are as stored (the contract: known when the
    term starts). ``source_columns``: the contract columns the table has (None: all); an absent
    optional column is NULL, so that a spec's features always build. Per row:

    - ``active`` (at T), ``active_90`` (at T − 90, as known at T);
    - ``cur`` / ``cur_90``: the row current at T / T − 90 — the active one that started last
      (ties broken on every column read from it, so the choice never changes a value);
    - ``gap``: days from the latest end of the customer's earlier rows (T for a row still
      running) to the row's start; ``chain``: rows continuing one another without a gap (a
      row starting at most a day after every earlier row has ended) share a number;
      ``in_chain``: the row is in the chain of the current row (the current, continuous
      subscription);
    - ``term_len``: months per term (``term_months``, else renewal_date − start_date in
      months, else NULL); ``renewals_in_row``, for the rows of the current chain: the row's
      term ends passed before T (or before its end) at which it continued, plus one if it
      took over from an earlier row that ended the day it started or the day before;
    - ``plan_change``: the row's plan differs from that of the customer's previous row (one
      that started earlier: rows starting the same day run side by side);
      ``plan_since``: when the row's plan started within its chain.
    """
    t = f"DATE '{cutoff.isoformat()}'"
    t90 = f"DATE '{(cutoff - timedelta(days=90)).isoformat()}'"
    cols = []
    for col in SUBSCRIPTIONS.columns:
        q = ident(col.name)
        present = source_columns is None or col.name in source_columns or col.required
        cols.append(q if present else f"CAST(NULL AS {DUCKDB_TYPES[col.kind]}) AS {q}")
    # The current row: active first, then the latest start, the largest MRR, then every other
    # column read from it (the end only as known at T).
    current = ("start_date DESC, mrr DESC, plan, renewal_date, term_months, seats, discount, "
               "auto_renew, known_end")
    # (Rows with the same start are ordered by their end, so that every value computed over
    # the earlier rows is the same whatever order the engine puts equal rows in.)
    by_start = "PARTITION BY customer_id ORDER BY start_date, known_end"
    in_chain = "PARTITION BY customer_id, chain ORDER BY start_date, plan"
    return f"""
        SELECT *,
               CASE WHEN chain = cur_chain THEN 1 ELSE 0 END AS in_chain,
               CASE WHEN chain = cur_chain THEN
                   CASE WHEN term_len >= 1 THEN greatest(floor(CAST(
                       {_months_before("start_date", "known_end")} AS DOUBLE) / term_len), 0)
                        ELSE 0 END
                   + CASE WHEN gap BETWEEN 0 AND 1 THEN 1 ELSE 0 END
                    ELSE 0 END AS renewals_in_row,
               max(CASE WHEN plan_new = 1 THEN start_date END) OVER ({in_chain}
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS plan_since
        FROM (
            SELECT *,
                   CASE WHEN rk = 1 AND active = 1 THEN 1 ELSE 0 END AS cur,
                   CASE WHEN rk_90 = 1 AND active_90 = 1 THEN 1 ELSE 0 END AS cur_90,
                   max(CASE WHEN rk = 1 AND active = 1 THEN chain END)
                       OVER (PARTITION BY customer_id) AS cur_chain,
                   CASE WHEN lag(start_date) OVER ({in_chain}) IS NULL
                          OR plan IS DISTINCT FROM lag(plan) OVER ({in_chain})
                        THEN 1 ELSE 0 END AS plan_new
            FROM (
                SELECT *,
                       sum(CASE WHEN gap > 1 THEN 1 ELSE 0 END) OVER ({by_start}
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS chain
                FROM (
                    SELECT *,
                           date_diff('day', max(known_end) OVER ({by_start}
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                               start_date) AS gap,
                           row_number() OVER (PARTITION BY customer_id
                               ORDER BY active DESC, {current}) AS rk,
                           row_number() OVER (PARTITION BY customer_id
                               ORDER BY active_90 DESC, {current}) AS rk_90,
                           CASE WHEN lag(start_date) OVER ({by_start}, plan) < start_date
                                 AND plan IS DISTINCT FROM lag(plan) OVER ({by_start}, plan)
                                THEN 1 ELSE 0 END AS plan_change
                    FROM (
                        SELECT *,
                               CASE WHEN end_date IS NULL OR end_date >= {t} THEN 1 ELSE 0 END
                                   AS active,
                               CASE WHEN start_date < {t90}
                                     AND (end_date IS NULL OR end_date >= {t90})
                                    THEN 1 ELSE 0 END AS active_90,
                               CASE WHEN end_date < {t} THEN end_date ELSE {t} END AS known_end,
                               CASE WHEN term_months IS NOT NULL
                                    THEN CAST(term_months AS DOUBLE)
                                    WHEN renewal_date > start_date
                                    THEN greatest(round(date_diff('day', start_date,
                                                                  renewal_date) / 30.4375), 1)
                               END AS term_len
                        FROM (SELECT {", ".join(cols)} FROM {table}
                              WHERE start_date < {t}) AS s0
                    ) AS s1
                ) AS s2
            ) AS s3
        ) AS s4"""


def feature_sql(
    spec: FeatureSpec,
    cutoff: date,
    *,
    txn: str,
    evt: str,
    sub: str | None = None,
    customers: str = "customers",
    attributes: Collection[str] | None = None,
) -> str:
    """The whole feature query for one cutoff as one statement (e.g. for another engine).

    ``attributes``: the customer attribute columns the source has (see :func:`population_sql`).
    """
    ctes = [
        f"pop AS ({population_sql(spec, cutoff, customers, attributes)})",
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


def materialize_features(source: Source, spec: FeatureSpec, cutoff: date,
                         name: str = "features", *, txn: str | None = None,
                         evt: str | None = None, customer_filter: str | None = None) -> str:
    """Compute features as of ``cutoff`` into temp table ``name``, checking the rows read.

    The per-customer aggregates are materialised first so the row checks that ride along in
    them (non-finite amounts, counts below 1, duplicates, unknown customers) are settled before
    anything is written. ``txn``/``evt`` replace the activity relations (the snapshot grid
    passes relations it materialised once). ``customer_filter``, a SQL predicate on
    ``customer_id`` (e.g. one hash partition), restricts every input table to those customers:
    the batch job builds the features of a very large population one partition at a time, so
    the per-customer window and aggregates stay within DuckDB's memory limit. Raises
    :class:`DataContractError`; returns the table name.
    """
    con = source.con
    tables = {t: t for t in ("customers", "transactions", "events", "subscriptions")}
    if customer_filter:
        for t in tables if spec.subscriptions else ("customers", "transactions", "events"):
            tables[t] = f"_part_{t}"
            con.execute(f"CREATE OR REPLACE TEMP VIEW _part_{t} AS SELECT * FROM {t} "
                        f"WHERE {customer_filter}")
    txn = txn or txn_activity_sql(source.columns.get("transactions", ()),
                                  table=tables["transactions"])
    evt = evt or evt_activity_sql(spec, source.columns.get("events", ()), table=tables["events"])
    with source.reading("transactions"):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _ta AS {aggregate_sql(spec, cutoff, 'txn', txn)}")
    with source.reading("events"):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _ea AS {aggregate_sql(spec, cutoff, 'evt', evt)}")
    sa = None
    if spec.subscriptions:
        # (A source without the table has an empty view of it: no subscription.)
        subs = subscription_sql(cutoff, table=tables["subscriptions"],
                                source_columns=source.columns.get("subscriptions", ()))
        con.execute("CREATE OR REPLACE TEMP TABLE _sa AS "
                    + aggregate_sql(spec, cutoff, "sub", subs))
        sa = "_sa"
    check_aggregates(source, cutoff)
    pop = population_sql(spec, cutoff, customers=tables["customers"],
                         attributes=source.attribute_columns)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS " + final_sql(
        spec, cutoff, pop=f"({pop})", ta="_ta", ea="_ea", sa=sa))
    return name


def _txn_source(source: Source) -> str:
    return txn_activity_sql(source.columns.get("transactions", ()))


def _evt_source(source: Source, spec: FeatureSpec) -> str:
    return evt_activity_sql(spec, source.columns.get("events", ()))


# Where the per-customer aggregates ``_ta``/``_ea`` count what the contract checks need:
# the bad rows of each check in CARRIED_BY_AGGREGATES, by (table, column), and every row of a
# table (for unknown customers).
_CARRIED_IN = {("transactions", "amount"): ("_ta", "p_nonfinite"),
               ("events", "count"): ("_ea", "e_bad_count")}
_ROWS_IN = {"transactions": ("_ta", "p_rows"), "events": ("_ea", "e_rows")}


def check_aggregates(source: Source, cutoff: date) -> None:
    """Settle the row checks carried by ``_ta``/``_ea``: raise on bad rows, report the rest."""
    con = source.con
    problems: list[Problem] = []
    for table, column, rule in CARRIED_BY_AGGREGATES:
        agg, bad = _CARRIED_IN[(table, column)]
        n_bad = _count(con, f"SELECT coalesce(sum({bad}), 0) FROM {agg}")
        if n_bad:
            problems.append(Problem(table, column, n_bad, rule.message,
                                    _ids(con, f"SELECT customer_id FROM {agg} WHERE {bad} > 0")))
    unknown = []
    for table, (agg, rows) in _ROWS_IN.items():
        count_sql, examples_sql = unknown_customer_sql(
            agg, KNOWN_CUSTOMERS, rows=f"coalesce(sum(t.{rows}), 0)", distinct=False)
        n = _count(con, count_sql)
        if n:
            unknown.append(DataIssue(table, "unknown_customer", n, _ids(con, examples_sql)))
    if unknown and not source.allow_unknown_customers:
        problems += unknown_customer_problems(unknown)
    if problems:
        raise DataContractError(problems)
    n_dups = _count(con, "SELECT coalesce(sum(p_dups), 0) FROM _ta")
    for issue in unknown + ([DataIssue("transactions", "duplicate", n_dups)] if n_dups else []):
        source.report(issue)


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0])


def _ids(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[str, ...]:
    return tuple(repr(r[0]) for r in con.execute(f"{sql} LIMIT {MAX_EXAMPLES}").fetchall())


def label_sql(
    cutoff: date,
    horizon_days: int,
    clv_horizon_days: int,
    mode: LabelMode = "noncontractual",
    customers: str = "customers",
    txn: str | None = None,
    grace_days: int = 0,
) -> str:
    """Labels for the customers in the population at ``cutoff``, from rows on/after it.

    Non-contractual: ``churned`` = no purchase in [T, T + horizon). Contractual (the population:
    customers with a subscription active at T): ``churned`` = no subscription of theirs active at
    any time in [T + horizon, T + horizon + grace_days] (with ``grace_days`` 0: none active at
    T + horizon). A plan change or a renewal continues a subscription, so it is not churn; a
    lapse that a new subscription ends within the grace period is not churn either (a late
    payment). The window read ends at T + horizon + grace_days.
    ``future_spend`` = net spend in [T, T + clv_horizon), floored at 0; ``future_orders`` =
    orders in the same window. ``txn`` is the purchases activity relation (default: built from
    the ``transactions`` rows of the label window), so duplicates count once here as they do in
    the features.
    """
    t0 = f"DATE '{cutoff.isoformat()}'"
    th = f"DATE '{(cutoff + timedelta(days=horizon_days)).isoformat()}'"
    tc = f"DATE '{(cutoff + timedelta(days=clv_horizon_days)).isoformat()}'"
    t_end = f"DATE '{(cutoff + timedelta(days=max(horizon_days, clv_horizon_days))).isoformat()}'"
    # The window's rows only: an exact duplicate has its original's timestamp, so it is flagged
    # the same without the history, which the activity relation's window would sort whole.
    txn = txn or txn_activity_sql(table=f"(SELECT * FROM transactions WHERE ts >= {t0} "
                                        f"AND ts < {t_end}) AS window_txn")
    future = f"""
        SELECT customer_id,
               sum(CASE WHEN day < {th} THEN n_orders END) AS orders_h,
               sum(CASE WHEN day < {tc} THEN n_orders END) AS orders_c,
               sum(CASE WHEN day < {tc} THEN net END) AS net_c
        FROM ({txn}) AS r WHERE day >= {t0} AND day < {t_end} GROUP BY customer_id"""
    if grace_days < 0:
        raise ValueError("grace_days must be >= 0")
    if mode == "contractual":
        tg = f"DATE '{(cutoff + timedelta(days=horizon_days + grace_days)).isoformat()}'"
        started = f"s.start_date <= {tg}" if grace_days else f"s.start_date < {th}"
        churn = f"""CASE WHEN EXISTS (SELECT 1 FROM subscriptions s
                     WHERE s.customer_id = pop.customer_id AND {started}
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
                f"SELECT DISTINCT CAST({ident(col)} AS VARCHAR) FROM raw_customers "
                f"WHERE {ident(col)} IS NOT NULL ORDER BY 1"
            ).fetchall()
        )
    return FeatureSpec(
        event_types=tuple(sorted(event_types)),
        attribute_columns=source.attribute_columns,
        subscriptions=source.has("subscriptions"),
        contract_features=source.has("subscriptions"),
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
    """Features of every customer signed up before ``as_of``, from rows strictly before it:
    every feature of ``spec``, whatever the source lacks (see :func:`missing_inputs`)."""
    _warn_missing_inputs(source, spec)
    table = materialize_features(source, spec, as_of)
    return source.con.sql(f"SELECT * FROM {table} ORDER BY customer_id").to_arrow_table()


def feature_batches(source: Source, spec: FeatureSpec, as_of: date, *,
                    batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
    """:func:`build_features`' rows, in no particular order, as record batches of at most
    ``batch_rows``, for a consumer that keeps only summaries of them (monitoring): one pass
    over the source like ``features build``, streamed from the table without sorting it or
    holding it in Arrow."""
    _warn_missing_inputs(source, spec)
    table = materialize_features(source, spec, as_of)
    # The per-customer aggregates behind the table are done with: at a million customers they
    # hold more memory than the features themselves, while the consumer works on top.
    for done in ("_ta", "_ea", "_sa"):
        source.con.execute(f"DROP TABLE IF EXISTS {done}")
    try:
        reader = source.con.sql(f"SELECT * FROM {table}").to_arrow_reader(batch_rows)
        for batch in reader:
            if batch.num_rows:
                yield batch
    finally:
        source.con.execute(f"DROP TABLE IF EXISTS {table}")


def write_features(
    source: Source, spec: FeatureSpec, as_of: date, out: Path
) -> BuildSummary:
    """Build features as of ``as_of`` and write them to ``out`` (.parquet or .csv), atomically:
    every feature of ``spec`` (e.g. a model's), whatever the source lacks (see
    :func:`missing_inputs`), so that a snapshot built for a model fits it."""
    start = time.perf_counter()
    _warn_missing_inputs(source, spec)
    table = materialize_features(source, spec, as_of)
    with atomic_output(out) as tmp:
        # Sorted, so that re-running a build writes the same file.
        _copy(source, f"SELECT * FROM {table} ORDER BY customer_id", tmp, out)
    n_rows = int(source.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    return BuildSummary(out, n_rows, len(spec.features()), (as_of,),
                        time.perf_counter() - start, spec.fingerprint())


def lookback_days(aggregate: Aggregate) -> int | None:
    """How far before the cutoff an aggregate reads (None: the whole history)."""
    days = [int(m.group(1)) for m in _PLACEHOLDER.finditer(f"{aggregate.expr} {aggregate.cond}")
            if m.group(1)]
    return max(days) if days else None


# How an all-time aggregate splits into partials over disjoint intervals of days, and how the
# partials recombine: (partials as (func, expr) pairs, combine function per partial, final SQL
# over the combined partials named p0, p1, ...).
_PARTIALS: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...], str]] = {
    "count": ((("count", "{x}"),), ("sum",), "p0"),
    "sum": ((("sum", "{x}"),), ("sum",), "p0"),
    "min": ((("min", "{x}"),), ("min",), "p0"),
    "max": ((("max", "{x}"),), ("max",), "p0"),
    "avg": ((("sum", "{x}"), ("count", "{x}")), ("sum", "sum"),
            "CAST(p0 AS DOUBLE) / NULLIF(p1, 0)"),
    # Sample standard deviation from the count, sum and sum of squares (exact here: the
    # inputs are whole days, far below 2^26).
    "stddev_samp": ((("sum", "{x}"), ("sum", "{x} * {x}"), ("count", "{x}")),
                    ("sum", "sum", "sum"),
                    "CASE WHEN p2 > 1 THEN sqrt(greatest((p1 - p0 * p0 / p2) / (p2 - 1), 0)) "
                    "END"),
}


class SnapshotBuilder:
    """Features and labels for many cutoffs, sharing the work that does not depend on them.

    The activity relations are cutoff-free (each aggregate filters ``day < T`` itself), so
    reading the files, the per-customer window over purchases and the event-type codes are done
    once. Given the cutoffs up front, the work per cutoff shrinks further:

    - aggregates over the whole history (first/last purchase, totals, gap statistics, …) are
      summed over the disjoint intervals between consecutive cutoffs, once, and carried forward
      from one cutoff to the next;
    - windowed aggregates (last 7…365 days) read only their window's rows, from activity tables
      sorted by day, so DuckDB's zone maps skip the rest.

    ``features``/``snapshot`` must then be called for those cutoffs in increasing order.
    """

    def __init__(self, source: Source, spec: FeatureSpec, last_day: date,
                 cutoffs: Sequence[date] | None = None):
        self.source, self.spec, self.last_day = source, spec, last_day
        self.cutoffs = sorted(set(cutoffs)) if cutoffs else []
        if self.cutoffs and self.cutoffs[-1] > last_day:
            raise ValueError(f"cutoff {self.cutoffs[-1]} is after the last day {last_day}")
        self._done: list[date] = []
        con = source.con
        end = f"DATE '{last_day.isoformat()}'"
        start = ""
        if self.cutoffs:
            deepest = max((lookback_days(a) or 0) for a in spec.aggregates()
                          if a.relation in ("txn", "evt"))
            first = self.cutoffs[0] - timedelta(days=deepest)
            start = f" AND day >= DATE '{first.isoformat()}'"
        _warn_missing_inputs(source, spec)
        # Narrow types keep the in-memory copies small (a 1M-customer grid fits the memory cap).
        with source.reading("transactions"):
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _txn_act AS SELECT customer_id, day, "
                "CAST(n_orders AS TINYINT) AS n_orders, gross, net, "
                "CAST(n_refunds AS TINYINT) AS n_refunds, refund_amount, "
                "CAST(gap AS INTEGER) AS gap, "
                "CAST(dup AS TINYINT) AS dup, CAST(nonfinite AS TINYINT) AS nonfinite "
                f"FROM ({_txn_source(source)}) AS r WHERE day < {end}")
        with source.reading("events"):
            if self.cutoffs:
                self._intervals(con)
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _evt_act AS SELECT customer_id, day, "
                "CAST(type_code AS SMALLINT) AS type_code, CAST(is_complaint AS TINYINT) AS "
                "is_complaint, CAST(is_ticket AS TINYINT) AS is_ticket, CAST(n AS BIGINT) AS n "
                f"FROM ({_evt_source(source, spec)}) AS r WHERE day < {end}{start}")

    def _intervals(self, con: duckdb.DuckDBPyConnection) -> None:
        """Partials of every whole-history aggregate per customer and interval between cutoffs."""
        bounds = [f"DATE '{c.isoformat()}'" for c in self.cutoffs]
        interval = ("CASE " + " ".join(f"WHEN day < {b} THEN {i}" for i, b in enumerate(bounds))
                    + " END")
        for rel, source_sql in (("txn", "SELECT * FROM _txn_act"),
                                ("evt", _evt_source(self.source, self.spec))):
            cols = []
            for a in self._all_time(rel):
                partials, _, _ = _PARTIALS[a.func]
                for j, (func, expr) in enumerate(partials):
                    x = (f"CASE WHEN {a.cond} THEN {a.expr} END" if a.cond else a.expr)
                    cols.append(f"{func}({expr.format(x=x)}) AS {a.name}__{j}")
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _{rel}_parts AS SELECT customer_id, "
                f"{interval} AS k, {', '.join(cols)} FROM ({source_sql}) AS r "
                f"WHERE day < {bounds[-1]} GROUP BY ALL")
            con.execute(f"CREATE OR REPLACE TEMP TABLE _{rel}_state AS SELECT * FROM "
                        f"_{rel}_parts WHERE false")

    def _all_time(self, relation: str) -> list[Aggregate]:
        return [a for a in self.spec.aggregates()
                if a.relation == relation and lookback_days(a) is None and "{T}" not in
                f"{a.expr} {a.cond}"]

    def _advance(self, relation: str, k: int) -> str:
        """Carry the whole-history partials forward to cutoff ``k``; SQL of the aggregates."""
        con = self.source.con
        combined, finals = [], []
        for a in self._all_time(relation):
            partials, combine, final = _PARTIALS[a.func]
            names = [f"{a.name}__{j}" for j in range(len(partials))]
            for name, how in zip(names, combine, strict=True):
                if how == "sum":
                    expr = (f"CASE WHEN s.{name} IS NULL THEN p.{name} WHEN p.{name} IS NULL "
                            f"THEN s.{name} ELSE s.{name} + p.{name} END")
                else:
                    expr = {"min": "least", "max": "greatest"}[how] + f"(s.{name}, p.{name})"
                combined.append(f"{expr} AS {name}")
            sub = final
            for j, name in reversed(list(enumerate(names))):
                sub = sub.replace(f"p{j}", name)
            finals.append(f"{sub} AS {a.name}")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _{relation}_state AS SELECT "
            f"coalesce(s.customer_id, p.customer_id) AS customer_id, {k} AS k, "
            f"{', '.join(combined)} FROM _{relation}_state s FULL OUTER JOIN "
            f"(SELECT * FROM _{relation}_parts WHERE k = {k}) p USING (customer_id)")
        return f"SELECT customer_id, {', '.join(finals)} FROM _{relation}_state"

    def _windowed(self, relation: str, cutoff: date) -> str:
        """Aggregates of one relation that read a window, each group from its window's rows."""
        # Two scans per relation: the many short windows (<= 90 days) read a thin slice, the
        # few long ones (a year) a thicker one; each scan costs a pass over the table.
        groups: dict[int, list[Aggregate]] = {}
        windowed = [a for a in self.spec.aggregates()
                    if a.relation == relation and a not in self._all_time(relation)]
        for a in windowed:
            days = lookback_days(a) or 0
            groups.setdefault(90 if days <= 90 else days, []).append(a)
        if len(groups) > 2:
            longest = max(groups)
            for days in [d for d in groups if 90 < d < longest]:
                groups[longest] += groups.pop(days)
        parts = []
        for days, aggs in sorted(groups.items()):
            since = cutoff - timedelta(days=days)
            cols = ", ".join(f"{render(a.sql(_PAST[relation]), cutoff)} AS {a.name}"
                             for a in aggs)
            parts.append(
                f"(SELECT customer_id, {cols} FROM _{relation}_act WHERE day >= "
                f"DATE '{since.isoformat()}' AND day < DATE '{cutoff.isoformat()}' "
                "GROUP BY customer_id)")
        return " NATURAL FULL OUTER JOIN ".join(parts) if parts else ""

    def features(self, cutoff: date) -> str:
        """Temp table with the features as of ``cutoff``."""
        if cutoff > self.last_day:
            raise ValueError(f"cutoff {cutoff} is after the builder's last day {self.last_day}")
        if not self.cutoffs:
            past = f"day < DATE '{cutoff.isoformat()}'"
            return materialize_features(
                self.source, self.spec, cutoff,
                txn=f"SELECT * FROM _txn_act WHERE {past}",
                evt=f"SELECT * FROM _evt_act WHERE {past}")
        if cutoff not in self.cutoffs or (self._done and cutoff <= self._done[-1]):
            raise ValueError(f"cutoff {cutoff} is not the next of {self.cutoffs}")
        con = self.source.con
        for k in range(len(self._done), self.cutoffs.index(cutoff) + 1):
            txn_all, evt_all = self._advance("txn", k), self._advance("evt", k)
            self._done.append(self.cutoffs[k])
        for rel, all_sql, table in (("txn", txn_all, "_ta"), ("evt", evt_all, "_ea")):
            windowed = self._windowed(rel, cutoff)
            join = f" LEFT JOIN ({windowed}) w USING (customer_id)" if windowed else ""
            con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM "
                        f"({all_sql}) a{join}")
        sa = None
        if self.spec.subscriptions:
            subs = subscription_sql(
                cutoff, source_columns=self.source.columns.get("subscriptions", ()))
            con.execute("CREATE OR REPLACE TEMP TABLE _sa AS "
                        + aggregate_sql(self.spec, cutoff, "sub", subs))
            sa = "_sa"
        if cutoff == self.cutoffs[-1]:
            # The row checks count whole-history rows, so the last cutoff sees every bad row
            # the earlier ones saw; nothing is written before the last cutoff is done.
            check_aggregates(self.source, cutoff)
        pop = population_sql(self.spec, cutoff, attributes=self.source.attribute_columns)
        con.execute("CREATE OR REPLACE TEMP TABLE features AS " + final_sql(
            self.spec, cutoff, pop=f"({pop})", ta="_ta", ea="_ea", sa=sa))
        return "features"

    def snapshot(self, cutoff: date, horizon_days: int, clv_horizon_days: int,
                 mode: LabelMode = "noncontractual", grace_days: int = 0) -> pa.Table:
        """Features joined to labels for one cutoff (one block of the snapshot grid)."""
        churn_days = horizon_days + (grace_days if mode == "contractual" else 0)
        window_end = cutoff + timedelta(days=max(churn_days, clv_horizon_days))
        if window_end > self.last_day:
            raise ValueError(f"the label window of {cutoff} ends {window_end}, after the "
                             f"builder's last day {self.last_day}")
        feats = self.features(cutoff)
        labels = label_sql(cutoff, horizon_days, clv_horizon_days, mode,
                           txn="SELECT * FROM _txn_act", grace_days=grace_days)
        join = "JOIN" if mode == "contractual" else "LEFT JOIN"
        return self.source.con.sql(
            f"SELECT x.*, l.churned, l.future_spend, l.future_orders FROM {feats} x "
            f"{join} ({labels}) l USING (customer_id) ORDER BY customer_id").to_arrow_table()


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
    ordered = sorted(cutoffs)
    last = ordered[-1] + timedelta(days=max(horizon_days, clv_horizon_days))
    builder = SnapshotBuilder(source, spec, last, ordered)
    tables = []
    for i, cutoff in enumerate(ordered):
        tables.append(builder.snapshot(cutoff, horizon_days, clv_horizon_days, mode))
        if progress:
            progress(i + 1, len(ordered))
    return pa.concat_tables(tables)


def write_snapshot_grid(
    source: Source,
    spec: FeatureSpec,
    cutoffs: Sequence[date],
    out: Path,
    *,
    horizon_days: int,
    clv_horizon_days: int,
    mode: LabelMode = "noncontractual",
    progress: Callable[[int, int], None] | None = None,
) -> BuildSummary:
    """The snapshot grid written to one Parquet file cutoff by cutoff (memory: one cutoff)."""
    import pyarrow.parquet as pq

    if not cutoffs:
        raise ValueError("the snapshot grid needs at least one cutoff")
    start = time.perf_counter()
    ordered = sorted(cutoffs)
    last = ordered[-1] + timedelta(days=max(horizon_days, clv_horizon_days))
    builder = SnapshotBuilder(source, spec, last, ordered)
    n_rows = 0
    with atomic_output(out) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for i, cutoff in enumerate(ordered):
                block = builder.snapshot(cutoff, horizon_days, clv_horizon_days, mode)
                writer = writer or pq.ParquetWriter(tmp, block.schema, compression="zstd")
                writer.write_table(block)
                n_rows += block.num_rows
                if progress:
                    progress(i + 1, len(ordered))
        finally:
            if writer is not None:
                writer.close()
    return BuildSummary(out, n_rows, len(spec.features()), tuple(ordered),
                        time.perf_counter() - start, spec.fingerprint())


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
    source.con.execute(f"COPY ({sql}) TO {literal(tmp.as_posix())} (FORMAT {fmt})")
