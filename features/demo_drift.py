"""Faults the retail demo generator can inject from a date on, so monitoring has something to see.

``churnguard demo-data ... --drift KIND[:TARGET[:AMOUNT]]@DATE`` (repeatable) parses into a
:class:`DriftSpec` with :func:`parse_drift`; :func:`churnguard.features.demo_data.
generate_demo_data` applies the faults and records them in ``ground_truth/drift.json``
(:func:`drift_record`). Four kinds: broken-feed and price-change change only rows,
acquisition-shift changes who the customers are, churn-rise changes how they behave:

``broken-feed[:EVENT_TYPE]``
    A pipeline fault: from DATE no ``events`` row of one type arrives. The customers behave as
    before (the latent process, every other row and the oracle are unchanged). Default
    ``web_visit``: the daily web-visit rollups carry the page count, 57 % of the summed
    ``count`` of all events (login: 24 %, with more rows that each count 1), so this feed
    drives ``events_*d`` and the interaction trends as well as its own ``web_visit_*d``.
    Measured (5000 customers, seed 7, fault 2025-07-01, features as of 2025-10-01, PSI against
    the run without it): web_visit_90d 3.0, web_visit_30d 2.4, interaction_trend_90_365 0.41,
    events_90d 0.32, events_30d 0.32.
    Complaints and support tickets are not allowed: the oracle reads them from ``events`` as
    hazard history, so hiding them would change the truth, not just the data.
``acquisition-shift[:CHANNEL_OR_REGION[:SHARE]]``
    A mix shift: from DATE a marketing push brings extra sign-ups from one channel (or region),
    on top of the unchanged flow, so that it makes up SHARE of the new customers (default
    ``social`` at 0.6; its base share is 0.15, so sign-up volume rises by ~2.1x). The extra
    customers get that channel's own effects from :class:`~churnguard.features._demo_sim.
    SimParams` (social: purchase rate x0.8, churn hazard x1.4, order value x0.9): worse
    retention arrives with the mix, not as a behaviour change. Paid-social pushes that double
    sign-ups for a quarter are an ordinary growth-team move, which is why the size. Measured
    (as above): sign-ups from the date x2.12, social 59.6 % of them; PSI tenure_days 0.08,
    purchase_trend 0.07, days_since_first_purchase 0.07, channel 0.09.
    The original customers are simulated exactly as without the fault; the extra ones are
    appended after them (ids from ``--customers`` on), so ``n_customers`` grows.
``price-change[:FACTOR]``
    Order values of orders placed from DATE are multiplied by FACTOR (default 1.4: a large
    re-pricing, or amounts switched to another currency or to VAT-inclusive, all seen in real
    feeds). Refunds follow their order. A subtle fault for PSI: spend is so skewed, and half
    the customers have none in 90 days, that x1.4 moves the means by x1.4 but PSI only
    ~0.01-0.02 (spend_90d 0.016, avg_order_value 0.012, as above); x3 gives 0.15 / 0.13.
    Purchase timing, the latent state and the oracle (no-purchase probability) are
    unchanged; ``mean_order_value`` in the ground truth stays the pre-change latent value.
``churn-rise[:SEGMENT[:FACTOR]]``
    A real behaviour change: from DATE the active -> declining hazard of every customer of one
    segment is multiplied by FACTOR (default ``smb`` x3, e.g. a competitor's SMB offer; x3 is a
    shock, not a trend: of the smb customers active at the date (5000 customers, seed 7,
    fault 2024-07-01), 46 % decline within a year without it and 75 % with it, and the
    realized 90-day no-purchase rate of smb three months on goes from 47 % to 53 %). Those
    customers decline and die sooner, so they buy and interact less and true churn rises. The
    oracle applies the same hazard step. A concept change more than a feature shift: the
    features' PSI stays below ~0.02 (overdue_ratio 0.012), so monitoring sees it through
    realized performance, not drift. Random draws after the date differ, so rows before it
    are not those of the run without it (stage paths and contacts before it are).

Without faults the generator's output is exactly what it is without this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from churnguard.features._demo_sim import CHANNELS, INTERACTIONS, REGIONS, SEGMENTS
from churnguard.features.definitions import INTERACTION_WINDOWS, PURCHASE_WINDOWS, slug

__all__ = [
    "DRIFT_KINDS",
    "DriftKind",
    "DriftSpec",
    "drift_record",
    "parse_drift",
    "validate_drifts",
]

DriftKind = Literal["broken-feed", "acquisition-shift", "price-change", "churn-rise"]
DRIFT_KINDS: tuple[DriftKind, ...] = (
    "broken-feed", "acquisition-shift", "price-change", "churn-rise")
DEFAULT_FEED = "web_visit"
DEFAULT_ACQUISITION = "social"
DEFAULT_ACQUISITION_SHARE = 0.6
DEFAULT_PRICE_FACTOR = 1.4
DEFAULT_CHURN_SEGMENT = "smb"
DEFAULT_CHURN_FACTOR = 3.0
SYNTAX = "KIND[:TARGET[:AMOUNT]]@YYYY-MM-DD"


@dataclass(frozen=True)
class DriftSpec:
    """One injected fault: ``kind`` from ``day`` on (``day`` is the first affected date).

    ``target``: the event type (broken-feed), channel or region (acquisition-shift) or segment
    (churn-rise); ``amount``: the new channel share (acquisition-shift) or the factor
    (price-change, churn-rise). ``None`` means the kind's default (see :func:`resolved`).
    """

    kind: DriftKind
    day: date
    target: str | None = None
    amount: float | None = None

    def resolved(self) -> DriftSpec:
        """This spec with the kind's defaults filled in and its arguments validated."""
        k = self.kind
        if k == "broken-feed":
            if self.amount is not None:
                raise ValueError("broken-feed takes an event type only (broken-feed:TYPE@DATE)")
            t = self.target or DEFAULT_FEED
            if t not in INTERACTIONS:
                raise ValueError(f"broken-feed: unknown event type {t!r}; valid: "
                                 f"{', '.join(INTERACTIONS)} (complaints and tickets are "
                                 "hazard history the oracle reads, so they cannot break)")
            return DriftSpec(k, self.day, t, None)
        if k == "acquisition-shift":
            t = self.target or DEFAULT_ACQUISITION
            if t not in CHANNELS and t not in REGIONS:
                raise ValueError(f"acquisition-shift: unknown channel or region {t!r}; valid: "
                                 f"{', '.join(CHANNELS + REGIONS)}")
            a = DEFAULT_ACQUISITION_SHARE if self.amount is None else self.amount
            if not 0.0 < a < 1.0:
                raise ValueError(f"acquisition-shift: the share must be in (0, 1), got {a}")
            return DriftSpec(k, self.day, t, a)
        if k == "price-change":
            if self.target is not None:
                raise ValueError("price-change takes a factor only (price-change:1.4@DATE)")
            a = DEFAULT_PRICE_FACTOR if self.amount is None else self.amount
            if not 0.0 < a <= 100.0:
                raise ValueError(f"price-change: the factor must be in (0, 100], got {a}")
            return DriftSpec(k, self.day, None, a)
        if k == "churn-rise":
            t = self.target or DEFAULT_CHURN_SEGMENT
            if t not in SEGMENTS:
                raise ValueError(f"churn-rise: unknown segment {t!r}; valid: "
                                 f"{', '.join(SEGMENTS)}")
            a = DEFAULT_CHURN_FACTOR if self.amount is None else self.amount
            if not 0.0 < a <= 100.0:
                raise ValueError(f"churn-rise: the factor must be in (0, 100], got {a}")
            return DriftSpec(k, self.day, t, a)
        raise ValueError(f"unknown drift kind {k!r}; valid: {', '.join(DRIFT_KINDS)}")

    @property
    def label(self) -> str:
        """The spec in the CLI's syntax, e.g. ``churn-rise:smb:3@2025-05-01``."""
        parts = [self.kind] + [x if isinstance(x, str) else f"{x:g}"
                               for x in (self.target, self.amount) if x is not None]
        return f"{':'.join(parts)}@{self.day.isoformat()}"


