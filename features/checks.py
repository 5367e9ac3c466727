"""The data contract's checks, derived once from the table specs and run by every engine.

Every check is SQL in DuckDB's dialect over the *typed* relation of one contract table (the
contract columns cast to the contract types; a column parsed from text keeps its text beside it
as ``__raw_<name>``, so that bad values are shown as they were written). The DuckDB source runs
that SQL as it is, the Spark source through :func:`churnguard.features.spark.to_spark_sql`; an
:class:`Engine` is all that differs. What is checked (README, "Data contract"):

- breaks the contract (:class:`DataContractError`): missing tables and columns, wrong types,
  empty tables, nulls in required columns, values that cannot be parsed, non-finite numbers,
  values below a column's minimum or above its maximum (event counts below 1, negative seats,
  subscription discounts above 1), intervals that end before they start
  (subscriptions), rows of one key with different values (conflicting customer rows), rows for
  customers missing from ``customers`` (unless allowed);
- reported and left out (:class:`DataIssue`): rows dated after the data's reference time
  (customers who sign up after it included), customers with an implausible signup date (before
  1900: a placeholder), exact duplicates, and (when allowed) rows for unknown customers; a
  customer left out takes its rows in the other tables with it (they are not unknown);
- reported and kept: purchases dated before the customer's signup date (guest orders before an
  account was opened are common; the population rule, signed up before the cutoff, and the
  point-in-time windows do not depend on the order).

The large tables (transactions, events) get no extra full scan on DuckDB's default path: the
value checks in :data:`CARRIED_BY_AGGREGATES`, duplicate purchases and unknown customers ride
along in the feature aggregation (:func:`churnguard.features.build.check_aggregates`), with the
predicates and messages defined here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from churnguard.features.contract import (
    CUSTOMERS,
    EARLIEST_DATE,
    EVENTS,
    TABLES,
    ColumnSpec,
    TableSpec,
)
from churnguard.features.sql import ident, literal

MAX_EXAMPLES = 5
# Prefix of the raw text kept beside a column parsed from text.
RAW_PREFIX = "__raw_"


# ---------------------------------------------------------------------------------------------
# What a check reports


@dataclass(frozen=True)
class Problem:
    """One way in which a table breaks the contract."""

    table: str
    column: str | None
    n_rows: int
    message: str
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        text = f"{where}: {self.message}"
        if self.n_rows:
            text = f"{where}: {self.n_rows:,} row{'s' if self.n_rows != 1 else ''} {self.message}"
        if self.examples:
            text += " (e.g. " + ", ".join(self.examples) + ")"
        return text


class DataContractError(ValueError):
    """The input breaks the data contract; nothing was written. The CLI exits with code 2."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("input data breaks the contract:\n" + "\n".join(
            f"  - {p}" for p in self.problems))


# What each kind of DataIssue is (one row, several rows), and whether its rows are kept.
_ISSUES: dict[str, tuple[str, str, bool]] = {
    "unknown_customer": ("row for a customer not in the customers table",
                         "rows for customers not in the customers table", False),
    "duplicate": ("exact duplicate row", "exact duplicate rows", False),
    "future_timestamp": ("row dated after the data's reference time",
                         "rows dated after the data's reference time", False),
    "implausible_date": (f"row dated before {EARLIEST_DATE} (an implausible date)",
                         f"rows dated before {EARLIEST_DATE} (an implausible date)", False),
    "before_signup": ("purchase dated before the customer's signup date",
                      "purchases dated before the customer's signup date", True),
}


@dataclass(frozen=True)
class DataIssue:
    """Rows that are reported, but do not stop the run: left out, or kept (see ``kept``)."""

    table: str
    kind: str  # unknown_customer | duplicate | future_timestamp | implausible_date | before_signup
    n_rows: int
    examples: tuple[str, ...] = ()

    @property
    def kept(self) -> bool:
        """Whether the rows stay in the data (reported only)."""
        return self.kind in _ISSUES and _ISSUES[self.kind][2]

    def __str__(self) -> str:
        one, many, _ = _ISSUES.get(self.kind, (self.kind, self.kind, False))
        what = one if self.n_rows == 1 else many
        text = f"{self.table}: {self.n_rows:,} {what} {'kept' if self.kept else 'left out'}"
        if not self.kept and self.table == CUSTOMERS.name:
            text += ", with their rows in the other tables"
        if self.examples:
            text += " (e.g. " + ", ".join(self.examples) + ")"
        return text


