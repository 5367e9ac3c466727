"""The input data contract: which tables and columns churnguard reads, and their types.

A source holds the tables below (README, "Data contract"). Column names are fixed; extra
columns are allowed and ignored. The contract is the single place that names them: loading,
validation (:mod:`churnguard.features.checks` derives every row check from these specs) and the
feature SQL all read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

ColumnKind = Literal["string", "date", "timestamp", "float", "int", "bool"]

# DuckDB type each contract kind is cast to; also the type the typed views expose.
DUCKDB_TYPES: dict[ColumnKind, str] = {
    "string": "VARCHAR",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "float": "DOUBLE",
    "int": "BIGINT",
    "bool": "BOOLEAN",
}

# The same for Spark SQL (timestamps without a time zone, as in DuckDB).
SPARK_TYPES: dict[ColumnKind, str] = {
    "string": "STRING",
    "date": "DATE",
    "timestamp": "TIMESTAMP_NTZ",
    "float": "DOUBLE",
    "int": "BIGINT",
    "bool": "BOOLEAN",
}


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: ColumnKind
    required: bool = True
    nullable: bool = False
    description: str = ""
    # Smallest allowed value of a number column (None: any); smaller values break the contract.
    minimum: int | None = None
    # Largest allowed value of a number column (None: any); larger values break the contract.
    maximum: int | None = None
    # Earliest plausible value of a date column (None: any): earlier dates are placeholders
    # (1899-12-30 is a spreadsheet's day zero), reported and left out with their rows.
    earliest: date | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[ColumnSpec, ...]
    required: bool
    description: str
    # Columns holding the event time; rows dated after the data's reference time are reported
    # and left out (a customer left out takes its rows in the other tables with it).
    time_columns: tuple[str, ...] = ()
    # (start, end) column pairs: a row that ends before it starts breaks the contract.
    intervals: tuple[tuple[str, str], ...] = ()
    # A column that identifies a row: rows with the same key and different values break the
    # contract; exact duplicates are reported and left out.
    key: str | None = None
    # Big enough that a full extra scan per build matters: the default load leaves their value
    # checks, exact duplicates and unknown customers to the feature aggregation.
    large: bool = False

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name!r} has no contract column {name!r}")


# Dates before this are not plausible signups (README, "Data contract").
EARLIEST_DATE = date(1900, 1, 1)

CUSTOMERS = TableSpec(
    name="customers",
    required=True,
    description="One row per customer.",
    key="customer_id",
    # A customer who signs up after the reference time is a future row.
    time_columns=("signup_date",),
    columns=(
        ColumnSpec("customer_id", "string", description="Customer key, unique."),
        ColumnSpec("signup_date", "date", description="Date the customer joined.",
                   earliest=EARLIEST_DATE),
    ),
)

TRANSACTIONS = TableSpec(
    name="transactions",
    required=True,
    description="Purchases; negative amounts are refunds.",
    time_columns=("ts",),
    large=True,
    columns=(
        ColumnSpec("customer_id", "string"),
        ColumnSpec("ts", "timestamp", description="When the purchase happened."),
        ColumnSpec("amount", "float", description="Order value; negative for refunds."),
        ColumnSpec("order_id", "string", required=False, nullable=True),
        ColumnSpec("quantity", "int", required=False, nullable=True),
    ),
)

EVENTS = TableSpec(
    name="events",
    # Purchase-only businesses (e.g. the CDNOW benchmark) have no interaction log; without the
    # table every interaction feature is simply zero.
    required=False,
    description="Interactions: logins, email opens/clicks, visits, support tickets, complaints.",
    time_columns=("ts",),
    large=True,
    columns=(
        ColumnSpec("customer_id", "string"),
        ColumnSpec("ts", "timestamp"),
        ColumnSpec("event_type", "string", description="Open-ended, e.g. login, complaint."),
        ColumnSpec("channel", "string", required=False, nullable=True),
        ColumnSpec(
            "count",
            "int",
            required=False,
            nullable=True,
            description="Pre-aggregated activity (e.g. daily rollups); missing means 1.",
            minimum=1,
        ),
    ),
)

SUBSCRIPTIONS = TableSpec(
    name="subscriptions",
    required=False,
    description="Contractual businesses: churn = the subscription ends and none follows.",
    time_columns=("start_date",),
    intervals=(("start_date", "end_date"),),
    columns=(
        ColumnSpec("customer_id", "string"),
        ColumnSpec("start_date", "date"),
        ColumnSpec("end_date", "date", nullable=True, description="Null while active."),
        ColumnSpec("plan", "string", required=False, nullable=True),
        ColumnSpec("mrr", "float", required=False, nullable=True),
        ColumnSpec(
            "renewal_date",
            "date",
            required=False,
            nullable=True,
            description="Scheduled end of the current term, known when the term starts.",
        ),
        ColumnSpec("seats", "float", required=False, nullable=True, minimum=0,
                   description="Licensed seats (users) of the subscription."),
        ColumnSpec("discount", "float", required=False, nullable=True, minimum=0, maximum=1,
                   description="Discount off the list price, as a fraction (0.2 = 20 % off)."),
        ColumnSpec("auto_renew", "bool", required=False, nullable=True,
                   description="Whether the term renews unless the customer cancels."),
        ColumnSpec("term_months", "int", required=False, nullable=True, minimum=1,
                   description="Length of one term in months (1 = monthly, 12 = annual)."),
    ),
)

CAMPAIGNS = TableSpec(
    name="campaigns",
    required=False,
    description="Past retention contacts, including randomised hold-outs.",
    time_columns=("ts",),
    columns=(
        ColumnSpec("customer_id", "string"),
        ColumnSpec("ts", "timestamp"),
        ColumnSpec("action_id", "string"),
        ColumnSpec("treated", "bool"),
    ),
)

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (CUSTOMERS, TRANSACTIONS, EVENTS, SUBSCRIPTIONS, CAMPAIGNS)
}