_NUMBER = re.compile(r"^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$")


def parse_drift(text: str) -> DriftSpec:
    """Parse ``KIND[:TARGET[:AMOUNT]]@YYYY-MM-DD`` (defaults filled in); ValueError if bad.

    ``price-change:1.4@…`` takes its factor as the first argument; for the other kinds a
    lone number is not a target.
    """
    raw = text.strip()
    head, sep, when = raw.rpartition("@")
    if not sep or not head:
        raise ValueError(f"--drift {text!r}: expected {SYNTAX}, e.g. broken-feed@2025-05-01")
    try:
        day = date.fromisoformat(when.strip())
    except ValueError:
        raise ValueError(f"--drift {text!r}: {when!r} is not a date like 2025-05-01") from None
    kind, *args = (p.strip() for p in head.split(":"))
    if kind not in DRIFT_KINDS:
        raise ValueError(f"--drift {text!r}: unknown kind {kind!r}; valid kinds: "
                         f"{', '.join(DRIFT_KINDS)}")
    if len(args) > 2 or any(not a for a in args):
        raise ValueError(f"--drift {text!r}: expected {SYNTAX}")
    target: str | None = None
    amount: float | None = None
    if kind == "price-change" and len(args) == 1:
        args = ["", args[0]]
    if args and args[0]:
        target = args[0]
    if len(args) == 2:
        if not _NUMBER.match(args[1]):
            raise ValueError(f"--drift {text!r}: {args[1]!r} is not a number")
        amount = float(args[1])
    try:
        return DriftSpec(kind, day, target, amount).resolved()
    except ValueError as exc:
        raise ValueError(f"--drift {text!r}: {exc}") from None