# Messages of the table-level checks.
EMPTY = "is empty (no rows)"
UNKNOWN_CUSTOMERS = "for customers that are not in the customers table"


def table_not_found(where: str) -> str:
    return f"table not found in {where}"


def missing_column(found: Iterable[str]) -> str:
    return f"required column is missing (found: {', '.join(found) or 'no columns'})"


def wrong_type(raw_type: str, col: ColumnSpec, engine_type: str) -> str:
    return f"has type {raw_type}, expected {col.kind} ({engine_type})"


def conflicting_keys(key: str) -> str:
    return (f"{key.removesuffix('_id').replace('_', ' ')} ids that appear more than once with "
            "different attributes")


def missing_tables(present: Collection[str], where: str) -> list[Problem]:
    """A problem for every required contract table not in ``present``."""
    return [Problem(spec.name, None, 0, table_not_found(where))
            for spec in TABLES.values() if spec.required and spec.name not in present]


# ---------------------------------------------------------------------------------------------
# Row checks, from the specs


@dataclass(frozen=True)
class Rule:
    """A condition that makes a value bad: SQL with ``{v}`` for the value (any expression)."""

    kind: str
    message: str
    template: str

    def sql(self, value: str) -> str:
        return self.template.format(v=value)


NULL = Rule("null", "with an empty (null) value", "{v} IS NULL")
# A column read from text: missing means null or blank text.
BLANK = Rule("null", NULL.message, "({v} IS NULL OR trim(CAST({v} AS VARCHAR)) = '')")
NON_FINITE = Rule("non_finite", "with a number that is not finite", "NOT isfinite({v})")


def below_minimum(col: ColumnSpec) -> Rule:
    """Values of ``col`` below its contract minimum (e.g. event counts below 1)."""
    if col.minimum is None:
        raise ValueError(f"column {col.name!r} has no minimum")
    return Rule("below_minimum", f"with a {col.name} below {col.minimum}",
                f"{{v}} < {int(col.minimum)}")


def above_maximum(col: ColumnSpec) -> Rule:
    """Values of ``col`` above its contract maximum (e.g. a subscription discount above 1)."""
    if col.maximum is None:
        raise ValueError(f"column {col.name!r} has no maximum")
    return Rule("above_maximum", f"with a {col.name} above {col.maximum}",
                f"{{v}} > {int(col.maximum)}")


#: Row checks of the large tables that the feature aggregation carries on DuckDB's default
#: path, as (table, column, rule): the activity relations evaluate the rule per row and the
#: per-customer aggregates count the bad rows (see ``features.build.check_aggregates``).
CARRIED_BY_AGGREGATES: tuple[tuple[str, str, Rule], ...] = (
    ("transactions", "amount", NON_FINITE),
    ("events", "count", below_minimum(EVENTS.column("count"))),
)


@dataclass(frozen=True)
class RowCheck:
    """Rows of one table that break the contract (or are left out): SQL over its typed relation.

    ``condition`` is true for a bad row; ``shown`` is the value shown as an example of one.
    """

    table: str
    column: str | None
    kind: str
    condition: str
    message: str
    shown: str

    def problem(self, n_rows: int, examples: tuple[str, ...] = ()) -> Problem:
        return Problem(self.table, self.column, n_rows, self.message, examples)

    @property
    def carried(self) -> bool:
        """Whether the feature aggregation counts these rows (see CARRIED_BY_AGGREGATES)."""
        return any((t, c, r.kind) == (self.table, self.column, self.kind)
                   for t, c, r in CARRIED_BY_AGGREGATES)


