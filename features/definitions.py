"""Every feature churnguard computes, defined once: name, family, type, SQL and a description.

Features are computed as of a cutoff date T from rows strictly before T, so that a feature never
sees the future it is meant to predict (README, "Features"; labels read the rows on or after T).
Each definition is a SQL expression in DuckDB's dialect over per-customer *aggregates* of two
activity relations, so the same text runs on raw rows (one cutoff) and on a customer-day rollup
(many cutoffs), and transpiles to Spark SQL with sqlglot:

- purchases ``txn``: customer_id, day, n_orders, gross, net, n_refunds, refund_amount, gap
  (days since the customer's previous purchase day; 0 for a second order on the same day);
- interactions ``evt``: customer_id, day, event_type, n.

With subscriptions, a third relation ``sub`` holds the subscription rows known at T, one per
row, with per-row columns computed for that cutoff (the current row, the current continuous
subscription, terms, plan changes: :func:`churnguard.features.build.subscription_sql`).

Windows are closed on the left, open on the right: "last 30 days" is [T − 30, T).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from churnguard.features.checks import below_minimum
from churnguard.features.contract import EVENTS
from churnguard.features.sql import ident, literal

FEATURE_SET_VERSION = "1.0"

PURCHASE_WINDOWS = (30, 90, 180, 365)
INTERACTION_WINDOWS = (7, 30, 90)
DEFAULT_COMPLAINT_TYPES = ("complaint",)
DEFAULT_TICKET_TYPES = ("support_ticket",)
MAX_EVENT_TYPES = 16

Family = Literal["purchase", "interaction", "subscription", "attribute"]
Kind = Literal["float", "int", "category"]
#: ``actionable``: the customer's behaviour or relationship, which a retention action can
#: address (listed as a churn driver); ``context``: a fact of the calendar or of who the
#: customer is, which no action changes (the model uses it like any other feature, but it is
#: never listed as a driver: README, "Scoring API").
Role = Literal["actionable", "context"]


@dataclass(frozen=True)
class Aggregate:
    """A per-customer aggregate over one activity relation (``txn``, ``evt`` or ``sub``):
    ``func(expr)`` over the rows where ``cond`` holds. ``expr`` and ``cond`` may use ``{T}``
    (the cutoff as a DATE literal) and ``{T-<n>}`` (n days before it)."""

    name: str
    relation: Literal["txn", "evt", "sub"]
    func: str
    expr: str
    cond: str | None = None

    def sql(self, past: str | None = None) -> str:
        """The aggregate as SQL, further restricted to ``past`` rows if given.

        Written ``func(CASE WHEN cond THEN expr END)`` rather than ``func(expr) FILTER (WHERE
        cond)``: the same result for every NULL-ignoring aggregate, portable, and several
        times faster in DuckDB when a query holds dozens of them.
        """
        cond = " AND ".join(c for c in (past, self.cond) if c)
        if not cond:
            return f"{self.func}({self.expr})"
        return f"{self.func}(CASE WHEN {cond} THEN {self.expr} END)"


@dataclass(frozen=True)
class Feature:
    """One model input, with the one-line description the API shows to CRM users, whether it
    is actionable or context (:data:`Role`), and what a missing value means."""

    name: str
    family: Family
    kind: Kind
    sql: str  # expression over aggregate names, population columns and {T}
    description: str
    role: Role = "actionable"
    #: What NULL means for this feature ("no purchase yet"), shown with a churn driver whose
    #: value is null; None for a feature the SQL never leaves NULL.
    null_meaning: str | None = None


@dataclass(frozen=True)
class FeatureSpec:
    """What a feature set depends on in the data, fixed when a model is trained.

    Event types are open-ended in the contract; the spec pins which ones become features (the
    most frequent, up to ``MAX_EVENT_TYPES``), so a model always sees the same columns.

    ``contract_features``: with ``subscriptions``, also the contractual features (term,
    renewals, auto-renew, discount, seats, MRR and plan changes, tenure in the plan, usage per
    active day and per seat against the customer's own earlier usage, support per seat). A
    spec saved before they existed does not have the key and loads without them, so an
    existing model keeps exactly its columns; it is stored only when set (an older spec's
    dict and fingerprint are unchanged).
    """

    event_types: tuple[str, ...]
    attribute_columns: tuple[str, ...] = ()
    subscriptions: bool = False
    complaint_types: tuple[str, ...] = DEFAULT_COMPLAINT_TYPES
    ticket_types: tuple[str, ...] = DEFAULT_TICKET_TYPES
    version: str = FEATURE_SET_VERSION
    attribute_categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    contract_features: bool = False

    def fingerprint(self) -> str:
        """A short hash of the spec: two builds with the same fingerprint have the same columns."""
        payload = json.dumps(self.to_dict(), sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        if not self.contract_features:
            del data["contract_features"]  # as specs were stored before the field existed
        return data

    @property
    def contractual(self) -> bool:
        """Whether the spec has the contractual features (see ``contract_features``)."""
        return self.subscriptions and self.contract_features

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSpec:
        def tup(key: str) -> tuple[str, ...]:
            value = data.get(key) or ()
            assert isinstance(value, list | tuple)
            return tuple(str(v) for v in value)

        cats = data.get("attribute_categories") or {}
        assert isinstance(cats, dict)
        return cls(
            event_types=tup("event_types"),
            attribute_columns=tup("attribute_columns"),
            subscriptions=bool(data.get("subscriptions", False)),
            complaint_types=tup("complaint_types") or DEFAULT_COMPLAINT_TYPES,
            ticket_types=tup("ticket_types") or DEFAULT_TICKET_TYPES,
            version=str(data.get("version", FEATURE_SET_VERSION)),
            attribute_categories={str(k): tuple(str(x) for x in v) for k, v in cats.items()},
            contract_features=bool(data.get("contract_features", False)),
        )

    def aggregates(self) -> list[Aggregate]:
        return _aggregates(self)

    def features(self) -> list[Feature]:
        return _features(self)

    def feature_names(self) -> list[str]:
        return [f.name for f in self.features()]

    def descriptions(self) -> dict[str, str]:
        return {f.name: f.description for f in self.features()}

    def roles(self) -> dict[str, Role]:
        """Each feature's :data:`Role`. Derived from the definitions, like the features
        themselves: the spec stores only what the data decides (event types, attributes), so a
        bundle saved before roles existed gets them too."""
        return {f.name: f.role for f in self.features()}

    def null_meanings(self) -> dict[str, str]:
        """What a missing value means, for every feature that can be NULL."""
        return {f.name: f.null_meaning for f in self.features() if f.null_meaning is not None}


def slug(value: str) -> str:
    """A column-name-safe form of an open-ended value such as an event type."""
    text = re.sub(r"[^0-9a-zA-Z]+", "_", value.strip().lower()).strip("_")
    return text or "blank"


def _in_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(literal(v) for v in values) + ")" if values else "(NULL)"


def _aggregates(spec: FeatureSpec) -> list[Aggregate]:
    A = Aggregate
    a: list[Aggregate] = [
        A("p_rows", "txn", "count", "1"),
        A("p_orders", "txn", "sum", "n_orders"),
        A("p_gross", "txn", "sum", "gross"),
        A("p_net", "txn", "sum", "net"),
        A("p_first_day", "txn", "min", "day", "n_orders > 0"),
        A("p_last_day", "txn", "max", "day", "n_orders > 0"),
        A("p_gap_n", "txn", "count", "gap", "gap > 0"),
        A("p_gap_mean", "txn", "avg", "gap", "gap > 0"),
        A("p_gap_std", "txn", "stddev_samp", "gap", "gap > 0"),
        A("p_dups", "txn", "sum", "dup"),
        A("p_nonfinite", "txn", "sum", "nonfinite"),
        A("p_refunds_365", "txn", "sum", "n_refunds", "day >= {T-365}"),
        A("p_refund_amount_365", "txn", "sum", "refund_amount", "day >= {T-365}"),
    ]
    for w in PURCHASE_WINDOWS:
        a.append(A(f"p_orders_{w}", "txn", "sum", "n_orders", f"day >= {{T-{w}}}"))
        a.append(A(f"p_net_{w}", "txn", "sum", "net", f"day >= {{T-{w}}}"))
    a += [
        A("e_rows", "evt", "count", "1"),
        A("e_last_day", "evt", "max", "day"),
        A("e_total_365", "evt", "sum", "n", "day >= {T-365}"),
        # Rows breaking the contract's minimum of events.count (n is the count, default 1).
        A("e_bad_count", "evt", "count", "1", below_minimum(EVENTS.column("count")).sql("n")),
        # Distinct active days as bitmaps of "days ago" (bit d-1 = active d days before T):
        # an OR of bits is far cheaper than count(DISTINCT day) and combines across rows.
        A("e_days_1_60", "evt", "bit_or",
          "CAST(1 AS BIGINT) << (date_diff('day', day, {T}) - 1)", "day >= {T-60}"),
        A("e_days_61_90", "evt", "bit_or",
          "CAST(1 AS BIGINT) << (date_diff('day', day, {T}) - 61)",
          "day >= {T-90} AND day < {T-60}"),
        A("e_complaints_365", "evt", "sum", "n", "is_complaint = 1 AND day >= {T-365}"),
        A("e_complaints_90", "evt", "sum", "n", "is_complaint = 1 AND day >= {T-90}"),
        A("e_last_complaint_day", "evt", "max", "day", "is_complaint = 1"),
        A("e_tickets_90", "evt", "sum", "n", "is_ticket = 1 AND day >= {T-90}"),
        A("e_tickets_365", "evt", "sum", "n", "is_ticket = 1 AND day >= {T-365}"),
    ]
    for w in INTERACTION_WINDOWS:
        a.append(A(f"e_total_{w}", "evt", "sum", "n", f"day >= {{T-{w}}}"))
        for code, et in enumerate(spec.event_types):
            # Event types arrive as an integer code (see event_type_code_sql): comparing ints
            # per row is much cheaper than comparing strings.
            a.append(A(f"e_{slug(et)}_{w}", "evt", "sum", "n",
                       f"type_code = {code} AND day >= {{T-{w}}}"))
    if spec.subscriptions:
        # Only what is known at T: a subscription's end date counts only once it has passed.
        active = "start_date < {T} AND (end_date IS NULL OR end_date >= {T})"
        a += [
            A("s_rows", "sub", "count", "1"),
            A("s_first_start", "sub", "min", "start_date"),
            A("s_ended", "sub", "count", "1", "end_date < {T}"),
            A("s_active", "sub", "count", "1", active),
            A("s_mrr", "sub", "sum", "mrr", active),
            A("s_plan", "sub", "max", "plan", active),
            A("s_term_start", "sub", "max", "start_date", active),
            A("s_renewal", "sub", "min", "renewal_date", f"{active} AND renewal_date >= {{T}}"),
        ]
    if spec.contractual:
        # Per-row columns of the sub relation (see features.build.subscription_sql): cur /
        # cur_90 mark the row current at T / T - 90, in_chain the rows of the current,
        # continuous subscription; every one of them is known at T.
        a += [
            A("s_term_len", "sub", "max", "term_len", "cur = 1"),
            A("s_chain_renewals", "sub", "sum", "renewals_in_row", "in_chain = 1"),
            A("s_auto_renew", "sub", "max",
              "CASE WHEN auto_renew THEN 1 WHEN NOT auto_renew THEN 0 END", "cur = 1"),
            A("s_discount", "sub", "max", "discount", "cur = 1"),
            A("s_seats", "sub", "max", "seats", "cur = 1"),
            A("s_seats_90", "sub", "max", "seats", "cur_90 = 1"),
            A("s_active_90", "sub", "count", "1", "active_90 = 1"),
            A("s_mrr_90", "sub", "sum", "mrr", "active_90 = 1"),
            A("s_plan_changes_365", "sub", "sum", "plan_change", "start_date >= {T-365}"),
            A("s_plan_since", "sub", "max", "plan_since", "cur = 1"),
            # Usage in the 90 days before the last 30: [T - 120, T - 30).
            A("e_total_30_120", "evt", "sum", "n", "day >= {T-120} AND day < {T-30}"),
            A("e_days_91_120", "evt", "bit_or",
              "CAST(1 AS BIGINT) << (date_diff('day', day, {T}) - 91)",
              "day >= {T-120} AND day < {T-90}"),
            A("e_support_90", "evt", "sum", "n",
              "(is_complaint = 1 OR is_ticket = 1) AND day >= {T-90}"),
        ]
    return a


def event_type_code_sql(spec: FeatureSpec, column: str = "event_type") -> dict[str, str]:
    """Per-row integer columns derived from the event type: its code and the complaint/ticket
    flags the aggregates filter on."""
    cases = " ".join(f"WHEN {literal(et)} THEN {i}" for i, et in enumerate(spec.event_types))
    return {
        "type_code": f"CASE {column} {cases} ELSE -1 END" if cases else "-1",
        "is_complaint": f"CASE WHEN {column} IN {_in_list(spec.complaint_types)} THEN 1 ELSE 0 END",
        "is_ticket": f"CASE WHEN {column} IN {_in_list(spec.ticket_types)} THEN 1 ELSE 0 END",
    }


def _days_since(day_sql: str) -> str:
    return f"date_diff('day', {day_sql}, {{T}})"


def _ratio(num: str, den: str) -> str:
    return f"CAST({num} AS DOUBLE) / NULLIF(CAST({den} AS DOUBLE), 0)"


#: What NULL means, shared by the features that are NULL for the same reason.
NO_PURCHASE = "no purchase yet"
NO_GAP = "fewer than two purchase days: no usual gap between purchases yet"
NO_INTERACTION = "no interaction yet"
NO_SUBSCRIPTION = "no active subscription with a renewal date"
NO_SEATS = "no active subscription, or its seats are not recorded (or zero)"
#: Distinct active days in the last 30 days, and in the 90 days before them.
_ACTIVE_DAYS_30 = f"bit_count(coalesce(e_days_1_60, 0) & {2**30 - 1})"
_ACTIVE_DAYS_31_120 = (f"(bit_count(coalesce(e_days_1_60, 0)) - {_ACTIVE_DAYS_30} "
                       "+ bit_count(coalesce(e_days_61_90, 0)) "
                       "+ bit_count(coalesce(e_days_91_120, 0)))")


def _features(spec: FeatureSpec) -> list[Feature]:
    # Roles: a feature is "context" when no retention action can change it — the calendar
    # (season_*), how long ago the customer arrived (tenure_days, days_since_first_purchase,
    # sub_tenure_days, sub_plan_tenure_days, sub_renewals), the contract's term
    # (sub_term_months) and who they are (customer attributes). Everything the customer does, or
    # that the relationship offers them, is "actionable".
    f: list[Feature] = [
        Feature("days_since_last_purchase", "purchase", "float",
                _days_since("p_last_day"), "Days since the last purchase (recency).",
                null_meaning=NO_PURCHASE),
        Feature("days_since_first_purchase", "purchase", "float",
                _days_since("p_first_day"), "Days since the first purchase.",
                role="context", null_meaning=NO_PURCHASE),
        Feature("tenure_days", "purchase", "float", _days_since("signup_date"),
                "Days since the customer signed up.", role="context"),
        Feature("orders_total", "purchase", "int", "coalesce(p_orders, 0)",
                "Orders placed before the cutoff."),
        Feature("purchase_days_total", "purchase", "int",
                "CASE WHEN p_orders > 0 THEN p_gap_n + 1 ELSE 0 END",
                "Distinct days with a purchase (same-day orders count once)."),
        Feature("spend_total", "purchase", "float", "coalesce(p_net, 0)",
                "Net spend before the cutoff (refunds subtracted)."),
        Feature("avg_order_value", "purchase", "float", _ratio("p_gross", "p_orders"),
                "Average order value.", null_meaning=NO_PURCHASE),
    ]
    for w in PURCHASE_WINDOWS:
        f.append(Feature(f"orders_{w}d", "purchase", "int", f"coalesce(p_orders_{w}, 0)",
                         f"Orders in the last {w} days."))
        f.append(Feature(f"spend_{w}d", "purchase", "float", f"coalesce(p_net_{w}, 0)",
                         f"Net spend in the last {w} days."))
    f += [
        Feature("gap_mean_days", "purchase", "float", "p_gap_mean",
                "Mean days between purchase days (the customer's usual rhythm).",
                null_meaning=NO_GAP),
        Feature("gap_std_days", "purchase", "float", "p_gap_std",
                "Standard deviation of the days between purchase days.",
                null_meaning="fewer than three purchase days: too few gaps to measure their "
                             "spread"),
        Feature("overdue_ratio", "purchase", "float",
                _ratio(_days_since("p_last_day"), "p_gap_mean"),
                "Days since the last purchase divided by the usual gap (> 1: overdue).",
                null_meaning=NO_GAP),
        Feature("purchase_trend", "purchase", "float",
                # Recent 90-day purchase rate against the rate over the last year (or the
                # customer's whole tenure if shorter): 1 = steady, < 1 = buying less.
                _ratio("coalesce(p_orders_90, 0) / 90.0",
                       "p_orders_365 / CAST(least(365, greatest(90, "
                       + _days_since("signup_date") + ")) AS DOUBLE)"),
                "Purchase rate in the last 90 days relative to the last year (1 = usual).",
                null_meaning="no order in the last 365 days"),
        # Buying is seasonal: without the time of year, a model calibrated on summer cutoffs
        # over-predicts churn ahead of the holiday peak.
        Feature("season_sin", "purchase", "float", "sin(2 * pi() * dayofyear({T}) / 365.25)",
                "Time of year of the cutoff (sine component).", role="context"),
        Feature("season_cos", "purchase", "float", "cos(2 * pi() * dayofyear({T}) / 365.25)",
                "Time of year of the cutoff (cosine component).", role="context"),
        Feature("refunds_365d", "purchase", "int", "coalesce(p_refunds_365, 0)",
                "Refunds in the last 365 days."),
        Feature("refund_amount_365d", "purchase", "float", "coalesce(p_refund_amount_365, 0)",
                "Amount refunded in the last 365 days."),
    ]
    for w in INTERACTION_WINDOWS:
        f.append(Feature(f"events_{w}d", "interaction", "int", f"coalesce(e_total_{w}, 0)",
                         f"Interactions of any type in the last {w} days."))
        for et in spec.event_types:
            f.append(Feature(f"{slug(et)}_{w}d", "interaction", "int",
                             f"coalesce(e_{slug(et)}_{w}, 0)",
                             f"'{et}' interactions in the last {w} days."))
    f += [
        Feature("active_days_30d", "interaction", "int",
                f"bit_count(coalesce(e_days_1_60, 0) & {2**30 - 1})",
                "Distinct days with any interaction in the last 30 days."),
        Feature("active_days_90d", "interaction", "int",
                "bit_count(coalesce(e_days_1_60, 0)) + bit_count(coalesce(e_days_61_90, 0))",
                "Distinct days with any interaction in the last 90 days."),
        Feature("days_since_last_interaction", "interaction", "float",
                _days_since("e_last_day"), "Days since the last interaction of any type.",
                null_meaning=NO_INTERACTION),
        Feature("interaction_trend", "interaction", "float",
                _ratio("coalesce(e_total_30, 0) / 30.0", "e_total_90 / 90.0"),
                "Interaction rate in the last 30 days relative to the last 90 (1 = usual).",
                null_meaning="no interaction in the last 90 days"),
        Feature("interaction_trend_90_365", "interaction", "float",
                _ratio("coalesce(e_total_90, 0) / 90.0",
                       "e_total_365 / CAST(least(365, greatest(90, "
                       + _days_since("signup_date") + ")) AS DOUBLE)"),
                "Interaction rate in the last 90 days relative to the last year (1 = usual).",
                null_meaning="no interaction in the last 365 days"),
        Feature("complaints_90d", "interaction", "int", "coalesce(e_complaints_90, 0)",
                "Complaints in the last 90 days."),
        Feature("complaints_365d", "interaction", "int", "coalesce(e_complaints_365, 0)",
                "Complaints in the last 365 days."),
        Feature("days_since_last_complaint", "interaction", "float",
                _days_since("e_last_complaint_day"), "Days since the last complaint.",
                null_meaning="no complaint yet"),
        Feature("tickets_90d", "interaction", "int", "coalesce(e_tickets_90, 0)",
                "Support tickets in the last 90 days."),
        Feature("tickets_365d", "interaction", "int", "coalesce(e_tickets_365, 0)",
                "Support tickets in the last 365 days."),
    ]
    if spec.subscriptions:
        f += [
            Feature("sub_active", "subscription", "int",
                    "CASE WHEN coalesce(s_active, 0) > 0 THEN 1 ELSE 0 END",
                    "Whether a subscription is active at the cutoff."),
            Feature("sub_plan", "subscription", "category", "s_plan",
                    "Plan of the active subscription.",
                    null_meaning="no active subscription (or one without a plan)"),
            Feature("sub_mrr", "subscription", "float", "coalesce(s_mrr, 0)",
                    "Monthly recurring revenue of the active subscription(s)."),
            Feature("sub_tenure_days", "subscription", "float", _days_since("s_first_start"),
                    "Days since the first subscription started.", role="context",
                    null_meaning="never subscribed"),
            Feature("sub_plan_changes", "subscription", "int",
                    "greatest(coalesce(s_rows, 0) - 1, 0)",
                    "Subscriptions started after the first (plan changes and restarts)."),
            Feature("sub_ended", "subscription", "int", "coalesce(s_ended, 0)",
                    "Subscriptions that ended before the cutoff."),
            Feature("sub_term_days", "subscription", "float",
                    "date_diff('day', s_term_start, s_renewal)",
                    "Length of the current term in days.", null_meaning=NO_SUBSCRIPTION),
            Feature("sub_days_to_renewal", "subscription", "float",
                    "date_diff('day', {T}, s_renewal)",
                    "Days until the current term ends (most contractual churn is at renewal).",
                    null_meaning=NO_SUBSCRIPTION),
        ]
    if spec.contractual:
        per_active_day_30 = f"coalesce({_ratio('e_total_30', _ACTIVE_DAYS_30)}, 0)"
        f += [
            Feature("sub_term_months", "subscription", "float", "s_term_len",
                    "Term length of the current subscription in months (1 = monthly, "
                    "12 = annual).", role="context",
                    null_meaning="no active subscription, or its term is not recorded (no "
                                 "term_months, no renewal date)"),
            Feature("sub_renewals", "subscription", "int", "coalesce(s_chain_renewals, 0)",
                    "Renewals of the current subscription: term ends it continued past, and "
                    "subscriptions that took over from one another without a gap.",
                    role="context"),
            Feature("sub_auto_renew", "subscription", "float", "s_auto_renew",
                    "Whether the current subscription renews automatically (1) or not (0).",
                    null_meaning="no active subscription, or auto-renew not recorded"),
            Feature("sub_discount", "subscription", "float", "s_discount",
                    "Discount of the current subscription (fraction off the list price).",
                    null_meaning="no active subscription, or its discount is not recorded"),
            Feature("sub_mrr_change_90d", "subscription", "float",
                    "CASE WHEN coalesce(s_active_90, 0) > 0 "
                    "THEN coalesce(s_mrr, 0) - coalesce(s_mrr_90, 0) END",
                    "MRR now minus MRR 90 days before (< 0: downgraded or cancelled).",
                    null_meaning="no subscription active 90 days before the cutoff"),
            Feature("sub_plan_changes_365d", "subscription", "int",
                    "coalesce(s_plan_changes_365, 0)",
                    "Subscriptions started in the last 365 days on a different plan than the "
                    "one before."),
            Feature("sub_seats", "subscription", "float", "s_seats",
                    "Seats of the current subscription.",
                    null_meaning="no active subscription, or its seats are not recorded"),
            Feature("sub_seats_change_90d", "subscription", "float", "s_seats - s_seats_90",
                    "Seats now minus seats 90 days before.",
                    null_meaning="no subscription now or 90 days before the cutoff, or seats "
                                 "not recorded"),
            Feature("sub_plan_tenure_days", "subscription", "float",
                    _days_since("s_plan_since"),
                    "Days on the current plan (since the plan of the current subscription "
                    "started).", role="context", null_meaning="no active subscription"),
            Feature("usage_per_active_day_30d", "interaction", "float", per_active_day_30,
                    "Interactions per active day in the last 30 days (0: no activity)."),
            Feature("usage_per_active_day_trend", "interaction", "float",
                    _ratio(per_active_day_30, _ratio("e_total_30_120", _ACTIVE_DAYS_31_120)),
                    "Interactions per active day in the last 30 days relative to the 90 days "
                    "before (1 = usual, < 1: declining use).",
                    null_meaning="no interaction in the 90 days before the last 30"),
            Feature("usage_per_seat_30d", "interaction", "float",
                    _ratio("coalesce(e_total_30, 0)", "s_seats"),
                    "Interactions per seat in the last 30 days.", null_meaning=NO_SEATS),
            Feature("usage_per_seat_trend", "interaction", "float",
                    _ratio(_ratio("coalesce(e_total_30, 0) / 30.0", "s_seats"),
                           _ratio("e_total_30_120 / 90.0", "s_seats_90")),
                    "Daily interactions per seat in the last 30 days relative to the 90 days "
                    "before (1 = usual, < 1: declining use).",
                    null_meaning="no interaction in the 90 days before the last 30, or seats "
                                 "not recorded now or 90 days before"),
            Feature("support_per_seat_90d", "interaction", "float",
                    _ratio("coalesce(e_support_90, 0)", "s_seats"),
                    "Support tickets and complaints per seat in the last 90 days.",
                    null_meaning=NO_SEATS),
        ]
    for col in spec.attribute_columns:
        f.append(Feature(col, "attribute", "category", f"CAST({ident(col)} AS VARCHAR)",
                         f"Customer attribute '{col}'.", role="context",
                         null_meaning="not recorded, or a value the model was not trained on"))
    return f


def feature_catalog(spec: FeatureSpec) -> list[dict[str, str]]:
    """Name, family, type, description and role (:data:`Role`) of every feature, for docs and
    the API, and what a missing value means (``null_meaning``) for those that can be NULL."""
    return [
        {"name": f.name, "family": f.family, "kind": f.kind, "description": f.description,
         "role": f.role, **({"null_meaning": f.null_meaning} if f.null_meaning else {})}
        for f in spec.features()
    ]