def validate_drifts(drifts: tuple[DriftSpec, ...], start: date, end: date) -> tuple[DriftSpec, ...]:
    """Resolve every spec and check it fits the period; ValueError with a clear message."""
    out = tuple(d.resolved() for d in drifts)
    for d in out:
        if not start <= d.day <= end:
            raise ValueError(f"--drift {d.label}: the date {d.day} is outside the data's "
                             f"period {start} .. {end}")
    if sum(d.kind == "acquisition-shift" for d in out) > 1:
        raise ValueError("at most one acquisition-shift per data set (a second one would not "
                         "reach its share: both add customers to the same flow)")
    return out


def _windows(prefix: str, windows: tuple[int, ...]) -> list[str]:
    return [f"{prefix}_{w}d" for w in windows]


def drift_record(d: DriftSpec, day_index: int, **observed: Any) -> dict[str, Any]:
    """The ground-truth entry of one (resolved) fault: what, from when, with which parameters,
    which tables/columns it touches and which churnguard features should move most.

    Feature names are those of :mod:`churnguard.features.definitions` for the demo's inferred
    spec (event types as slugs, customer attributes segment/region/channel by name).
    """
    rec: dict[str, Any] = {"kind": d.kind, "date": d.day.isoformat(), "day_index": day_index,
                           "spec": d.label}
    if d.kind == "broken-feed":
        et = str(d.target)
        rec |= {
            "behaviour_change": False,
            "params": {"event_type": et},
            "affects": {"events": ["event_type", "ts", "count"]},
            "description": f"no events rows with event_type {et!r} from {d.day} on (a "
                           "pipeline fault; latent behaviour and the oracle are unchanged)",
            "features_expected_to_move": [
                *_windows(slug(et), INTERACTION_WINDOWS), *_windows("events", INTERACTION_WINDOWS),
                "active_days_30d", "active_days_90d", "days_since_last_interaction",
                "interaction_trend", "interaction_trend_90_365"],
        }
    elif d.kind == "acquisition-shift":
        col = "channel" if d.target in CHANNELS else "region"
        rec |= {
            "behaviour_change": False,
            "params": {col: d.target, "share": d.amount},
            "affects": {"customers": ["signup_date", col, "customer_id"],
                        "transactions": ["rows"], "events": ["rows"], "campaigns": ["rows"]},
            "description": f"from {d.day} extra sign-ups from {col} {d.target!r}, so that it "
                           f"is {d.amount:.0%} of new customers; they get that {col}'s own "
                           "purchase, hazard and order-value effects (a mix shift)",
            "features_expected_to_move": [
                col, "tenure_days", "days_since_first_purchase", "purchase_trend",
                "interaction_trend_90_365", "orders_total", "purchase_days_total",
                "spend_total", "orders_365d", "spend_365d"],
        }
    elif d.kind == "price-change":
        rec |= {
            "behaviour_change": False,
            "params": {"factor": d.amount},
            "affects": {"transactions": ["amount"]},
            "description": f"order values x{d.amount} for orders from {d.day} on (refunds follow "
                           "their order); purchase timing, latent state and oracle unchanged",
            "features_expected_to_move": [
                "avg_order_value", *_windows("spend", PURCHASE_WINDOWS), "spend_total",
                "refund_amount_365d"],
        }
    else:
        rec |= {
            "behaviour_change": True,
            "params": {"segment": d.target, "hazard_factor": d.amount},
            "affects": {"transactions": ["rows"], "events": ["rows"], "campaigns": ["rows"],
                        "ground_truth/customers": ["decline_date", "churn_date",
                                                   "stage_at_end"],
                        "ground_truth/stage_paths": ["rows"]},
            "description": f"active -> declining hazard x{d.amount} for segment {d.target!r} "
                           f"from {d.day} on (true churn rises; the oracle applies the same "
                           "step, ground_truth/customers base_hazard is the pre-change value)",
            "features_expected_to_move": [
                "days_since_last_purchase", "overdue_ratio", "purchase_trend", "orders_30d",
                "orders_90d", "spend_30d", "spend_90d", "days_since_last_interaction",
                "interaction_trend", *_windows("events", INTERACTION_WINDOWS),
                *_windows(slug("login"), INTERACTION_WINDOWS), "active_days_30d"],
        }
    if observed:
        rec["observed"] = observed
    return rec