def row_checks(spec: TableSpec, columns: Collection[str],
               raw_text: Collection[str] = ()) -> list[RowCheck]:
    """The row checks of ``spec`` over a typed relation holding ``columns``.

    ``raw_text``: the columns parsed from text, whose text is kept as ``__raw_<name>``: they are
    also checked for values that do not parse, and their text is what examples show.
    """
    checks: list[RowCheck] = []
    for col in spec.columns:
        if col.name not in columns:
            continue
        q = ident(col.name)
        raw = ident(RAW_PREFIX + col.name) if col.name in raw_text else None
        found: list[tuple[str, str, str]] = []  # (kind, condition, message)
        if raw:
            found.append((
                "unparseable",
                f"{raw} IS NOT NULL AND trim(CAST({raw} AS VARCHAR)) <> '' AND {q} IS NULL",
                f"that cannot be parsed as {col.kind}",
            ))
        rules: list[tuple[Rule, str]] = []  # (rule, the value it tests)
        if not col.nullable:
            rules.append((BLANK, raw) if raw else (NULL, q))
        if col.kind == "float":
            rules.append((NON_FINITE, q))
        if col.minimum is not None:
            rules.append((below_minimum(col), q))
        if col.maximum is not None:
            rules.append((above_maximum(col), q))
        found += [(rule.kind, rule.sql(value), rule.message) for rule, value in rules]
        checks += [RowCheck(spec.name, col.name, kind, condition, message, raw or q)
                   for kind, condition, message in found]
    for start, end in spec.intervals:
        if start in columns and end in columns:
            shown = ident(RAW_PREFIX + end) if end in raw_text else ident(end)
            checks.append(RowCheck(spec.name, end, "ends_before_start",
                                   f"{ident(end)} < {ident(start)}",
                                   "that end before they start", shown))
    return checks


def _shown_date(spec: TableSpec, col: str) -> str:
    """How a dated row is shown: its date, after its key in a keyed table (``'c7: 2031-…'``)."""
    value = f"CAST({ident(col)} AS VARCHAR)"
    return f"concat(CAST({ident(spec.key)} AS VARCHAR), ': ', {value})" if spec.key else value


def future_checks(spec: TableSpec, columns: Collection[str],
                  reference_time: datetime) -> list[RowCheck]:
    """Rows dated after ``reference_time`` (reported and left out, not a contract breach)."""
    ref = f"TIMESTAMP {literal(reference_time.isoformat(sep=' '))}"
    return [
        RowCheck(spec.name, col, "future_timestamp", f"{ident(col)} > {ref}",
                 "rows dated after the data's reference time", _shown_date(spec, col))
        for col in spec.time_columns if col in columns
    ]


def implausible_checks(spec: TableSpec, columns: Collection[str]) -> list[RowCheck]:
    """Rows dated before their column's earliest plausible date (reported and left out)."""
    return [
        RowCheck(spec.name, col.name, "implausible_date",
                 f"{ident(col.name)} < DATE {literal(col.earliest.isoformat())}",
                 f"rows dated before {col.earliest}", _shown_date(spec, col.name))
        for col in spec.columns if col.earliest is not None and col.name in columns
    ]


def before_signup_sql(transactions: str = "transactions",
                      customers: str = "customers") -> tuple[str, str]:
    """(count, examples) SQL for the purchases dated before their customer's signup date."""
    join = (f"FROM {transactions} t JOIN {customers} c USING (customer_id) "
            "WHERE CAST(t.ts AS DATE) < c.signup_date")
    shown = ("concat(CAST(t.customer_id AS VARCHAR), ': bought ', CAST(t.ts AS VARCHAR), "
             "', signed up ', CAST(c.signup_date AS VARCHAR))")
    return f"SELECT count(*) {join}", f"SELECT {shown} {join} ORDER BY 1"


def unknown_customer_sql(relation: str, customers: str = "customers",
                         rows: str = "count(*)", distinct: bool = True) -> tuple[str, str]:
    """(count, examples) SQL for the rows of ``relation`` whose customer is not in
    ``customers``; ``rows`` counts them (e.g. ``sum(t.n)`` over per-customer aggregates)."""
    join = f"FROM {relation} t ANTI JOIN {customers} c USING (customer_id)"
    return (f"SELECT {rows} {join}",
            f"SELECT {'DISTINCT ' if distinct else ''}t.customer_id {join}")


def unknown_customer_problems(issues: Iterable[DataIssue]) -> list[Problem]:
    """Unknown-customer issues as contract problems (when they are not allowed)."""
    return [Problem(i.table, "customer_id", i.n_rows, UNKNOWN_CUSTOMERS, i.examples)
            for i in issues]


# ---------------------------------------------------------------------------------------------
# Running the checks on an engine


Rows = Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Engine:
    """Runs the checks' SQL (DuckDB dialect) on one engine and renders examples.

    ``query`` runs one statement and returns its rows. ``text_examples``: show example values as
    text (Spark, whose Python values of some types differ from DuckDB's).
    ``duplicate_examples``: show examples of exact duplicate and conflicting rows.
    """

    query: Callable[[str], Rows]
    text_examples: bool = False
    duplicate_examples: bool = True

    def count(self, sql: str) -> int:
        return int(self.query(sql)[0][0] or 0)

    def examples(self, sql: str) -> tuple[str, ...]:
        rows = self.query(f"{sql} LIMIT {MAX_EXAMPLES}")
        return tuple(repr(r[0]) if len(r) == 1 else repr(tuple(r)) for r in rows)

    def examples_of(self, check: RowCheck, relation: str) -> tuple[str, ...]:
        shown = f"CAST({check.shown} AS VARCHAR)" if self.text_examples else check.shown
        return self.examples(f"SELECT {shown} FROM {relation} WHERE {check.condition}")


@dataclass(frozen=True)
class TableCounts:
    """What one pass over a table's typed relation counted (:func:`count_table`)."""

    rows: int
    #: Bad rows per row check.
    bad: tuple[int, ...]
    #: Rows per check of the rows left out (dated after the reference time, implausible).
    dropped: tuple[int, ...]
    #: Rows kept whose customer is not in the customers relation (0 when none was given).
    unknown: int = 0
    #: Rows kept dated before their customer's signup date, with ``before_signup``.
    before_signup: int = 0


def count_table(engine: Engine, relation: str, checks: Sequence[RowCheck],
                dropped: Sequence[RowCheck] = (), *, customers: str | None = None,
                customer_dropped: Sequence[RowCheck] = (),
                before_signup: bool = False) -> TableCounts:
    """Every count the contract needs of one table in one pass over ``relation``: its rows,
    the bad rows of each check, the rows of each ``dropped`` check, and against the typed
    ``customers`` relation the kept rows whose customer is unknown and (``before_signup``,
    transactions) those dated before their customer's signup, where the customer is kept
    (not left out by ``customer_dropped``). An engine whose checks cannot ride along in
    another aggregation (Spark) reads each table once instead of once per check."""
    def kept(found: Sequence[RowCheck]) -> str:
        return " AND ".join(f"NOT ({c.condition})" for c in found) or "true"

    counts = [f"count(*) FILTER (WHERE {c.condition})" for c in (*checks, *dropped)]
    source = f"{relation} AS __t"
    if customers is not None:
        # One row per customer id given (known), with its signup date if the customer is kept.
        source += (f" LEFT JOIN (SELECT customer_id AS __known, max(CASE WHEN "
                   f"{kept(customer_dropped)} THEN signup_date END) AS __signup FROM "
                   f"{customers} GROUP BY customer_id) AS __c ON __t.customer_id = __c.__known")
        counts.append(f"count(*) FILTER (WHERE {kept(dropped)} AND __c.__known IS NULL)")
        if before_signup:
            counts.append(f"count(*) FILTER (WHERE {kept(dropped)} AND "
                          "CAST(__t.ts AS DATE) < __c.__signup)")
    row = [int(v or 0) for v in engine.query(
        f"SELECT count(*){''.join(', ' + c for c in counts)} FROM {source}")[0]]
    k = 1 + len(checks)
    extra = row[k + len(dropped):]
    return TableCounts(row[0], tuple(row[1:k]), tuple(row[k:k + len(dropped)]),
                       extra[0] if extra else 0, extra[1] if len(extra) > 1 else 0)


def check_problems(engine: Engine, spec: TableSpec, relation: str,
                   checks: Sequence[RowCheck], counts: TableCounts) -> list[Problem]:
    """The contract problems of a table from its counts: empty, then every check that found
    rows, with examples (read only for those)."""
    if counts.rows == 0:
        return [Problem(spec.name, None, 0, EMPTY)]
    return [check.problem(n_bad, engine.examples_of(check, relation))
            for check, n_bad in zip(checks, counts.bad, strict=True) if n_bad]


def check_rows(engine: Engine, spec: TableSpec, relation: str,
               checks: Sequence[RowCheck]) -> list[Problem]:
    """Empty table, then every check, counted in one pass over ``relation``."""
    return check_problems(engine, spec, relation, checks, count_table(engine, relation, checks))


def dropped_checks(spec: TableSpec, columns: Collection[str],
                   reference_time: datetime) -> list[RowCheck]:
    """The checks of the rows :func:`clean_table` leaves out."""
    return future_checks(spec, columns, reference_time) + implausible_checks(spec, columns)


def clean_table(engine: Engine, spec: TableSpec, relation: str, columns: Sequence[str],
                reference_time: datetime, *, dedupe: bool,
                dropped: Sequence[int] | None = None) -> tuple[str, list[DataIssue]]:
    """SQL of the clean rows of ``relation`` and the issues found on the way (``dropped``:
    the rows of each of :func:`dropped_checks`, when :func:`count_table` counted them).

    Left out and reported: rows dated after ``reference_time`` or before their column's
    earliest plausible date and, for a table with a key or when ``dedupe``, exact duplicates.
    Raises :class:`DataContractError` for rows that share a key but differ.
    """
    col_list = ", ".join(ident(c) for c in columns)
    issues: list[DataIssue] = []
    keep: list[str] = []
    checks = dropped_checks(spec, columns, reference_time)
    for k, check in enumerate(checks):
        n_future = engine.count(
            f"SELECT count(*) FROM {relation} WHERE {check.condition}") if dropped is None \
            else dropped[k]
        if n_future:
            issues.append(DataIssue(spec.name, check.kind, n_future,
                                    engine.examples_of(check, relation)))
            keep.append(f"NOT ({check.condition})")
    body = f"SELECT {col_list} FROM {relation} WHERE {' AND '.join(keep) or 'true'}"
    distinct = f"SELECT DISTINCT {col_list} FROM ({body})"
    if spec.key:
        key = ident(spec.key)
        n_rows, n_keys = engine.query(f"SELECT count(*), count(DISTINCT {key}) FROM ({body})")[0]
        if n_rows != n_keys:
            conflicting = f"SELECT {key} FROM ({distinct}) GROUP BY {key} HAVING count(*) > 1"
            n_conflicting = engine.count(f"SELECT count(*) FROM ({conflicting})")
            if n_conflicting:
                raise DataContractError([Problem(
                    spec.name, spec.key, n_conflicting, conflicting_keys(spec.key),
                    engine.examples(conflicting) if engine.duplicate_examples else ())])
            issues.append(DataIssue(spec.name, "duplicate", int(n_rows - n_keys)))
            body = distinct
    elif dedupe:
        groups = f"SELECT {col_list} FROM ({body}) GROUP BY {col_list} HAVING count(*) > 1"
        n_dup = engine.count(f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n "
                             f"FROM ({body}) GROUP BY {col_list} HAVING count(*) > 1)")
        if n_dup:
            issues.append(DataIssue(spec.name, "duplicate", n_dup, engine.examples(groups)
                                    if engine.duplicate_examples else ()))
            body = distinct
    return body, issues


def unknown_customers(engine: Engine, relations: Mapping[str, str],
                      customers: str = "customers",
                      counted: Mapping[str, int] | None = None) -> list[DataIssue]:
    """Rows of each relation (table name → relation) whose customer is not in ``customers``
    (``counted``: the numbers of the tables :func:`count_table` counted them for)."""
    issues = []
    for name, relation in relations.items():
        count_sql, examples_sql = unknown_customer_sql(relation, customers)
        n = counted[name] if counted is not None and name in counted else engine.count(
            count_sql)
        if n:
            issues.append(DataIssue(name, "unknown_customer", n, engine.examples(examples_sql)))
    return issues


def purchases_before_signup(engine: Engine, transactions: str = "transactions",
                            customers: str = "customers",
                            counted: int | None = None) -> list[DataIssue]:
    """Purchases dated before the customer signed up: reported and kept (see the module);
    ``counted``: their number, when :func:`count_table` counted it."""
    count_sql, examples_sql = before_signup_sql(transactions, customers)
    n = engine.count(count_sql) if counted is None else counted
    return [DataIssue("transactions", "before_signup", n, engine.examples(examples_sql))] if n \
        else []
