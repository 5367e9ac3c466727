"""Synthetic CRM demo data with a known data-generating process, ground truth and an oracle.

The generator simulates customers of an online retailer as a continuous-time latent process
(see :mod:`churnguard.features._demo_sim` for the mechanics):

* heterogeneity in the spirit of BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers
  the easy way", Marketing Science 24(2)): Gamma-distributed purchase rates and churn hazards,
  scaled by segment/region/channel effects; order values from the Gamma-Gamma spend model
  (Fader, Hardie & Lee 2005, "RFM and CLV", JMR 42(4));
* three latent stages active -> declining -> dead; complaints and support tickets raise the
  active->declining hazard; while declining, interactions fall faster than purchases (the
  "degradation period"); dead customers only open the odd marketing email;
* monthly retention campaigns target customers by rules a retention team would use, with an
  80/20 randomised hold-out, and have a known heterogeneous effect.

:func:`oracle_churn_probability` re-simulates the future from the latent state at a cutoff
with the same code, giving the true probability of no purchase in a horizon: the ceiling any
churn model on this data can reach.

With ``subscriptions=True`` the generator simulates a different business instead: a B2B SaaS
company with contractual churn (monthly, six-month and annual terms, one subscriptions row per
term, renewal-driven cancellations, late payments, win-backs, seats, plan changes, discounts,
invoices as transactions, daily usage rollups as events, renewal campaigns), driven by a
latent weekly account health; :func:`contractual_oracle` is its oracle (see the section
"Contractual demo" below and the README the generator writes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churnguard.features import _demo_sim as sim
from churnguard.features._demo_sim import (
    ACTIONS,
    CHANNELS,
    DEAD,
    INTERACTIONS,
    REGIONS,
    SECONDS_PER_DAY,
    SEGMENTS,
    STAGES,
    Latent,
    SimParams,
    StartState,
)
from churnguard.features.contract import TABLES
from churnguard.features.demo_drift import DriftSpec, drift_record, parse_drift, validate_drifts
from churnguard.features.io import atomic_output

__all__ = [
    "DemoSummary",
    "DriftSpec",
    "SaasParams",
    "contractual_oracle",
    "generate_demo_data",
    "oracle_churn_probability",
    "read_drift",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
EVENT_TYPES = ("login", "email_open", "email_click", "web_visit", "support_ticket", "complaint")
EVENT_CHANNELS = ("web", "app", "email", "phone")
PLANS = ("basic", "plus", "pro")
PLAN_PRICE = (19.0, 49.0, 99.0)


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate_demo_data` wrote."""

    out_dir: Path
    n_customers: int
    n_transactions: int
    n_events: int
    n_campaign_contacts: int
    n_subscriptions: int
    start: date
    end: date
    seed: int
    seconds: float
    # Optional tables not written because the period has no rows for them (e.g. campaigns,
    # which start some months into the data): the contract reads a missing optional table as
    # "none", and rejects an empty file (README, "Data contract").
    omitted: tuple[str, ...] = ()
    # Faults injected from a date on (``drift=``; recorded in ground_truth/drift.json).
    drift: tuple[DriftSpec, ...] = ()
    # Of n_customers, the extra sign-ups an acquisition-shift added (ids after the others).
    n_extra_customers: int = 0


# ---------------------------------------------------------------------------------------------
# Schemas (the data contract)

TS = pa.timestamp("s")
GT_TS = pa.timestamp("us")
SCHEMAS: dict[str, pa.Schema] = {
    "customers": pa.schema(
        [
            ("customer_id", pa.string()),
            ("signup_date", pa.date32()),
            ("segment", pa.string()),
            ("region", pa.string()),
            ("channel", pa.string()),
        ]
    ),
    "transactions": pa.schema(
        [
            ("customer_id", pa.string()),
            ("ts", TS),
            ("amount", pa.float64()),
            ("order_id", pa.string()),
            ("quantity", pa.int64()),
        ]
    ),
    "events": pa.schema(
        [
            ("customer_id", pa.string()),
            ("ts", TS),
            ("event_type", pa.string()),
            ("channel", pa.string()),
            ("count", pa.int64()),
        ]
    ),
    "campaigns": pa.schema(
        [
            ("customer_id", pa.string()),
            ("ts", TS),
            ("action_id", pa.string()),
            ("treated", pa.bool_()),
        ]
    ),
    "gt_customers": pa.schema(
        [
            ("customer_id", pa.string()),
            ("signup_ts", GT_TS),
            ("signup_day", pa.float64()),
            ("segment", pa.string()),
            ("region", pa.string()),
            ("channel", pa.string()),
            ("purchase_rate", pa.float64()),
            ("base_hazard", pa.float64()),
            ("mean_order_value", pa.float64()),
            ("daily_value", pa.float64()),
            ("friction", pa.float64()),
            ("complaint_rate", pa.float64()),
            ("ticket_rate", pa.float64()),
            *[(f"{s}_rate", pa.float64()) for s in INTERACTIONS],
            ("decline_date", pa.date32()),
            ("churn_date", pa.date32()),
            ("decline_ts", GT_TS),
            ("churn_ts", GT_TS),
            ("stage_at_end", pa.string()),
        ]
    ),
    "gt_stage_paths": pa.schema(
        [
            ("customer_id", pa.string()),
            ("stage", pa.string()),
            ("start_ts", GT_TS),
            ("end_ts", GT_TS),
            ("start_day", pa.float64()),
            ("end_day", pa.float64()),
        ]
    ),
    "gt_campaigns": pa.schema(
        [
            ("customer_id", pa.string()),
            ("ts", TS),
            ("t_day", pa.float64()),
            ("action_id", pa.string()),
            ("treated", pa.bool_()),
            ("stage_at_contact", pa.string()),
            ("hazard_multiplier", pa.float64()),
            ("revert_prob", pa.float64()),
            ("reverted", pa.bool_()),
        ]
    ),
}
GT_FILES = {
    "gt_customers": "customers",
    "gt_stage_paths": "stage_paths",
    "gt_campaigns": "campaigns",
}


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    return [
        f.name
        for f in schema
        if f.name in {"customer_id", "segment", "region", "channel", "event_type", "action_id",
                      "plan", "stage", "stage_at_contact", "stage_at_end", "industry", "regime",
                      "outcome", "kind", "end_reason", "status_at_end"}
    ]


class _TableWriter:
    """Streams chunks of one table to Parquet row groups or CSV."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str) -> None:
        self.path, self.schema, self.fmt = path, schema, fmt
        self.rows = 0
        self._pq: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        if fmt == "parquet":
            self._pq = pq.ParquetWriter(
                path, schema, use_dictionary=_dictionary_columns(schema), compression="zstd"
            )
        else:
            csv_schema = pa.schema(
                [pa.field(f.name, pa.string()) if pa.types.is_timestamp(f.type) else f
                 for f in schema]
            )
            self._csv = pacsv.CSVWriter(path, csv_schema)

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        self.rows += table.num_rows
        if self._pq is not None:
            self._pq.write_table(table)
        elif self._csv is not None:
            cols = [
                pc.strftime(c, format="%Y-%m-%dT%H:%M:%S") if pa.types.is_timestamp(c.type) else c
                for c in table.columns
            ]
            self._csv.write_table(pa.Table.from_arrays(cols, names=table.column_names))

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._csv is not None:
            self._csv.close()


# ---------------------------------------------------------------------------------------------
# Generation


def _validate(
    out_dir: Path, n_customers: int, seed: int, start: date, end: date, fmt: str
) -> None:
    if not isinstance(n_customers, int) or n_customers < 1:
        raise ValueError(f"n_customers must be a positive integer, got {n_customers!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(start, date) or not isinstance(end, date):
        raise ValueError("start and end must be datetime.date values")
    if (end - start).days < 30:
        raise ValueError(f"end ({end}) must be at least 30 days after start ({start})")
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"out_dir {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()):
            raise ValueError(f"out_dir {out_dir} exists and is not empty; refusing to overwrite")


def _draw_signups(rng: np.random.Generator, n: int, start: date, end: date, p: SimParams) -> Any:
    """Sorted signup times (days since start, on the seconds grid) across [start, end)."""
    n_days = (end - start).days
    days = np.arange(n_days)
    dt = np.datetime64(start, "D") + days
    doy = (dt - dt.astype("datetime64[Y]")).astype(np.int64)
    weekday = (dt.astype(np.int64) + 3) % 7  # 0 = Monday
    w = (
        np.exp(p.acquisition_growth_per_year * days / 365.25)
        * (1.0 + p.acquisition_seasonality * np.cos(2 * np.pi * (doy - 10) / 365.25))
        * np.where(weekday >= 5, 0.8, 1.0)
    )
    day = rng.choice(n_days, n, p=w / w.sum())
    t = sim.to_seconds_grid(day + rng.uniform(0.25, 0.9, n))
    return np.sort(t)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    s = pc.utf8_lpad(pa.array(numbers, pa.int64()).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, s, "")


def _ts(start_s: int, t: np.ndarray, t_end: float) -> pa.Array:
    secs = np.floor(np.asarray(t) * SECONDS_PER_DAY + 1e-6).astype(np.int64)
    secs = np.minimum(secs, round(t_end * SECONDS_PER_DAY) - 1)
    return pa.array(secs + start_s, TS)


def _gt_ts(start_s: int, t: np.ndarray) -> pa.Array:
    t = np.asarray(t, dtype=np.float64)
    fin = np.isfinite(t)
    us = np.where(fin, np.round(t * SECONDS_PER_DAY * 1e6), 0).astype(np.int64) + start_s * 10**6
    return pa.array(us, GT_TS, mask=~fin)


def _dates(start: date, t: np.ndarray) -> pa.Array:
    t = np.asarray(t, dtype=np.float64)
    fin = np.isfinite(t)
    d = np.where(fin, np.floor(t), 0).astype(np.int64) + (start - date(1970, 1, 1)).days
    return pa.array(d.astype(np.int32), pa.date32(), mask=~fin)


def _names(names: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pc.take(pa.array(names, pa.string()), pa.array(np.asarray(codes, np.int64)))


def _from_day(t: np.ndarray, day: int) -> np.ndarray:
    """Whether times ``t`` (days since start) are stored (by :func:`_ts`) on or after ``day``."""
    return np.floor(np.asarray(t) * SECONDS_PER_DAY + 1e-6) >= day * SECONDS_PER_DAY


def _churn_rise_breakpoints(
    lat: Latent, drifts: tuple[DriftSpec, ...], start: date
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-hazard steps of the churn-rise faults: (customer, day, log factor), permanent."""
    parts = []
    for d in drifts:
        if d.kind == "churn-rise":
            i = np.flatnonzero(lat.segment == SEGMENTS.index(str(d.target)))
            day = float((d.day - start).days)
            parts.append((i, np.full(len(i), day), np.full(len(i), np.log(float(d.amount or 1)))))
    if not parts:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def _simulate_chunk(
    rng: np.random.Generator,
    signup: np.ndarray,
    first_number: int,
    id_width: int,
    order_offset: int,
    start: date,
    end: date,
    params: SimParams,
    season: np.ndarray,
    drifts: tuple[DriftSpec, ...] = (),
    region: int | None = None,
    channel: int | None = None,
) -> dict[str, pa.Table]:
    n = len(signup)
    t_end_f = float((end - start).days + 1)
    start_s = (start - date(1970, 1, 1)).days * SECONDS_PER_DAY
    lat = sim.draw_latent(rng, signup, params, region=region, channel=channel)
    t_end = np.full(n, t_end_f)
    camps = sim.campaign_times(start, 0.0, t_end_f, params)
    state = StartState.fresh(signup)
    hz_i, hz_t, hz_d = _churn_rise_breakpoints(lat, drifts, start)
    if len(hz_i):
        # Known from the start like any breakpoint: from_t the hazard steps up for good.
        state = dataclasses.replace(state, hz_i=hz_i, hz_t=hz_t, hz_d=hz_d)
    res = sim.simulate_forward(rng, lat, state, t_end, camps, params)
    ids = _ids("C", np.arange(first_number, first_number + n), id_width)

    # --- transactions: signup-day first purchase + latent Poisson purchases, then refunds.
    fp = rng.random(n) < params.first_purchase_prob
    fp_i = np.flatnonzero(fp)
    day_left = np.floor(signup[fp_i]) + 1.0 - signup[fp_i]
    fp_t = signup[fp_i] + rng.random(len(fp_i)) * np.minimum(day_left, 1.0 / 12.0)
    pi, pt = sim.sample_purchases(rng, lat, res, season, params)
    pi = np.concatenate([fp_i, pi])
    pt = np.concatenate([fp_t, pt])
    o = np.lexsort((pt, pi))
    pi, pt = pi[o], pt[o]
    po = params.order_value_p
    amount = np.maximum(np.round(rng.gamma(po, lat.mean_order_value[pi] / po), 2), 0.5)
    for d in drifts:  # price-change: the same orders, at new prices (refunds follow below)
        if d.kind == "price-change":
            up = _from_day(pt, (d.day - start).days)
            amount[up] = np.maximum(np.round(amount[up] * float(d.amount or 1), 2), 0.01)
    extra = params.items_per_order_extra * np.where(
        lat.segment[pi] == SEGMENTS.index("enterprise"), 4.0, 1.0
    )
    qty = 1 + rng.poisson(extra)
    order_no = order_offset + np.arange(len(pi))
    order_ids = _ids("O", order_no, 10)
    rf = np.flatnonzero(rng.random(len(pi)) < params.refund_prob)
    lo, hi = params.refund_delay_days
    rt = pt[rf] + rng.uniform(lo, hi, len(rf))
    ok = rt < t_end_f
    rf, rt = rf[ok], rt[ok]
    units = 1 + np.floor(rng.random(len(rf)) * qty[rf]).astype(np.int64)
    rf_amount = -np.round(amount[rf] * units / qty[rf], 2)
    tx_i = np.concatenate([pi, pi[rf]])
    tx_t = np.concatenate([pt, rt])
    tx = pa.table(
        {
            "customer_id": pc.take(ids, pa.array(tx_i)),
            "ts": _ts(start_s, tx_t, t_end_f),
            "amount": np.concatenate([amount, rf_amount]),
            "order_id": pa.concat_arrays(
                [order_ids, pc.binary_join_element_wise(pc.take(order_ids, pa.array(rf)), "-R", "")]
            ),
            "quantity": np.concatenate([qty, -units]),
        }
    )
    o = np.lexsort((tx_t, tx_i))
    tx = tx.take(pa.array(o))

    # --- events: interactions from the stage path, web visits rolled up per day.
    ei, et, es = sim.sample_interactions(rng, lat, res, params)
    wv = es == INTERACTIONS.index("web_visit")
    vi, vt = ei[wv], et[wv]
    pages = 1 + rng.poisson(params.pages_per_visit - 1.0, len(vi))
    key = vi * (int(t_end_f) + 1) + np.floor(vt).astype(np.int64)
    o = np.lexsort((vt, key))
    key, vi, vt, pages = key[o], vi[o], vt[o], pages[o]
    _, first_idx = np.unique(key, return_index=True)
    vcount = np.add.reduceat(pages, first_idx) if len(first_idx) else pages[:0]
    vi, vt = vi[first_idx], vt[first_idx]
    other = ~wv
    n_tick, n_comp = len(res.tick_i), len(res.compl_i)
    ev_i = np.concatenate([ei[other], vi, res.tick_i, res.compl_i])
    ev_t = np.concatenate([et[other], vt, res.tick_t, res.compl_t])
    ev_type = np.concatenate(
        [
            es[other],
            np.full(len(vi), EVENT_TYPES.index("web_visit")),
            np.full(n_tick, EVENT_TYPES.index("support_ticket")),
            np.full(n_comp, EVENT_TYPES.index("complaint")),
        ]
    )
    ev_count = np.concatenate([np.ones(int(other.sum()), np.int64), vcount,
                               np.ones(n_tick + n_comp, np.int64)])
    u = rng.random(len(ev_i))
    web, app, email, phone = (EVENT_CHANNELS.index(c) for c in EVENT_CHANNELS)
    ev_ch = np.select(
        [
            ev_type == EVENT_TYPES.index("login"),
            (ev_type == EVENT_TYPES.index("email_open"))
            | (ev_type == EVENT_TYPES.index("email_click")),
            ev_type == EVENT_TYPES.index("web_visit"),
            ev_type == EVENT_TYPES.index("support_ticket"),
        ],
        [
            np.where(u < 0.55, app, web),
            np.full(len(u), email),
            np.full(len(u), web),
            np.where(u < 0.4, phone, np.where(u < 0.75, email, web)),
        ],
        default=np.where(u < 0.6, phone, email),
    )
    for d in drifts:  # broken-feed: the rows of one type stop arriving (behaviour unchanged)
        if d.kind == "broken-feed":
            gone = (ev_type == EVENT_TYPES.index(str(d.target))) & _from_day(
                ev_t, (d.day - start).days)
            ev_i, ev_t, ev_type, ev_count, ev_ch = (
                x[~gone] for x in (ev_i, ev_t, ev_type, ev_count, ev_ch))
    o = np.lexsort((ev_type, ev_t, ev_i))
    events = pa.table(
        {
            "customer_id": pc.take(ids, pa.array(ev_i[o])),
            "ts": _ts(start_s, ev_t[o], t_end_f),
            "event_type": _names(EVENT_TYPES, ev_type[o]),
            "channel": _names(EVENT_CHANNELS, ev_ch[o]),
            "count": ev_count[o],
        }
    )

    # --- campaigns (public and with their true effect).
    o = np.lexsort((res.contact_t, res.contact_i))
    c_ids = pc.take(ids, pa.array(res.contact_i[o]))
    campaigns = pa.table(
        {
            "customer_id": c_ids,
            "ts": _ts(start_s, res.contact_t[o], t_end_f),
            "action_id": _names(ACTIONS, res.contact_action[o]),
            "treated": res.contact_treated[o],
        }
    )
    gt_campaigns = campaigns.append_column("t_day", pa.array(res.contact_t[o]))
    gt_campaigns = gt_campaigns.append_column(
        "stage_at_contact", _names(STAGES, res.contact_stage[o])
    )
    gt_campaigns = gt_campaigns.append_column("hazard_multiplier", pa.array(res.contact_mult[o]))
    gt_campaigns = gt_campaigns.append_column("revert_prob", pa.array(res.contact_revert_prob[o]))
    gt_campaigns = gt_campaigns.append_column("reverted", pa.array(res.contact_reverted[o]))

    # --- customers and ground truth.
    customers = pa.table(
        {
            "customer_id": ids,
            "signup_date": _dates(start, signup),
            "segment": _names(SEGMENTS, lat.segment),
            "region": _names(REGIONS, lat.region),
            "channel": _names(CHANNELS, lat.channel),
        }
    )
    decl = np.where(res.final_decline < t_end_f, res.final_decline, np.inf)
    death = np.where(res.final_death < t_end_f, res.final_death, np.inf)
    stage_end = np.where(np.isfinite(death), DEAD, np.where(np.isfinite(decl), 1, 0))
    gt_cols: dict[str, Any] = {
        "customer_id": ids,
        "signup_ts": _gt_ts(start_s, signup),
        "signup_day": signup,
        "segment": customers["segment"],
        "region": customers["region"],
        "channel": customers["channel"],
        "purchase_rate": lat.purchase_rate,
        "base_hazard": np.exp(lat.log_hazard),
        "mean_order_value": lat.mean_order_value,
        "daily_value": lat.daily_value,
        "friction": lat.friction,
        "complaint_rate": lat.complaint_rate,
        "ticket_rate": lat.ticket_rate,
    }
    for k, s in enumerate(INTERACTIONS):
        gt_cols[f"{s}_rate"] = lat.interaction_rates[:, k]
    gt_cols |= {
        "decline_date": _dates(start, decl),
        "churn_date": _dates(start, death),
        "decline_ts": _gt_ts(start_s, decl),
        "churn_ts": _gt_ts(start_s, death),
        "stage_at_end": _names(STAGES, stage_end),
    }
    paths = pa.table(
        {
            "customer_id": pc.take(ids, pa.array(res.seg_i)),
            "stage": _names(STAGES, res.seg_stage),
            "start_ts": _gt_ts(start_s, res.seg_from),
            "end_ts": _gt_ts(start_s, res.seg_to),
            "start_day": res.seg_from,
            "end_day": res.seg_to,
        }
    )
    out = {
        "customers": customers,
        "transactions": tx,
        "events": events,
        "campaigns": campaigns,
        "gt_customers": pa.table(gt_cols),
        "gt_stage_paths": paths,
        "gt_campaigns": gt_campaigns,
    }
    return out


def _add_months(d: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Calendar month arithmetic on datetime64[D], clipping to the month's last day."""
    m = d.astype("datetime64[M]")
    dom = (d - m.astype("datetime64[D]")).astype(np.int64)
    target = m + months
    dim = ((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(np.int64)
    return target.astype("datetime64[D]") + np.minimum(dom, dim - 1)


def _readme(summary: DemoSummary, fmt: str) -> str:
    ext = fmt
    omitted = "".join(
        f"\nNot written: `{k}.{ext}` (no rows in this period; a missing optional table means "
        "none, an empty file would break the data contract).\n" for k in summary.omitted)
    return f"""# churnguard synthetic CRM demo data

Generated by `churnguard.features.demo_data` v{GENERATOR_VERSION}: {summary.n_customers} customers,
{summary.start} .. {summary.end}, seed {summary.seed}. Timestamps are naive UTC, second resolution.

## Tables
- `customers.{ext}`: customer_id, signup_date, segment, region, channel (acquisition).
- `transactions.{ext}`: customer_id, ts, amount, order_id, quantity. Refunds are separate rows
  with negative amount and quantity and order_id `<order>-R`, a few days after ~2.5% of orders.
- `events.{ext}`: customer_id, ts, event_type (login, email_open, email_click, web_visit,
  support_ticket, complaint), channel (web/app/email/phone), count (pages for daily web_visit
  rollups, else 1).
- `campaigns.{ext}`: customer_id, ts, action_id, treated. Monthly retention contacts; customers
  are targeted by rules on their (latent) state, and within the targeted set treatment is
  randomised ({100 * SimParams().treated_share:.0f}% treated, the rest a hold-out).
{omitted}
## Ground truth (`ground_truth/`, always Parquet)
- `customers.parquet`: latent purchase rate per day, base hazard per day (active -> declining),
  mean order value, complaint/ticket/interaction rates, final decline/churn dates, stage at end.
- `stage_paths.parquet`: each customer's latent stage spells (active/declining/dead).
- `campaigns.parquet`: every contact with its true hazard multiplier and revert probability.
- `segment_effects.json`, `params.json`: every generator parameter.

## Process
Stages active -> declining -> dead (continuous-time Markov). The active -> declining hazard is
`base_hazard * exp(beta_c * complaints in last 180 days + beta_t * tickets in last 90 days)`
times the multipliers of treated contacts in their effect window. Declining lasts
Exp(mean {SimParams().declining_mean_days:.0f} days); during it interactions fall to 25-50% and
purchases to 50%. Dead customers make no purchases and only open the odd marketing email.
`churnguard.features.demo_data.oracle_churn_probability` gives the true no-purchase probability.
{_readme_drift(summary)}"""


def _readme_drift(summary: DemoSummary) -> str:
    """The README's section on injected faults (empty without any: the README is unchanged)."""
    if not summary.drift:
        return ""
    lines = [f"- `{d.label}`: {drift_record(d, 0)['description']}." for d in summary.drift]
    extra = (f"\n{summary.n_extra_customers} of the {summary.n_customers} customers are the extra "
             "sign-ups of the acquisition shift (the last ids).\n"
             if summary.n_extra_customers else "")
    return ("\n## Injected faults (`ground_truth/drift.json`)\n"
            "From each date on (inclusive); `drift.json` lists per fault its parameters, the "
            "tables and columns it touches and the features expected to move most.\n"
            + "\n".join(lines) + "\n" + extra)


def generate_demo_data(
    out_dir: Path,
    *,
    n_customers: int = 10_000,
    seed: int = 0,
    start: date = date(2023, 1, 1),
    end: date = date(2025, 12, 31),
    subscriptions: bool = False,
    fmt: Literal["parquet", "csv"] = "parquet",
    progress: Callable[[int, int], None] | None = None,
    drift: Sequence[DriftSpec] = (),
) -> DemoSummary:
    """Generate the synthetic CRM data set with ground truth into ``out_dir`` (atomically).

    Deterministic per ``seed``: customers are simulated in fixed-size chunks, each with its own
    RNG from ``numpy.random.SeedSequence(seed).spawn``, so the output is byte-identical across
    runs and memory stays bounded. ``end`` is inclusive: no row falls after ``end``'s last second.

    ``subscriptions=True`` generates the contractual B2B SaaS demo instead of the retail one
    (with a subscriptions table; oracle: :func:`contractual_oracle`); without it the output is
    exactly what it always was for the same seed.

    ``drift``: faults injected from a date on (:mod:`churnguard.features.demo_drift`: a broken
    event feed, an acquisition mix shift, a price change, a churn rise in one segment), each
    recorded in ``ground_truth/drift.json``; retail demo only. Still deterministic per seed;
    without faults nothing changes (no drift.json either).
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    _validate(out_dir, n_customers, seed, start, end, fmt)
    params = SimParams()
    drifts = validate_drifts(tuple(drift), start, end)
    if drifts and subscriptions:
        raise ValueError("--drift is supported for the retail demo only, not with "
                         "--subscriptions")
    for d in drifts:
        if d.kind == "acquisition-shift":
            base = _acquisition_base_share(params, str(d.target))
            if float(d.amount or 0) <= base:
                raise ValueError(f"--drift {d.label}: the share must be above {d.target}'s "
                                 f"usual share of new customers ({base})")
    with atomic_output(out_dir) as tmp:  # out_dir is new or empty (validated above)
        (tmp / "ground_truth").mkdir(parents=True)
        if subscriptions:
            return _generate_contractual_into(
                tmp, out_dir, n_customers, seed, start, end, fmt, progress, t_start
            )
        return _generate_into(
            tmp, out_dir, n_customers, seed, start, end, fmt, progress, params, t_start, drifts
        )


def _acquisition_base_share(params: SimParams, target: str) -> float:
    table = params.channels if target in CHANNELS else params.regions
    return float(table[target]["share"])


def _generate_into(
    tmp: Path,
    out_dir: Path,
    n_customers: int,
    seed: int,
    start: date,
    end: date,
    fmt: str,
    progress: Callable[[int, int], None] | None,
    params: SimParams,
    t_start: float,
    drifts: tuple[DriftSpec, ...] = (),
) -> DemoSummary:
    cs = params.chunk_size
    n_chunks = -(-n_customers // cs)
    children = np.random.SeedSequence(seed).spawn(n_chunks + 1)
    signups = _draw_signups(np.random.default_rng(children[0]), n_customers, start, end, params)
    t_end_f = (end - start).days + 1
    season = sim.season_by_day(start, t_end_f + 1, params)
    extra = _extra_signups(seed, signups, start, end, params, drifts)
    n_total = n_customers + sum(len(x[0]) for x in extra)
    id_width = max(7, len(str(n_total - 1)))
    names = ["customers", "transactions", "events", "campaigns"]
    writers = {k: _TableWriter(tmp / f"{k}.{fmt}", SCHEMAS[k], fmt) for k in names}
    writers |= {
        k: _TableWriter(tmp / "ground_truth" / f"{v}.parquet", SCHEMAS[k], "parquet")
        for k, v in GT_FILES.items()
    }
    orders = 0
    try:
        for c in range(n_chunks):
            lo, hi = c * cs, min((c + 1) * cs, n_customers)
            tables = _simulate_chunk(
                np.random.default_rng(children[c + 1]),
                signups[lo:hi],
                lo,
                id_width,
                orders,
                start,
                end,
                params,
                season,
                drifts,
            )
            orders += int(pc.sum(pc.greater(tables["transactions"]["amount"], 0)).as_py() or 0)
            for k, w in writers.items():
                w.write(tables[k])
            if progress is not None:
                progress(hi, n_total)
        # An acquisition-shift's extra customers, after the others (which are unchanged).
        first = n_customers
        for x_signups, x_rng, region, channel in extra:
            tables = _simulate_chunk(x_rng, x_signups, first, id_width, orders, start, end,
                                     params, season, drifts, region, channel)
            orders += int(pc.sum(pc.greater(tables["transactions"]["amount"], 0)).as_py() or 0)
            for k, w in writers.items():
                w.write(tables[k])
            first += len(x_signups)
            if progress is not None:
                progress(first, n_total)
    finally:
        for w in writers.values():
            w.close()
    omitted = _omit_empty_tables(
        tmp, names, writers, fmt, start, end,
        f" (campaigns start {params.campaign_first_month_offset} months after the first month)")
    meta = {
        "generator": "churnguard.features.demo_data",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n_customers": n_customers,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "subscriptions": False,
        "format": fmt,
        "params": params.to_json(),
    }
    (tmp / "ground_truth" / "params.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    effects = {
        "segment": params.segments,
        "region": params.regions,
        "channel": params.channels,
        "note": "multipliers on the latent purchase rate, hazard and mean order value; "
        "share = probability of the category",
    }
    (tmp / "ground_truth" / "segment_effects.json").write_text(
        json.dumps(effects, indent=2, sort_keys=True)
    )
    n_extra = n_total - n_customers
    if drifts:
        _write_drift(tmp / "ground_truth" / "drift.json", drifts, start, signups, n_extra)
    summary = DemoSummary(
        out_dir=out_dir,
        n_customers=n_total,
        n_transactions=writers["transactions"].rows,
        n_events=writers["events"].rows,
        n_campaign_contacts=writers["campaigns"].rows,
        n_subscriptions=0,
        start=start,
        end=end,
        seed=seed,
        seconds=time.perf_counter() - t_start,
        omitted=omitted,
        drift=drifts,
        n_extra_customers=n_extra,
    )
    (tmp / "README.md").write_text(_readme(summary, fmt))
    return summary


_DRIFT_SEED = 0xD21F7  # the extra customers' RNG stream, apart from the others'


def _extra_signups(
    seed: int, signups: np.ndarray, start: date, end: date, params: SimParams,
    drifts: tuple[DriftSpec, ...],
) -> list[tuple[np.ndarray, np.random.Generator, int | None, int | None]]:
    """The acquisition-shift's extra customers, in chunks: (signups, RNG, region, channel).

    From the shift's date, the usual flow goes on (the same customers as without the fault)
    and a push adds ``k`` extra sign-ups per usual one, all from the target, where
    ``k = (share - base) / (1 - share)`` makes the target ``share`` of the new customers
    (``base``: its usual share). Extra sign-up days follow the usual acquisition curve.
    """
    shift = next((d for d in drifts if d.kind == "acquisition-shift"), None)
    if shift is None or shift.day >= end:
        return []
    day = (shift.day - start).days
    target = str(shift.target)
    share, base = float(shift.amount or 0), _acquisition_base_share(params, target)
    n_after = int((signups >= day).sum())
    n_extra = round(n_after * (share - base) / (1.0 - share))
    if n_extra < 1:
        return []
    cs = params.chunk_size
    n_chunks = -(-n_extra // cs)
    children = np.random.SeedSequence([seed, _DRIFT_SEED]).spawn(n_chunks + 1)
    x = _draw_signups(np.random.default_rng(children[0]), n_extra, shift.day, end, params) + day
    region = REGIONS.index(target) if target in REGIONS else None
    channel = CHANNELS.index(target) if target in CHANNELS else None
    return [(x[c * cs:(c + 1) * cs], np.random.default_rng(children[c + 1]), region, channel)
            for c in range(n_chunks)]


def _write_drift(path: Path, drifts: tuple[DriftSpec, ...], start: date, signups: np.ndarray,
                 n_extra: int) -> None:
    faults = []
    for d in drifts:
        day = (d.day - start).days
        observed: dict[str, Any] = {}
        if d.kind == "acquisition-shift":
            observed = {"usual_signups_from_date": int((signups >= day).sum()),
                        "extra_signups": n_extra}
        faults.append(drift_record(d, day, **observed))
    doc = {
        "note": "faults injected by churnguard demo-data --drift from each date on (inclusive); "
                "rows before a fault's date are exactly as without it for broken-feed, "
                "price-change and acquisition-shift (whose extra customers come after the "
                "others); churn-rise changes the random draws after its date, so the same seed "
                "gives other rows (the latent paths before the date have the same law). "
                "oracle_churn_probability applies churn-rise; the other kinds do not change "
                "the true no-purchase probability.",
        "faults": faults,
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def _omit_empty_tables(tmp: Path, names: list[str], writers: dict[str, _TableWriter], fmt: str,
                       start: date, end: date, campaigns_note: str) -> tuple[str, ...]:
    """Remove the files of optional tables without rows (an empty table breaks the contract;
    a missing optional one is none); raise ValueError if a required table has no rows."""
    empty = [k for k in names if writers[k].rows == 0]
    required = [k for k in empty if TABLES[k].required]
    if required:
        raise ValueError(f"{start} .. {end} has no {' and no '.join(required)} for these "
                         "customers; generate more customers or a longer period")
    for k in empty:
        why = campaigns_note if k == "campaigns" else ""
        (tmp / f"{k}.{fmt}").unlink()
        log.warning("no %s in %s .. %s%s: %s.%s not written", k, start, end, why, k, fmt)
    return tuple(empty)


# ---------------------------------------------------------------------------------------------
# Oracle


def _read_friction_events(data_dir: Path, fmt: str) -> pd.DataFrame:
    """Complaints and support tickets (the hazard-relevant history) from the events table."""
    kinds = ["complaint", "support_ticket"]
    columns = ["customer_id", "ts", "event_type"]
    if not (data_dir / f"events.{fmt}").exists():  # a period without events (not written)
        return pa.schema([(c, SCHEMAS["events"].field(c).type) for c in columns]) \
            .empty_table().to_pandas()
    if fmt == "parquet":
        table = pq.read_table(
            data_dir / "events.parquet", columns=columns, filters=[("event_type", "in", kinds)]
        )
    else:
        opts = pacsv.ConvertOptions(
            include_columns=columns,
            column_types={"customer_id": pa.string(), "ts": TS, "event_type": pa.string()},
        )
        table = pacsv.read_csv(data_dir / "events.csv", convert_options=opts)
        table = table.filter(pc.is_in(table["event_type"], pa.array(kinds)))
    return table.to_pandas()


def _seconds_since(ts: pd.Series, start: date) -> np.ndarray:
    secs = ts.to_numpy().astype("datetime64[s]").astype(np.int64)
    return (secs - (start - date(1970, 1, 1)).days * SECONDS_PER_DAY).astype(np.float64)


def _replicate(local: np.ndarray, n_sims: int, idx: np.ndarray, *cols: np.ndarray) -> list[Any]:
    """Copy per-customer history rows into each of ``n_sims`` simulation blocks.

    ``local`` maps a customer to its position in the batch (-1 = not in the batch); simulation
    ``r`` of batch position ``j`` is sim-row ``r * batch_size + j``.
    """
    m = int((local >= 0).sum())
    keep = local[idx] >= 0
    li = local[idx[keep]]
    out_i = (np.repeat(np.arange(n_sims) * m, len(li)) + np.tile(li, n_sims)).astype(np.int64)
    return [out_i, *[np.tile(c[keep], n_sims) for c in cols]]


def read_drift(data_dir: Path) -> tuple[DriftSpec, ...]:
    """The faults injected into a retail demo directory (``ground_truth/drift.json``; none if
    the file is absent)."""
    path = Path(data_dir) / "ground_truth" / "drift.json"
    if not path.exists():
        return ()
    return tuple(parse_drift(f["spec"]) for f in json.loads(path.read_text())["faults"])


def oracle_churn_probability(
    data_dir: Path, cutoff: date, horizon_days: int, *, n_sims: int = 200, seed: int = 0
) -> pd.DataFrame:
    """True probability that each customer makes no purchase in ``[cutoff, cutoff + horizon)``.

    Conditions on the generator's latent state at ``cutoff`` (stage, latent rates, complaint,
    ticket and campaign history before the cutoff) and integrates over the future by Monte Carlo:
    ``n_sims`` futures are re-simulated with the generator's own :func:`simulate_forward`
    (future complaints, tickets, campaigns and stage changes), and for each simulated stage path
    the no-purchase probability is the analytic Poisson ``exp(-integral of the purchase rate)``
    (Rao-Blackwellisation: no purchase draws, lower variance). Customers dead at the cutoff get 1.
    A churn-rise fault in ``ground_truth/drift.json`` steps the segment's hazard up from its date
    as in the generator; the other faults do not change this probability (a broken feed hides
    rows, a price change moves amounts, an acquisition shift adds customers with their own
    latent state) and are not applied.
    Returns columns ``customer_id``, ``p_churn`` for every customer with signup_date < cutoff.
    """
    data_dir = Path(data_dir)
    gt = data_dir / "ground_truth"
    if not (gt / "params.json").exists():
        raise ValueError(f"{data_dir} has no ground_truth/params.json; not a demo data directory")
    meta = json.loads((gt / "params.json").read_text())
    if meta.get("business") == "b2b_saas":
        raise ValueError(f"{data_dir} is a contractual demo (--subscriptions): its oracle is "
                         "contractual_oracle")
    params = SimParams.from_json(meta["params"])
    start, end = date.fromisoformat(meta["start"]), date.fromisoformat(meta["end"])
    fmt = meta["format"]
    if not isinstance(horizon_days, int) or horizon_days < 1:
        raise ValueError(f"horizon_days must be a positive integer, got {horizon_days!r}")
    if n_sims < 1:
        raise ValueError(f"n_sims must be >= 1, got {n_sims}")
    if not isinstance(cutoff, date) or not start < cutoff <= end:
        raise ValueError(f"cutoff {cutoff} must be a date in ({start}, {end}]")
    tc = float((cutoff - start).days)
    th = tc + horizon_days

    cust = pq.read_table(gt / "customers.parquet").to_pandas()
    cust = cust[cust["signup_day"] < tc].reset_index(drop=True)
    n = len(cust)
    if n == 0:
        return pd.DataFrame({"customer_id": pd.Series([], dtype=str), "p_churn": []})
    pos = pd.Series(np.arange(n), index=cust["customer_id"].to_numpy())
    lat = Latent(
        signup=cust["signup_day"].to_numpy(np.float64),
        segment=pd.Categorical(cust["segment"], categories=SEGMENTS).codes.astype(np.int64),
        region=pd.Categorical(cust["region"], categories=REGIONS).codes.astype(np.int64),
        channel=pd.Categorical(cust["channel"], categories=CHANNELS).codes.astype(np.int64),
        purchase_rate=cust["purchase_rate"].to_numpy(np.float64),
        log_hazard=np.log(cust["base_hazard"].to_numpy(np.float64)),
        mean_order_value=cust["mean_order_value"].to_numpy(np.float64),
        friction=cust["friction"].to_numpy(np.float64),
        complaint_rate=cust["complaint_rate"].to_numpy(np.float64),
        ticket_rate=cust["ticket_rate"].to_numpy(np.float64),
        interaction_rates=cust[[f"{s}_rate" for s in INTERACTIONS]].to_numpy(np.float64),
    )

    paths = pq.read_table(
        gt / "stage_paths.parquet",
        columns=["customer_id", "stage", "start_day", "end_day"],
        filters=[("start_day", "<=", tc), ("end_day", ">", tc)],
    ).to_pandas()
    paths = paths[paths["customer_id"].isin(pos.index)]
    stage = np.zeros(n, np.int64)
    dead_since = np.full(n, np.inf)
    pi = pos[paths["customer_id"].to_numpy()].to_numpy()
    stage[pi] = pd.Categorical(paths["stage"], categories=STAGES).codes
    is_dead = stage[pi] == DEAD
    dead_since[pi[is_dead]] = paths["start_day"].to_numpy()[is_dead]

    ev = _read_friction_events(data_dir, fmt)
    ev_t = _seconds_since(ev["ts"], start) / SECONDS_PER_DAY
    ok = (ev_t < tc) & ev["customer_id"].isin(pos.index).to_numpy()
    ev, ev_t = ev[ok], ev_t[ok]
    ev_i = pos[ev["customer_id"].to_numpy()].to_numpy()
    is_c = (ev["event_type"] == "complaint").to_numpy()
    camp = pq.read_table(
        gt / "campaigns.parquet",
        columns=["customer_id", "t_day", "treated", "hazard_multiplier"],
        filters=[("t_day", "<", tc)],
    ).to_pandas()
    camp = camp[camp["customer_id"].isin(pos.index)]
    cam_i = pos[camp["customer_id"].to_numpy()].to_numpy()
    cam_t = camp["t_day"].to_numpy()
    last_contact = np.full(n, -np.inf)
    np.maximum.at(last_contact, cam_i, cam_t)
    tr = camp["treated"].to_numpy() & (cam_t + params.effect_days > tc)
    lm = np.log(camp["hazard_multiplier"].to_numpy()[tr])

    c_live = is_c & (ev_t + params.complaint_window_days > tc)
    k_live = ~is_c & (ev_t + params.ticket_window_days > tc)
    bc, bt = params.beta_complaint, params.beta_ticket
    hz_i = np.concatenate([ev_i[c_live]] * 2 + [ev_i[k_live]] * 2 + [cam_i[tr]] * 2)
    hz_t = np.concatenate(
        [
            ev_t[c_live],
            ev_t[c_live] + params.complaint_window_days,
            ev_t[k_live],
            ev_t[k_live] + params.ticket_window_days,
            cam_t[tr],
            cam_t[tr] + params.effect_days,
        ]
    )
    hz_d = np.concatenate(
        [
            np.full(c_live.sum(), bc),
            np.full(c_live.sum(), -bc),
            np.full(k_live.sum(), bt),
            np.full(k_live.sum(), -bt),
            lm,
            -lm,
        ]
    )
    # churn-rise faults (ground_truth/drift.json): the same permanent hazard step as generated.
    dr_i, dr_t, dr_d = _churn_rise_breakpoints(lat, read_drift(data_dir), start)
    hz_i, hz_t, hz_d = (np.concatenate([a, b]) for a, b in
                        ((hz_i, dr_i), (hz_t, dr_t), (hz_d, dr_d)))
    recent = ev_t > tc - 90.0
    rc, rk = recent & is_c, recent & ~is_c

    season = sim.season_by_day(start, int(np.ceil(th)) + 2, params)
    camps = sim.campaign_times(start, tc, th, params)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0C4C1E]))
    p_sum = np.zeros(n)
    batch = max(1, 400_000 // n_sims)
    for b0 in range(0, n, batch):
        sel = np.arange(b0, min(b0 + batch, n))
        m = len(sel)
        local = np.full(n, -1, np.int64)
        local[sel] = np.arange(m)
        rep = np.tile(sel, n_sims)  # sim-row r*m + j is customer sel[j] in simulation r
        h_i, h_t, h_d = _replicate(local, n_sims, hz_i, hz_t, hz_d)
        c_i, c_t = _replicate(local, n_sims, ev_i[rc], ev_t[rc])
        k_i, k_t = _replicate(local, n_sims, ev_i[rk], ev_t[rk])
        state = StartState(
            t0=np.full(m * n_sims, tc),
            stage=stage[rep],
            dead_since=dead_since[rep],
            last_contact=last_contact[rep],
            hz_i=h_i,
            hz_t=h_t,
            hz_d=h_d,
            compl_i=c_i,
            compl_t=c_t,
            tick_i=k_i,
            tick_t=k_t,
        )
        lat_rep = lat.take(rep)
        t_end = np.full(m * n_sims, th)
        res = sim.simulate_forward(rng, lat_rep, state, t_end, camps, params)
        integral = sim.purchase_hazard_integral(
            lat_rep, res, season, state.t0, t_end, params
        )
        p = np.exp(-integral).reshape(n_sims, m).mean(axis=0)
        p_sum[sel] = p
    return pd.DataFrame({"customer_id": cust["customer_id"].to_numpy(), "p_churn": p_sum})


# =============================================================================================
# Contractual demo (``subscriptions=True``): a B2B SaaS subscription business
#
# Accounts subscribe on the day they sign up, in monthly, six-month or annual terms. Each term is
# one subscriptions row; at its end (the renewal date) the account renews (the next row starts
# the same day, possibly with other seats, plan, term, discount), pays late and restarts after
# a gap of 1-10 days, or cancels. A latent weekly *health* (account mean plus an AR(1) deviation
# with a "declining" regime) drives the renewal decision, a small mid-term hazard, usage, seat
# growth and support tickets. The same functions run the generator and
# :func:`contractual_oracle`, which is what makes the oracle the true probability.

SAAS_SEGMENTS = ("smb", "mid_market", "enterprise")
SAAS_CHANNELS = ("self_serve", "inbound_sales", "outbound_sales", "partner")
SAAS_INDUSTRIES = ("software", "financial_services", "healthcare", "retail", "manufacturing",
                   "education", "media")
SAAS_PLANS = ("starter", "team", "business", "enterprise")
TERMS = (1, 6, 12)
SAAS_EVENT_TYPES = ("login", "api_call", "report_run", "seat_active", "support_ticket",
                    "complaint")
SAAS_EVENT_CHANNELS = ("web", "app", "api", "email", "phone", "chat")
# The retention actions of churnguard's default catalog (model/actions.yaml) that the demo's
# campaigns run, so that training measures their effects on the hold-outs: a customer-success
# check-in (plan right-sizing), a product training workshop, an executive sponsor call
# (account-manager outreach before renewal) and a renewal discount.
SAAS_ACTIONS = ("plan_rightsizing", "training_workshop", "renewal_outreach", "renewal_offer")
REGIMES = ("steady", "declining")
OUTCOMES = ("renewed", "lapsed", "cancelled")
CANCEL_KINDS = ("renewal", "mid_term")
END_REASONS = ("renewed", "lapsed", "cancelled", "mid_term", "open")
DAYS_PER_MONTH = 365.25 / 12
_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True)
class SaasParams:
    """Every parameter of the contractual demo; serialised into ``ground_truth/params.json``.

    Per-segment tuples are in :data:`SAAS_SEGMENTS` order, per-term ones in :data:`TERMS` order.
    """

    version: str = "1"
    chunk_size: int = 2_500
    # Acquisition: exponential growth, few signups at weekends.
    acquisition_growth_per_year: float = 0.35
    weekend_signup_factor: float = 0.25
    # Accounts.
    segment_share: tuple[float, ...] = (0.66, 0.26, 0.08)
    region_share: tuple[float, ...] = (0.45, 0.32, 0.15, 0.08)
    channel_share: tuple[tuple[float, ...], ...] = (
        (0.60, 0.25, 0.05, 0.10), (0.15, 0.45, 0.25, 0.15), (0.02, 0.30, 0.50, 0.18))
    industry_share: tuple[float, ...] = (0.26, 0.14, 0.12, 0.14, 0.12, 0.10, 0.12)
    plan_share: tuple[tuple[float, ...], ...] = (
        (0.55, 0.35, 0.10, 0.0), (0.05, 0.45, 0.45, 0.05), (0.0, 0.05, 0.45, 0.50))
    # List price per seat and month, by plan; mrr = seats * price (before discount).
    plan_price: tuple[float, ...] = (15.0, 35.0, 65.0, 110.0)
    term_share: tuple[tuple[float, ...], ...] = (
        (0.78, 0.05, 0.17), (0.35, 0.10, 0.55), (0.05, 0.05, 0.90))
    seats_median: tuple[float, ...] = (3.0, 22.0, 150.0)
    seats_sigma: tuple[float, ...] = (0.7, 0.6, 0.7)
    seats_max: tuple[int, ...] = (60, 500, 5000)
    # Discounts: monthly terms mostly list price; longer terms a negotiated discount drawn
    # uniformly from the segment's range (six-month terms: 60 % of it), in steps of 0.05.
    monthly_discount_share: float = 0.15
    monthly_discounts: tuple[float, ...] = (0.1, 0.15, 0.2)
    term_discount_range: tuple[tuple[float, float], ...] = ((0.05, 0.25), (0.1, 0.3),
                                                            (0.15, 0.4))
    max_discount: float = 0.5
    auto_renew_share: tuple[tuple[float, ...], ...] = (
        (0.92, 0.75, 0.75), (0.92, 0.65, 0.60), (0.90, 0.55, 0.45))
    auto_renew_flip_prob: float = 0.02
    integrated_share: tuple[float, ...] = (0.05, 0.20, 0.50)
    # Latent weekly health h = mu_i + x_t: mu_i ~ N(channel + industry effect, sd); x is AR(1)
    # with weekly persistence phi, plus a drift while in the "declining" regime (a two-state
    # Markov chain: champion left, budget cut, switched to a competitor ...).
    health_sd_account: float = 0.55
    channel_health: tuple[float, ...] = (-0.1, 0.0, 0.05, 0.1)
    industry_health: tuple[float, ...] = (0.05, 0.05, 0.0, -0.1, 0.0, -0.1, -0.05)
    health_start_sd: float = 0.5
    health_phi: float = 0.93
    health_sigma: float = 0.25
    decline_start_prob: float = 0.008
    decline_end_prob: float = 0.08
    decline_drift: float = -0.12
    # Renewal decision: logit P(cancel) = intercept[term] - health_coef * h + ... (see
    # _renewal_probs); P(late payment | not cancelled) by term and (auto, manual) renewal.
    cancel_intercept: tuple[float, ...] = (-4.1, -2.7, -2.2)
    cancel_health: float = 1.25
    cancel_early_tenure: float = 0.6
    early_tenure_months: float = 4.0
    cancel_manual_renewal: float = 0.7
    cancel_discount: float = -2.0
    cancel_log_seats: float = -0.12
    cancel_integrated: float = -0.4
    cancel_segment: tuple[float, ...] = (0.15, 0.0, -0.2)
    lapse_prob: tuple[tuple[float, float], ...] = ((0.012, 0.03), (0.03, 0.06), (0.03, 0.06))
    lapse_max_gap_days: int = 10
    # Mid-term cancellation hazard (per month at h = 0), times exp(-midterm_health * h).
    midterm_hazard_monthly: float = 0.001
    midterm_health: float = 0.9
    # Win-back: a cancelled account returns after min_gap + Exp(mean) days with this chance.
    winback_prob: float = 0.08
    winback_min_gap_days: int = 90
    winback_mean_extra_days: float = 150.0
    winback_discount: float = 0.1
    # Changes at a renewal (by term): seats change with prob, log change ~ N(mean + coef*h, sd);
    # plan up/downgrades and term switches, more likely for healthy/unhealthy accounts.
    seat_change_prob: tuple[float, ...] = (0.06, 0.35, 0.55)
    seat_growth_mean: float = 0.05
    seat_growth_health: float = 0.12
    seat_growth_sd: float = 0.18
    upgrade_prob: tuple[float, ...] = (0.012, 0.03, 0.04)
    downgrade_prob: tuple[float, ...] = (0.006, 0.02, 0.025)
    plan_change_health: float = 0.6
    to_annual_prob: float = 0.012
    to_monthly_prob: float = 0.04
    term_switch_health: float = 0.5
    # Retention campaigns: accounts on long terms or with net MRR >= campaign_min_mrr are
    # considered lead_days[term] before the renewal; at-risk ones (h < threshold) are targeted
    # more; within the targeted, treatment is randomised. A treated contact lowers the
    # renewal's cancel logit by (effect[action] + effect_health * max(0, -h)) * U(0.6, 1.4);
    # a renewal discount also adds discount_bonus to the next term.
    campaign_min_mrr: float = 1000.0
    campaign_lead_days: tuple[int, ...] = (12, 45, 45)
    campaign_risk_threshold: float = -0.3
    campaign_target_at_risk: float = 0.85
    campaign_target_other: float = 0.1
    treated_share: float = 0.8
    action_effect: tuple[float, ...] = (0.35, 0.3, 0.5, 0.15)
    action_effect_health: float = 0.25
    renewal_discount_bonus: float = 0.15
    # Usage (daily rollups while subscribed): each seat is active on a weekday with
    # P = sigmoid(seat_intercept + u_i + seat_health * h) (weekends/holidays: times a factor),
    # u_i ~ N(0, usage_account_sd) the account's usage propensity, unrelated to its health.
    seat_intercept: float = -1.9
    usage_account_sd: float = 0.5
    seat_health: float = 1.1
    weekend_factor: float = 0.1
    holiday_factor: float = 0.35
    logins_extra_per_seat: float = 0.6
    reports_per_seat: float = 0.05
    report_health: float = 0.3
    api_base: float = 40.0
    api_seats_exponent: float = 0.5
    api_health: float = 0.4
    api_weekend: float = 0.5
    ticket_base: float = 0.003
    ticket_seats_exponent: float = 0.45
    ticket_health: float = -1.2
    complaint_base: float = 0.0004
    complaint_seats_exponent: float = 0.3
    complaint_health: float = -1.6
    support_weekend: float = 0.2

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SaasParams:
        def tup(v: Any) -> Any:
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tup(v) for k, v in data.items() if k in names})


_SAAS_SCHEMAS: dict[str, pa.Schema] = {
    "customers": pa.schema(
        [
            ("customer_id", pa.string()),
            ("signup_date", pa.date32()),
            ("segment", pa.string()),
            ("region", pa.string()),
            ("channel", pa.string()),
            ("industry", pa.string()),
        ]
    ),
    "subscriptions": pa.schema(
        [
            ("customer_id", pa.string()),
            ("start_date", pa.date32()),
            ("end_date", pa.date32()),
            ("plan", pa.string()),
            ("mrr", pa.float64()),
            ("renewal_date", pa.date32()),
            ("seats", pa.int64()),
            ("discount", pa.float64()),
            ("auto_renew", pa.bool_()),
            ("term_months", pa.int64()),
        ]
    ),
    "transactions": SCHEMAS["transactions"],
    "events": SCHEMAS["events"],
    "campaigns": SCHEMAS["campaigns"],
    "gt_accounts": pa.schema(
        [
            ("customer_id", pa.string()),
            ("signup_date", pa.date32()),
            ("segment", pa.string()),
            ("region", pa.string()),
            ("channel", pa.string()),
            ("industry", pa.string()),
            ("health_mean", pa.float64()),
            ("usage_propensity", pa.float64()),
            ("integrated", pa.bool_()),
            ("n_cancellations", pa.int64()),
            ("first_cancel_date", pa.date32()),
            ("status_at_end", pa.string()),
        ]
    ),
    "gt_health": pa.schema(
        [
            ("customer_id", pa.string()),
            ("week_start", pa.date32()),
            ("health", pa.float32()),
            ("regime", pa.string()),
            ("midterm_hazard_monthly", pa.float32()),
        ]
    ),
    "gt_terms": pa.schema(
        [
            ("customer_id", pa.string()),
            ("start_date", pa.date32()),
            ("end_date", pa.date32()),
            ("renewal_date", pa.date32()),
            ("plan", pa.string()),
            ("mrr", pa.float64()),
            ("seats", pa.int64()),
            ("discount", pa.float64()),
            ("base_discount", pa.float64()),
            ("auto_renew", pa.bool_()),
            ("term_months", pa.int64()),
            ("spell_start", pa.date32()),
            ("anchor_date", pa.date32()),
            ("term_index", pa.int64()),
            ("end_reason", pa.string()),
        ]
    ),
    "gt_renewals": pa.schema(
        [
            ("customer_id", pa.string()),
            ("renewal_date", pa.date32()),
            ("term_months", pa.int64()),
            ("health", pa.float64()),
            ("campaign_shift", pa.float64()),
            ("p_cancel", pa.float64()),
            ("p_lapse", pa.float64()),
            ("outcome", pa.string()),
            ("gap_days", pa.int64()),
        ]
    ),
    "gt_cancellations": pa.schema(
        [
            ("customer_id", pa.string()),
            ("cancel_date", pa.date32()),
            ("kind", pa.string()),
            ("term_months", pa.int64()),
            ("health", pa.float64()),
            ("p_cancel", pa.float64()),
            ("winback_date", pa.date32()),
        ]
    ),
    "gt_campaigns": pa.schema(
        [
            ("customer_id", pa.string()),
            ("ts", TS),
            ("t_day", pa.float64()),
            ("action_id", pa.string()),
            ("treated", pa.bool_()),
            ("health_at_contact", pa.float64()),
            ("renewal_date", pa.date32()),
            ("logit_shift", pa.float64()),
            ("discount_bonus", pa.float64()),
        ]
    ),
}
SAAS_GT_FILES = {
    "gt_accounts": "accounts",
    "gt_health": "health",
    "gt_terms": "terms",
    "gt_renewals": "renewals",
    "gt_cancellations": "cancellations",
    "gt_campaigns": "campaigns",
}


# --- small helpers -----------------------------------------------------------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of ``probs`` (n x k, rows summing to 1)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def _term_code(term: np.ndarray) -> np.ndarray:
    return np.where(term == 1, 0, np.where(term == 6, 1, 2))


def _add_months_days(day: np.ndarray, months: np.ndarray, start: date) -> np.ndarray:
    """Day index (days since ``start``) plus calendar months, clipped to the month's end."""
    d0 = np.datetime64(start, "D")
    return (_add_months(d0 + np.asarray(day, np.int64), np.asarray(months, np.int64))
            - d0).astype(np.int64)


class _Calendar:
    """Day indices (days since ``start``) and Monday-aligned week indices."""

    def __init__(self, start: date) -> None:
        self.start = start
        self.wd0 = start.weekday()  # weekday of day 0; 0 = Monday

    def week(self, day: np.ndarray | int) -> Any:
        return (np.asarray(day, np.int64) + self.wd0) // 7

    def week_start(self, week: np.ndarray | int) -> Any:
        return 7 * np.asarray(week, np.int64) - self.wd0

    def day_factors(self, n_days: int, p: SaasParams) -> tuple[np.ndarray, np.ndarray]:
        """(usage factor, weekday?) per day: weekends and Dec 24 - Jan 1 are quiet."""
        d = np.datetime64(self.start, "D") + np.arange(n_days)
        dow = (np.arange(n_days) + self.wd0) % 7
        month = d.astype("datetime64[M]").astype(np.int64) % 12
        dom = (d - d.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
        holiday = ((month == 11) & (dom >= 24)) | ((month == 0) & (dom == 1))
        weekday = dow < 5
        f = np.where(weekday, 1.0, p.weekend_factor) * np.where(holiday, p.holiday_factor, 1.0)
        return f, weekday


def _base_discount(rng: np.random.Generator, seg: np.ndarray, term: np.ndarray,
                   p: SaasParams) -> np.ndarray:
    m = len(seg)
    u, v = rng.random(m), rng.random(m)
    rng_lo = np.array([r[0] for r in p.term_discount_range])[seg]
    rng_hi = np.array([r[1] for r in p.term_discount_range])[seg]
    long_term = rng_lo + v * (rng_hi - rng_lo)
    long_term = np.where(term == 6, 0.6 * long_term, long_term)
    md = np.array(p.monthly_discounts)
    monthly = np.where(u < p.monthly_discount_share,
                       md[np.minimum((v * len(md)).astype(np.int64), len(md) - 1)], 0.0)
    d = np.where(term == 1, monthly, long_term)
    return np.round(np.round(d / 0.05) * 0.05, 2)


def _health_step(rng: np.random.Generator, x: np.ndarray, regime: np.ndarray,
                 p: SaasParams) -> tuple[np.ndarray, np.ndarray]:
    """One week of the health deviation: the regime switches, then x takes an AR(1) step."""
    u = rng.random(len(x))
    regime = np.where(regime == 1, u >= p.decline_end_prob, u < p.decline_start_prob)
    x = (p.health_phi * x + p.decline_drift * regime
         + p.health_sigma * rng.standard_normal(len(x)))
    return x, regime.astype(np.int8)


def _midterm_rate(h: np.ndarray, p: SaasParams) -> np.ndarray:
    """Mid-term cancellation hazard per day."""
    return p.midterm_hazard_monthly / DAYS_PER_MONTH * np.exp(-p.midterm_health * h)


def _renewal_probs(h: np.ndarray, seg: np.ndarray, term: np.ndarray, auto: np.ndarray,
                   discount: np.ndarray, seats: np.ndarray, integrated: np.ndarray,
                   early: np.ndarray, shift: np.ndarray,
                   p: SaasParams) -> tuple[np.ndarray, np.ndarray]:
    """(P(cancel), P(late payment | not cancelled)) at a renewal."""
    tc = _term_code(term)
    z = (np.array(p.cancel_intercept)[tc] - p.cancel_health * h
         + p.cancel_early_tenure * early + p.cancel_manual_renewal * ~auto
         + p.cancel_discount * discount + p.cancel_log_seats * np.log(seats)
         + p.cancel_integrated * integrated + np.array(p.cancel_segment)[seg] + shift)
    lapse = np.array(p.lapse_prob)[tc, np.where(auto, 0, 1)]
    return _sigmoid(z), lapse


def _campaign_draws(rng: np.random.Generator, h: np.ndarray, seg: np.ndarray,
                    p: SaasParams) -> tuple[np.ndarray, ...]:
    """Targeting, randomised treatment, action, cancel-logit shift and discount bonus."""
    m = len(h)
    targeted = rng.random(m) < np.where(h < p.campaign_risk_threshold,
                                        p.campaign_target_at_risk, p.campaign_target_other)
    treated = targeted & (rng.random(m) < p.treated_share)
    u = rng.random(m)
    action = np.where(seg == 2, 2, np.where(seg == 1, np.where(u < 0.5, 0, 1), 3))
    size = rng.uniform(0.6, 1.4, m)
    effect = (np.array(p.action_effect)[action]
              + p.action_effect_health * np.maximum(0.0, -h)) * size
    shift = np.where(treated, -effect, 0.0)
    bonus = np.where(treated & (action == 3), p.renewal_discount_bonus, 0.0)
    return targeted, treated, action, shift, bonus


def _campaign_eligible(term: np.ndarray, seats: np.ndarray, plan: np.ndarray,
                       discount: np.ndarray, p: SaasParams) -> np.ndarray:
    net_mrr = seats * np.array(p.plan_price)[plan] * (1.0 - discount)
    return (term > 1) | (net_mrr >= p.campaign_min_mrr)


def _renewal_changes(rng: np.random.Generator, h: np.ndarray, seg: np.ndarray,
                     term: np.ndarray, plan: np.ndarray, seats: np.ndarray,
                     base_discount: np.ndarray, auto: np.ndarray, bonus: np.ndarray,
                     p: SaasParams) -> tuple[np.ndarray, ...]:
    """The next term after a renewal: seats, plan, term, base and applied discount, auto."""
    m = len(h)
    tc = _term_code(term)
    change = rng.random(m) < np.array(p.seat_change_prob)[tc]
    growth = rng.normal(p.seat_growth_mean + p.seat_growth_health * h, p.seat_growth_sd)
    grown = np.clip(np.round(seats * np.exp(growth)), 1, np.array(p.seats_max)[seg])
    seats = np.where(change, grown, seats).astype(np.int64)
    u = rng.random(m)
    up = (u < np.array(p.upgrade_prob)[tc] * np.exp(p.plan_change_health * h)) & (plan < 3)
    down = (~up & (1.0 - u < np.array(p.downgrade_prob)[tc]
                   * np.exp(-p.plan_change_health * h)) & (plan > 0))
    plan = plan + up.astype(np.int64) - down.astype(np.int64)
    u = rng.random(m)
    to_annual = (term == 1) & (u < p.to_annual_prob * np.exp(p.term_switch_health * h))
    to_monthly = (term > 1) & (u < p.to_monthly_prob * np.exp(-p.term_switch_health * h))
    new_term = np.where(to_annual, 12, np.where(to_monthly, 1, term)).astype(np.int64)
    fresh = _base_discount(rng, seg, new_term, p)
    base = np.where((new_term > 1) | (new_term != term), fresh, base_discount)
    applied = np.round(np.minimum(base + bonus, p.max_discount), 2)
    auto = np.where(rng.random(m) < p.auto_renew_flip_prob, ~auto, auto)
    return seats, plan, new_term, base, applied, auto


def _cum_hazard(lam: np.ndarray) -> np.ndarray:
    """Cumulative mid-term hazard at each week start (n x (W + 1)), from weekly daily rates."""
    cw = np.zeros((lam.shape[0], lam.shape[1] + 1))
    np.cumsum(7.0 * lam, axis=1, out=cw[:, 1:])
    return cw


def _cum_at(cw: np.ndarray, lam: np.ndarray, rows: np.ndarray, day: np.ndarray,
            cal: _Calendar, week0: int) -> np.ndarray:
    """Cumulative hazard at the start of ``day`` (weeks counted from ``week0``)."""
    w = cal.week(day) - week0
    return cw[rows, w] + lam[rows, w] * (day - cal.week_start(w + week0))


# --- the generator -----------------------------------------------------------------------------


def _saas_signup_days(rng: np.random.Generator, n: int, n_days: int, cal: _Calendar,
                      p: SaasParams) -> np.ndarray:
    days = np.arange(n_days)
    w = (np.exp(p.acquisition_growth_per_year * days / 365.25)
         * np.where((days + cal.wd0) % 7 >= 5, p.weekend_signup_factor, 1.0))
    return np.sort(rng.choice(n_days, n, p=w / w.sum())).astype(np.int64)


@dataclass
class _SaasChunk:
    """One chunk of accounts simulated by :func:`_simulate_saas_chunk` (arrays, day indices)."""

    tables: dict[str, pa.Table]
    n_invoices: int


def _simulate_saas_chunk(
    rng: np.random.Generator,
    signup: np.ndarray,
    first_number: int,
    id_width: int,
    invoice_offset: int,
    start: date,
    n_days: int,
    p: SaasParams,
) -> _SaasChunk:
    n = len(signup)
    cal = _Calendar(start)
    start_s = (start - date(1970, 1, 1)).days * SECONDS_PER_DAY
    t_end_f = float(n_days)
    ids = _ids("C", np.arange(first_number, first_number + n), id_width)
    d0 = (start - date(1970, 1, 1)).days

    # --- accounts
    seg = _choice_rows(rng, np.tile(np.array(p.segment_share), (n, 1)))
    region = _choice_rows(rng, np.tile(np.array(p.region_share), (n, 1)))
    channel = _choice_rows(rng, np.array(p.channel_share)[seg])
    industry = _choice_rows(rng, np.tile(np.array(p.industry_share), (n, 1)))
    mu = (rng.normal(0.0, p.health_sd_account, n) + np.array(p.channel_health)[channel]
          + np.array(p.industry_health)[industry])
    integrated = rng.random(n) < np.array(p.integrated_share)[seg]
    propensity = rng.normal(0.0, p.usage_account_sd, n)
    plan = _choice_rows(rng, np.array(p.plan_share)[seg])
    term = np.array(TERMS)[_choice_rows(rng, np.array(p.term_share)[seg])]
    seats = np.clip(np.round(np.array(p.seats_median)[seg]
                             * np.exp(np.array(p.seats_sigma)[seg] * rng.standard_normal(n))),
                    1, np.array(p.seats_max)[seg]).astype(np.int64)
    auto = rng.random(n) < np.array(p.auto_renew_share)[seg, _term_code(term)]
    base_disc = _base_discount(rng, seg, term, p)
    disc = base_disc.copy()

    # --- latent weekly health, from each signup week to the week after the end
    n_weeks = int(cal.week(n_days)) + 1
    sw = cal.week(signup)
    x = np.zeros(n)
    reg = np.zeros(n, np.int8)
    x0 = rng.normal(0.0, p.health_start_sd, n)
    X = np.zeros((n, n_weeks))
    R8 = np.zeros((n, n_weeks), np.int8)
    for w in range(n_weeks):
        x, reg = _health_step(rng, x, reg, p)
        new = sw == w
        x = np.where(new, x0, x)
        reg = np.where(new, 0, reg).astype(np.int8)
        X[:, w], R8[:, w] = x, reg
    # Stored as float32 in ground_truth/health.parquet: decide on exactly the stored values.
    H = (mu[:, None] + X).astype(np.float32).astype(np.float64)
    lam = _midterm_rate(H, p)
    cw = _cum_hazard(lam)

    # --- terms
    last = n_days - 1
    alive = np.ones(n, bool)
    s_day = signup.copy()
    anchor = signup.copy()
    k = np.ones(n, np.int64)
    spell = signup.copy()
    bonus_next = np.zeros(n)
    rows: dict[str, list[np.ndarray]] = {c: [] for c in (
        "i", "start", "end", "renewal", "plan", "seats", "disc", "base", "auto", "term",
        "spell", "anchor", "k", "reason")}
    ren_rec: dict[str, list[np.ndarray]] = {c: [] for c in (
        "i", "day", "term", "h", "shift", "pc", "pl", "outcome", "gap")}
    can_rec: dict[str, list[np.ndarray]] = {c: [] for c in (
        "i", "day", "kind", "term", "h", "p", "wb")}
    camp_rec: dict[str, list[np.ndarray]] = {c: [] for c in (
        "i", "t", "action", "treated", "h", "renewal", "shift", "bonus")}
    while alive.any():
        idx = np.flatnonzero(alive)
        m = len(idx)
        s = s_day[idx]
        tm = term[idx]
        ren = _add_months_days(anchor[idx], k[idx] * tm, start)
        # Mid-term cancellation: first passage of the cumulative hazard over days s+1 .. ren-1.
        a = s + 1
        b = np.minimum(ren - 1, last)
        has = b >= a
        a_c, b_c = np.minimum(a, last), np.maximum(np.minimum(b, last), 0)
        ca = _cum_at(cw, lam, idx, a_c, cal, 0)
        cb = _cum_at(cw, lam, idx, b_c + 1, cal, 0)
        e = rng.exponential(1.0, m)
        mid = has & (cb - ca > e)
        c_mid = np.full(m, 10**9, np.int64)
        if mid.any():
            j = np.flatnonzero(mid)
            target = ca[j] + e[j]
            rows_cw = cw[idx[j]]
            wk = np.array([np.searchsorted(r, t, side="right") - 1
                           for r, t in zip(rows_cw, target, strict=True)], np.int64)
            wk = np.minimum(wk, lam.shape[1] - 1)
            t = cal.week_start(wk) + (target - rows_cw[np.arange(len(j)), wk]) / lam[idx[j], wk]
            c_mid[j] = np.clip(np.floor(t).astype(np.int64), a[j], b[j])
        # Retention campaign lead_days before the renewal (if the term is still running then).
        c = ren - np.array(p.campaign_lead_days)[_term_code(tm)]
        elig = (_campaign_eligible(tm, seats[idx], plan[idx], disc[idx], p)
                & (c >= s + 1) & (c <= last) & (c < c_mid))
        h_c = H[idx, cal.week(np.clip(c, 0, last))]
        targeted, treated, action, shift, bonus = _campaign_draws(rng, h_c, seg[idx], p)
        contact = elig & targeted
        shift = np.where(contact, shift, 0.0)
        bonus_next[idx] = np.where(contact, bonus, 0.0)
        if contact.any():
            j = np.flatnonzero(contact)
            camp_rec["i"].append(idx[j])
            camp_rec["t"].append(c[j] + rng.uniform(0.35, 0.7, len(j)))
            camp_rec["action"].append(action[j])
            camp_rec["treated"].append(treated[j])
            camp_rec["h"].append(h_c[j])
            camp_rec["renewal"].append(ren[j])
            camp_rec["shift"].append(shift[j])
            camp_rec["bonus"].append(bonus[j])
        # Renewal decision at ren (if the term reaches it within the data).
        at_ren = ~mid & (ren <= last)
        h_r = H[idx, cal.week(np.minimum(ren, last))]
        early = (ren - spell[idx]) < p.early_tenure_months * DAYS_PER_MONTH
        p_can, p_lap = _renewal_probs(h_r, seg[idx], tm, auto[idx], disc[idx], seats[idx],
                                integrated[idx], early, shift, p)
        u1, u2 = rng.random(m), rng.random(m)
        gap = rng.integers(1, p.lapse_max_gap_days + 1, m)
        cancel = at_ren & (u1 < p_can)
        lapse = at_ren & ~cancel & (u2 < p_lap)
        renew = at_ren & ~cancel & ~lapse
        end = np.where(mid, c_mid, np.where(at_ren, ren, -1))
        reason = np.where(mid, 3, np.where(cancel, 2, np.where(lapse, 1,
                                                                np.where(renew, 0, 4))))
        for key, val in (("i", idx), ("start", s), ("end", end), ("renewal", ren),
                         ("plan", plan[idx]), ("seats", seats[idx]), ("disc", disc[idx]),
                         ("base", base_disc[idx]), ("auto", auto[idx]), ("term", tm),
                         ("spell", spell[idx]), ("anchor", anchor[idx]), ("k", k[idx]),
                         ("reason", reason)):
            rows[key].append(val)
        j = np.flatnonzero(at_ren)
        for key, val in (("i", idx[j]), ("day", ren[j]), ("term", tm[j]), ("h", h_r[j]),
                         ("shift", shift[j]), ("pc", p_can[j]), ("pl", p_lap[j]),
                         ("outcome", np.where(cancel, 2, np.where(lapse, 1, 0))[j]),
                         ("gap", np.where(lapse, gap, -1)[j])):
            ren_rec[key].append(val)
        # Win-backs after a cancellation (at renewal or mid-term).
        gone = mid | cancel
        gone_day = np.where(mid, c_mid, ren)
        wb_gap = p.winback_min_gap_days + np.floor(
            rng.exponential(p.winback_mean_extra_days, m)).astype(np.int64)
        wb = gone & (rng.random(m) < p.winback_prob) & (gone_day + wb_gap <= last)
        j = np.flatnonzero(gone)
        h_mid = H[idx, cal.week(np.clip(c_mid, 0, last))]
        for key, val in (("i", idx[j]), ("day", gone_day[j]), ("kind", mid[j].astype(np.int64)),
                         ("term", tm[j]),
                         ("h", np.where(mid, h_mid, h_r)[j]),
                         ("p", np.where(mid, _midterm_rate(h_mid, p) * DAYS_PER_MONTH, p_can)[j]),
                         ("wb", np.where(wb, gone_day + wb_gap, -1)[j])):
            can_rec[key].append(val)
        # The next term.
        n_seats, n_plan, n_term, n_base, n_disc, n_auto = _renewal_changes(
            rng, h_r, seg[idx], tm, plan[idx], seats[idx], base_disc[idx], auto[idx],
            bonus_next[idx], p)
        wb_term = np.array(TERMS)[_choice_rows(rng, np.array(p.term_share)[seg[idx]])]
        cont = renew | lapse
        nxt = np.where(renew, ren, np.where(lapse, ren + gap, gone_day + wb_gap))
        same_chain = renew & (n_term == tm)
        seats[idx] = np.where(cont, n_seats, np.where(wb, np.maximum(
            1, np.round(0.8 * seats[idx])), seats[idx])).astype(np.int64)
        plan[idx] = np.where(cont, n_plan, plan[idx])
        term[idx] = np.where(cont, n_term, np.where(wb, wb_term, tm))
        base_disc[idx] = np.where(cont, n_base, np.where(wb, p.winback_discount, base_disc[idx]))
        disc[idx] = np.where(cont, n_disc, np.where(wb, p.winback_discount, disc[idx]))
        auto[idx] = np.where(cont, n_auto, np.where(wb, True, auto[idx]))
        k[idx] = np.where(same_chain, k[idx] + 1, 1)
        anchor[idx] = np.where(same_chain, anchor[idx], nxt)
        spell[idx] = np.where(wb, nxt, spell[idx])
        s_day[idx] = nxt
        bonus_next[idx] = 0.0
        alive[idx] = (cont | wb) & (nxt <= last)

    def cat(d: dict[str, list[np.ndarray]], key: str, dtype: Any = None) -> np.ndarray:
        v = np.concatenate(d[key]) if d[key] else np.zeros(0)
        return v.astype(dtype) if dtype is not None else v

    ri = cat(rows, "i", np.int64)
    o = np.lexsort((cat(rows, "start"), ri))
    r = {key: cat(rows, key)[o] for key in rows}
    ri = r["i"].astype(np.int64)
    r_start, r_end = r["start"].astype(np.int64), r["end"].astype(np.int64)
    r_seats = r["seats"].astype(np.int64)
    r_plan = r["plan"].astype(np.int64)
    r_term = r["term"].astype(np.int64)
    r_disc = r["disc"].astype(np.float64)
    r_mrr = np.round(r_seats * np.array(p.plan_price)[r_plan], 2)
    ended = r_end >= 0

    def dates(day: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
        v = (np.asarray(day, np.int64) + d0).astype(np.int32)
        return pa.array(v, pa.date32(), mask=mask)

    r_ids = pc.take(ids, pa.array(ri))
    subscriptions = pa.table({
        "customer_id": r_ids,
        "start_date": dates(r_start),
        "end_date": dates(np.maximum(r_end, 0), ~ended),
        "plan": _names(SAAS_PLANS, r_plan),
        "mrr": r_mrr,
        "renewal_date": dates(r["renewal"]),
        "seats": r_seats,
        "discount": r_disc,
        "auto_renew": r["auto"].astype(bool),
        "term_months": r_term,
    })
    gt_terms = subscriptions.append_column("base_discount", pa.array(r["base"], pa.float64()))
    for name, val in (("spell_start", dates(r["spell"])), ("anchor_date", dates(r["anchor"])),
                      ("term_index", pa.array(r["k"].astype(np.int64))),
                      ("end_reason", _names(END_REASONS, r["reason"].astype(np.int64)))):
        gt_terms = gt_terms.append_column(name, val)

    # --- invoices: one per term, at its start, for the whole term
    inv_t = r_start + rng.uniform(0.375, 0.7, len(ri))
    amount = np.round(r_mrr * r_term * (1.0 - r_disc), 2)
    transactions = pa.table({
        "customer_id": r_ids,
        "ts": _ts(start_s, inv_t, t_end_f),
        "amount": amount,
        "order_id": _ids("INV", invoice_offset + np.arange(len(ri)), 10),
        "quantity": r_seats,
    })

    # --- usage: daily rollups while subscribed, over the days [start, end) of each term
    stop = np.where(ended, r_end, n_days)
    length = np.maximum(stop - r_start, 0)
    ci = np.repeat(ri, length)
    first = np.repeat(np.cumsum(length) - length, length)
    cd = np.repeat(r_start, length) + (np.arange(len(ci)) - first)
    c_seats = np.repeat(r_seats, length).astype(np.float64)
    ch = H[ci, cal.week(cd)]
    factor, weekday = cal.day_factors(n_days, p)
    p_wd = _sigmoid(p.seat_intercept + propensity[ci] + p.seat_health * ch)
    act = rng.binomial(c_seats.astype(np.int64), p_wd * factor[cd])
    logins = act + rng.poisson(p.logins_extra_per_seat * act)
    reports = rng.poisson(p.reports_per_seat * act * np.exp(p.report_health * ch))
    api = np.zeros(len(ci), np.int64)
    integ = np.flatnonzero(integrated[ci])
    api[integ] = rng.poisson(p.api_base * c_seats[integ] ** p.api_seats_exponent
                             * np.exp(p.api_health * ch[integ])
                             * np.where(weekday[cd[integ]], 1.0, p.api_weekend))
    sunday = np.flatnonzero((cd + cal.wd0) % 7 == 6)
    q_week = 1.0 - (1.0 - p_wd[sunday]) ** 5 * (1.0 - p.weekend_factor * p_wd[sunday]) ** 2
    weekly = rng.binomial(c_seats[sunday].astype(np.int64), q_week)
    support = np.where(weekday[cd], 1.0, p.support_weekend)
    tickets = rng.poisson(p.ticket_base * c_seats ** p.ticket_seats_exponent
                          * np.exp(p.ticket_health * ch) * support)
    complaints = rng.poisson(p.complaint_base * c_seats ** p.complaint_seats_exponent
                             * np.exp(p.complaint_health * ch) * support)
    # One column per event type; the non-zero cells, read row-major, are the events in
    # (account, day, type) order (the cells are in account and day order).
    counts = np.zeros((len(ci), len(SAAS_EVENT_TYPES)), np.int64)
    counts[:, 0], counts[:, 1], counts[:, 2] = logins, api, reports
    counts[sunday, 3] = weekly
    counts[:, 4], counts[:, 5] = tickets, complaints
    e_cell, e_type = np.nonzero(counts)
    e_count = counts[e_cell, e_type]
    del counts
    support_ev = e_type >= 4
    e_t = cd[e_cell] + np.where(support_ev, rng.uniform(0.33, 0.75, len(e_cell)), 0.0)
    e_i = ci[e_cell]
    u = rng.random(len(e_cell))
    web, app, api_c, email, phone, chat = range(len(SAAS_EVENT_CHANNELS))
    e_ch = np.select(
        [e_type == 0, e_type == 1, e_type == 2, e_type == 3, e_type == 4],
        [np.where(u < 0.55, web, app), np.full(len(u), api_c), np.full(len(u), web),
         np.full(len(u), -1),
         np.where(u < 0.45, email, np.where(u < 0.8, chat, phone))],
        default=np.where(u < 0.6, phone, email),
    )
    events = pa.table({
        "customer_id": pc.take(ids, pa.array(e_i)),
        "ts": _ts(start_s, e_t, t_end_f),
        "event_type": _names(SAAS_EVENT_TYPES, e_type),
        "channel": pc.if_else(pa.array(e_ch < 0), pa.scalar(None, pa.string()),
                              _names(SAAS_EVENT_CHANNELS, np.maximum(e_ch, 0))),
        "count": e_count,
    })

    # --- campaigns
    cm = {key: cat(camp_rec, key) for key in camp_rec}
    cmi = cm["i"].astype(np.int64)
    o = np.lexsort((cm["t"], cmi))
    cm = {key: v[o] for key, v in cm.items()}
    cmi = cmi[o]
    campaigns = pa.table({
        "customer_id": pc.take(ids, pa.array(cmi)),
        "ts": _ts(start_s, cm["t"], t_end_f),
        "action_id": _names(SAAS_ACTIONS, cm["action"].astype(np.int64)),
        "treated": cm["treated"].astype(bool),
    })
    gt_campaigns = campaigns
    for name, val in (("t_day", pa.array(cm["t"], pa.float64())),
                      ("health_at_contact", pa.array(cm["h"], pa.float64())),
                      ("renewal_date", dates(cm["renewal"])),
                      ("logit_shift", pa.array(cm["shift"], pa.float64())),
                      ("discount_bonus", pa.array(cm["bonus"], pa.float64()))):
        gt_campaigns = gt_campaigns.append_column(name, val)

    # --- ground truth
    rn = {key: cat(ren_rec, key) for key in ren_rec}
    o = np.lexsort((rn["day"], rn["i"]))
    rn = {key: v[o] for key, v in rn.items()}
    gt_renewals = pa.table({
        "customer_id": pc.take(ids, pa.array(rn["i"].astype(np.int64))),
        "renewal_date": dates(rn["day"]),
        "term_months": rn["term"].astype(np.int64),
        "health": rn["h"].astype(np.float64),
        "campaign_shift": rn["shift"].astype(np.float64),
        "p_cancel": rn["pc"].astype(np.float64),
        "p_lapse": rn["pl"].astype(np.float64),
        "outcome": _names(OUTCOMES, rn["outcome"].astype(np.int64)),
        "gap_days": pa.array(rn["gap"].astype(np.int64), mask=rn["gap"] < 0),
    })
    cn = {key: cat(can_rec, key) for key in can_rec}
    o = np.lexsort((cn["day"], cn["i"]))
    cn = {key: v[o] for key, v in cn.items()}
    cni = cn["i"].astype(np.int64)
    gt_cancellations = pa.table({
        "customer_id": pc.take(ids, pa.array(cni)),
        "cancel_date": dates(cn["day"]),
        "kind": _names(CANCEL_KINDS, cn["kind"].astype(np.int64)),
        "term_months": cn["term"].astype(np.int64),
        "health": cn["h"].astype(np.float64),
        "p_cancel": cn["p"].astype(np.float64),
        "winback_date": dates(np.maximum(cn["wb"], 0), cn["wb"] < 0),
    })
    n_cancel = np.bincount(cni, minlength=n)
    first_cancel = np.full(n, -1, np.int64)
    if len(cni):
        firsts = np.flatnonzero(np.r_[True, cni[1:] != cni[:-1]])
        first_cancel[cni[firsts]] = cn["day"][firsts].astype(np.int64)
    last_row = np.flatnonzero(np.r_[ri[1:] != ri[:-1], True])
    status = np.zeros(n, np.int64)  # active
    lr_reason = r["reason"][last_row].astype(np.int64)
    status[ri[last_row]] = np.where(lr_reason == 4, 0, np.where(lr_reason == 1, 1, 2))
    gt_accounts = pa.table({
        "customer_id": ids,
        "signup_date": dates(signup),
        "segment": _names(SAAS_SEGMENTS, seg),
        "region": _names(REGIONS, region),
        "channel": _names(SAAS_CHANNELS, channel),
        "industry": _names(SAAS_INDUSTRIES, industry),
        "health_mean": mu,
        "usage_propensity": propensity,
        "integrated": integrated,
        "n_cancellations": n_cancel.astype(np.int64),
        "first_cancel_date": dates(np.maximum(first_cancel, 0), first_cancel < 0),
        "status_at_end": _names(("active", "lapsed", "cancelled"), status),
    })
    customers = gt_accounts.select(["customer_id", "signup_date", "segment", "region",
                                    "channel", "industry"])
    hw = np.arange(n_weeks)[None, :] >= sw[:, None]
    hi, hwk = np.nonzero(hw)
    gt_health = pa.table({
        "customer_id": pc.take(ids, pa.array(hi)),
        "week_start": dates(cal.week_start(hwk)),
        "health": H[hi, hwk],
        "regime": _names(REGIMES, R8[hi, hwk].astype(np.int64)),
        "midterm_hazard_monthly": lam[hi, hwk] * DAYS_PER_MONTH,
    })
    return _SaasChunk(
        tables={
            "customers": customers,
            "subscriptions": subscriptions,
            "transactions": transactions,
            "events": events,
            "campaigns": campaigns,
            "gt_accounts": gt_accounts,
            "gt_health": gt_health,
            "gt_terms": gt_terms,
            "gt_renewals": gt_renewals,
            "gt_cancellations": gt_cancellations,
            "gt_campaigns": gt_campaigns,
        },
        n_invoices=len(ri),
    )


def _generate_contractual_into(
    tmp: Path,
    out_dir: Path,
    n_customers: int,
    seed: int,
    start: date,
    end: date,
    fmt: str,
    progress: Callable[[int, int], None] | None,
    t_start: float,
) -> DemoSummary:
    p = SaasParams()
    cs = p.chunk_size
    n_chunks = -(-n_customers // cs)
    children = np.random.SeedSequence([seed, 0x5AA5]).spawn(n_chunks + 1)
    n_days = (end - start).days + 1
    cal = _Calendar(start)
    signups = _saas_signup_days(np.random.default_rng(children[0]), n_customers, n_days, cal, p)
    id_width = max(7, len(str(n_customers - 1)))
    names = ["customers", "transactions", "events", "campaigns", "subscriptions"]
    writers = {k: _TableWriter(tmp / f"{k}.{fmt}", _SAAS_SCHEMAS[k], fmt) for k in names}
    writers |= {
        k: _TableWriter(tmp / "ground_truth" / f"{v}.parquet", _SAAS_SCHEMAS[k], "parquet")
        for k, v in SAAS_GT_FILES.items()
    }
    invoices = 0
    try:
        for c in range(n_chunks):
            lo, hi = c * cs, min((c + 1) * cs, n_customers)
            chunk = _simulate_saas_chunk(np.random.default_rng(children[c + 1]), signups[lo:hi],
                                         lo, id_width, invoices, start, n_days, p)
            invoices += chunk.n_invoices
            for k, w in writers.items():
                w.write(chunk.tables[k])
            if progress is not None:
                progress(hi, n_customers)
    finally:
        for w in writers.values():
            w.close()
    omitted = _omit_empty_tables(tmp, names, writers, fmt, start, end, "")
    meta = {
        "generator": "churnguard.features.demo_data",
        "version": GENERATOR_VERSION,
        "business": "b2b_saas",
        "seed": seed,
        "n_customers": n_customers,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "subscriptions": True,
        "format": fmt,
        "params": p.to_json(),
    }
    (tmp / "ground_truth" / "params.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    summary = DemoSummary(
        out_dir=out_dir,
        n_customers=n_customers,
        n_transactions=writers["transactions"].rows,
        n_events=writers["events"].rows,
        n_campaign_contacts=writers["campaigns"].rows,
        n_subscriptions=writers["subscriptions"].rows,
        start=start,
        end=end,
        seed=seed,
        seconds=time.perf_counter() - t_start,
        omitted=omitted,
    )
    (tmp / "README.md").write_text(_contractual_readme(summary, fmt, p))
    return summary


def _contractual_readme(summary: DemoSummary, fmt: str, p: SaasParams) -> str:
    ext = fmt
    omitted = "".join(
        f"\nNot written: `{k}.{ext}` (no rows in this period; a missing optional table means "
        "none, an empty file would break the data contract).\n" for k in summary.omitted)
    return f"""# churnguard synthetic B2B SaaS demo data (contractual churn)

Generated by `churnguard.features.demo_data` v{GENERATOR_VERSION} with `--subscriptions`:
{summary.n_customers} accounts, {summary.start} .. {summary.end}, seed {summary.seed}. Timestamps
are naive UTC, second resolution. Every account subscribes on its signup date; churn is
contractual: an account has churned at a date when none of its subscriptions is active then
(`churnguard features grid --contractual`).

## Tables
- `customers.{ext}`: customer_id, signup_date, segment (smb, mid_market, enterprise), region,
  channel (acquisition: self_serve, inbound_sales, outbound_sales, partner), industry.
- `subscriptions.{ext}`: **one row per term**. customer_id, start_date, end_date (null while the
  term runs at the data's end), plan (starter, team, business, enterprise), mrr (seats x the
  plan's list price per seat and month, before the discount), renewal_date (the scheduled end
  of the term, known when it starts), seats, discount (fraction off, 0 .. {p.max_discount}),
  auto_renew, term_months (1, 6 or 12). At a renewal the row ends and the next one starts the
  same day (seat, plan, term and discount changes happen there): continuity, no churn. A row
  ending before its renewal_date is a mid-term cancellation. A late payment ends the row at the
  renewal and the next starts 1-{p.lapse_max_gap_days} days later (a grace period should not
  call that churn); a win-back starts a new row after a gap of {p.winback_min_gap_days}+ days.
- `transactions.{ext}`: invoices, one per term at its start: amount = mrr x term_months x
  (1 - discount), order_id `INV...`, quantity = seats. Annual accounts pay once a year, so "no
  purchase in 30 days" says nothing about their churn.
- `events.{ext}`: daily usage rollups with `count`, only on days with activity: login (logins,
  channel web/app), api_call (integrated accounts), report_run, seat_active (weekly: distinct
  active seats Monday-Sunday, stamped on the Sunday, channel null), support_ticket and
  complaint (timestamped within the day, channel email/chat/phone).
- `campaigns.{ext}`: customer_id, ts, action_id ({", ".join(SAAS_ACTIONS)}), treated.
  Renewal outreach {p.campaign_lead_days[2]} days before the renewal of six-month/annual terms
  and {p.campaign_lead_days[0]} days before that of monthly terms with a net MRR of at least
  {p.campaign_min_mrr:.0f}; at-risk accounts are targeted more often, and within the targeted
  treatment is randomised ({100 * p.treated_share:.0f}% treated, the rest a hold-out).
{omitted}
## Ground truth (`ground_truth/`, always Parquet)
- `accounts.parquet`: static attributes, health_mean (the account's latent mean health),
  usage_propensity (its usage level, unrelated to health), integrated (API integration),
  number and first date of cancellations, status at the end.
- `health.parquet`: the latent health per account and week (valid Monday..Sunday from
  week_start), its regime (steady/declining) and the mid-term cancellation hazard per month.
- `terms.parquet`: the subscription rows plus base_discount (before a campaign bonus),
  spell_start (start of the subscription spell, for tenure), anchor_date/term_index (billing
  anchor) and end_reason (renewed, lapsed, cancelled, mid_term, open).
- `renewals.parquet`: every renewal decision: health, campaign shift, the true probability of
  cancelling p_cancel and of paying late p_lapse, outcome and the gap of a late payment.
- `cancellations.parquet`: realised cancellations (renewal or mid_term) with the probability
  (renewal) or monthly hazard (mid-term) behind them, and the win-back date if any.
- `campaigns.parquet`: every contact with the account's health and the true effect
  (logit_shift on the renewal decision, discount_bonus on the next term).
- `params.json`: every generator parameter (`SaasParams`).

## Process
Health h = mu + x per week: x is AR(1) (phi {p.health_phi}, sd {p.health_sigma}) with a
declining regime (entered with P {p.decline_start_prob}/week, left with
P {p.decline_end_prob}/week, drift {p.decline_drift}/week). At a renewal,
logit P(cancel) = intercept[term] - {p.cancel_health} h + {p.cancel_early_tenure} (first
{p.early_tenure_months:.0f} months) + {p.cancel_manual_renewal} (no auto-renew)
{p.cancel_discount:+} discount {p.cancel_log_seats:+} log(seats) {p.cancel_integrated:+}
(integrated) + segment + campaign shift, intercepts {p.cancel_intercept} for 1/6/12-month terms;
otherwise a late payment with P {p.lapse_prob} (by term, auto/manual). Between renewals a small
mid-term hazard {p.midterm_hazard_monthly}/month x exp(-{p.midterm_health} h). Usage (seats
active per weekday: sigmoid({p.seat_intercept} + u + {p.seat_health} h), u ~ N(0,
{p.usage_account_sd}) per account) falls and tickets rise as health falls, so usage declines in
the weeks before most cancellations.
`churnguard.features.demo_data.contractual_oracle(DIR, cutoff, horizon_days)` gives each account
subscribed at the cutoff the true probability that no subscription of theirs is active at
cutoff + horizon, from the latent state at the cutoff.
"""


# --- the oracle --------------------------------------------------------------------------------


def _read_contractual_ground_truth(
    data: Path | str | Mapping[str, Any], cutoff: date
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """(params.json, frames) from a demo directory, its ground_truth/ or a mapping of frames."""
    if isinstance(data, Mapping):
        meta = dict(data["params"])
        frames = {k: pd.DataFrame(data[k]) for k in ("accounts", "health", "terms", "campaigns")}
    else:
        gt = Path(data)
        if not (gt / "params.json").exists():
            gt = gt / "ground_truth"
        if not (gt / "params.json").exists():
            raise ValueError(f"{data} has no ground_truth/params.json; not a demo data directory")
        meta = json.loads((gt / "params.json").read_text())
        if meta.get("business") != "b2b_saas":
            raise ValueError(f"{data} is not a contractual demo (generate it with "
                             "--subscriptions); use oracle_churn_probability")
        week = [cutoff - timedelta(days=7), cutoff - timedelta(days=1)]
        frames = {
            "accounts": pq.read_table(gt / "accounts.parquet").to_pandas(),
            "health": pq.read_table(
                gt / "health.parquet", columns=["customer_id", "week_start", "health", "regime"],
                filters=[("week_start", ">=", week[0]),
                         ("week_start", "<=", week[1])]).to_pandas(),
            "terms": pq.read_table(gt / "terms.parquet",
                                   filters=[("start_date", "<", cutoff)]).to_pandas(),
            "campaigns": pq.read_table(gt / "campaigns.parquet").to_pandas(),
        }
    if meta.get("business") != "b2b_saas":
        raise ValueError("not the ground truth of a contractual demo (--subscriptions)")
    return meta, frames


def _day_index(values: pd.Series, start: date, missing: int = -1) -> np.ndarray:
    """Days since ``start`` of a date column (``missing`` where null)."""
    days = (pd.to_datetime(values) - pd.Timestamp(start)).dt.days
    return days.fillna(missing).to_numpy().astype(np.int64)


def contractual_oracle(
    data: Path | str | Mapping[str, Any],
    cutoff: date,
    horizon_days: int,
    *,
    n_sims: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """True probability that an account subscribed at ``cutoff`` has no subscription active at
    ``cutoff + horizon_days`` (the contractual label of :func:`churnguard.features.build.
    label_sql`), under the contractual demo's data-generating process.

    ``data``: the demo directory, its ``ground_truth/`` or a mapping with ``params`` (the
    parsed params.json) and the ``accounts``, ``health``, ``terms`` and ``campaigns`` frames.
    Conditions only on the latent state at the start of ``cutoff``: each account's health and
    regime that week, its current term (start, renewal date, plan, seats, discount, auto-renew,
    billing anchor, spell start) and the campaign contacts of that term before the cutoff.
    Integrates over the future by Monte Carlo with the generator's own functions (health
    steps, campaign targeting, seat/plan/term changes at renewals), Rao-Blackwellised: along
    each of ``n_sims`` simulated futures the mid-term, cancellation and late-payment
    probabilities are summed analytically instead of drawn. Win-backs need a gap of at least
    ``winback_min_gap_days`` (90): exact for horizons up to that; beyond, a won-back account is
    assumed to stay subscribed until the horizon (an error far below 0.1 points).
    Deterministic for a given ``seed``. Returns ``customer_id``, ``churn_probability``.
    """
    if not isinstance(horizon_days, int) or horizon_days < 1:
        raise ValueError(f"horizon_days must be a positive integer, got {horizon_days!r}")
    if n_sims < 1:
        raise ValueError(f"n_sims must be >= 1, got {n_sims}")
    meta, fr = _read_contractual_ground_truth(data, cutoff)
    p = SaasParams.from_json(meta["params"])
    start, end = date.fromisoformat(meta["start"]), date.fromisoformat(meta["end"])
    if not isinstance(cutoff, date) or not start < cutoff <= end:
        raise ValueError(f"cutoff {cutoff} must be a date in ({start}, {end}]")
    cal = _Calendar(start)
    T = (cutoff - start).days
    TH = T + horizon_days  # label day: active there iff a row has start < TH <= end

    terms = fr["terms"]
    t_start = _day_index(terms["start_date"], start)
    t_end = _day_index(terms["end_date"], start, missing=10**9)
    cur = terms[(t_start < T) & (t_end >= T)].drop_duplicates("customer_id")
    empty = pd.DataFrame({"customer_id": pd.Series([], dtype=str),
                          "churn_probability": pd.Series([], dtype=float)})
    if cur.empty:
        return empty
    acc = fr["accounts"].set_index("customer_id")
    cur = cur.sort_values("customer_id").reset_index(drop=True)
    ids = cur["customer_id"].to_numpy()
    n = len(cur)
    seg = pd.Categorical(acc.loc[ids, "segment"], categories=SAAS_SEGMENTS).codes.astype(
        np.int64)
    mu = acc.loc[ids, "health_mean"].to_numpy(np.float64)
    integ = acc.loc[ids, "integrated"].to_numpy(bool)
    w_t = int(cal.week(T - 1))
    hl = fr["health"]
    hl = hl[_day_index(hl["week_start"], start) == int(cal.week_start(w_t))]
    hl = hl.drop_duplicates("customer_id").set_index("customer_id")
    x0 = hl.loc[ids, "health"].to_numpy(np.float64) - mu
    reg0 = (hl.loc[ids, "regime"].to_numpy() == REGIMES[1]).astype(np.int8)
    s0 = _day_index(cur["start_date"], start)
    R0 = _day_index(cur["renewal_date"], start)
    # Campaign contacts of the current term before the cutoff.
    camp = fr["campaigns"]
    camp = camp[(camp["t_day"] < T) & camp["customer_id"].isin(ids)]
    key = pd.Series(np.arange(n), index=pd.MultiIndex.from_arrays(
        [ids, R0], names=["customer_id", "r"]))
    ck = pd.MultiIndex.from_arrays([camp["customer_id"].to_numpy(),
                                    _day_index(camp["renewal_date"], start)])
    hit = key.reindex(ck).to_numpy()
    ok = ~np.isnan(hit)
    shift0, bonus0 = np.zeros(n), np.zeros(n)
    shift0[hit[ok].astype(np.int64)] = camp["logit_shift"].to_numpy()[ok]
    bonus0[hit[ok].astype(np.int64)] = camp["discount_bonus"].to_numpy()[ok]
    state0 = {
        "s": s0, "R": R0,
        "anchor": _day_index(cur["anchor_date"], start),
        "k": cur["term_index"].to_numpy(np.int64),
        "term": cur["term_months"].to_numpy(np.int64),
        "plan": pd.Categorical(cur["plan"], categories=SAAS_PLANS).codes.astype(np.int64),
        "seats": cur["seats"].to_numpy(np.int64),
        "base": cur["base_discount"].to_numpy(np.float64),
        "disc": cur["discount"].to_numpy(np.float64),
        "auto": cur["auto_renew"].to_numpy(bool),
        "spell": _day_index(cur["spell_start"], start),
        "shift": shift0, "bonus": bonus0,
    }
    n_weeks = int(cal.week(TH)) - w_t + 1
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC047]))
    out = np.zeros(n)
    batch = max(1, 400_000 // n_sims)
    for b0 in range(0, n, batch):
        sel = np.arange(b0, min(b0 + batch, n))
        rep = np.tile(sel, n_sims)
        out[sel] = _oracle_batch(rng, rep, state0, mu, x0, reg0, seg, integ, T, TH, w_t,
                                 n_weeks, cal, p).reshape(n_sims, len(sel)).mean(axis=0)
    return pd.DataFrame({"customer_id": ids, "churn_probability": np.clip(out, 0.0, 1.0)})


def _oracle_batch(rng: np.random.Generator, rep: np.ndarray, state0: dict[str, np.ndarray],
                  mu: np.ndarray, x0: np.ndarray, reg0: np.ndarray, seg_all: np.ndarray,
                  integ_all: np.ndarray, T: int, TH: int, w_t: int, n_weeks: int,
                  cal: _Calendar, p: SaasParams) -> np.ndarray:
    """P(no subscription active on day TH) for each simulated future (rows ``rep``)."""
    m = len(rep)
    seg, integ = seg_all[rep], integ_all[rep]
    H = np.empty((m, n_weeks))
    x, reg = x0[rep].copy(), reg0[rep].copy()
    H[:, 0] = mu[rep] + x
    for j in range(1, n_weeks):
        x, reg = _health_step(rng, x, reg, p)
        H[:, j] = mu[rep] + x
    lam = _midterm_rate(H, p)
    cw = _cum_hazard(lam)

    def health_on(day: np.ndarray, r: np.ndarray) -> np.ndarray:
        return H[r, np.clip(cal.week(day) - w_t, 0, n_weeks - 1)]

    def winback_by_label(day: np.ndarray) -> np.ndarray:
        """P(a cancellation on ``day`` is won back with a row starting before TH)."""
        room = TH - 1 - day - p.winback_min_gap_days
        return np.where(room >= 0, p.winback_prob * (
            1.0 - np.exp(-(room + 1.0) / p.winback_mean_extra_days)), 0.0)

    st = {k: v[rep].copy() for k, v in state0.items()}
    weight = np.ones(m)  # P(still subscribed along this future)
    gone = np.zeros(m)  # P(not subscribed on day TH)
    live = np.ones(m, bool)
    while live.any():
        i = np.flatnonzero(live)
        s, R, tm = st["s"][i], st["R"][i], st["term"][i]
        # Campaign contact of this term still to come (before the label day).
        c = R - np.array(p.campaign_lead_days)[_term_code(tm)]
        elig = (_campaign_eligible(tm, st["seats"][i], st["plan"][i], st["disc"][i], p)
                & (c >= np.maximum(T, s + 1)) & (c < TH) & (R < TH))
        targeted, _, _, shift, bonus = _campaign_draws(rng, health_on(c, i), seg[i], p)
        contact = elig & targeted
        st["shift"][i] = np.where(contact, shift, st["shift"][i])
        st["bonus"][i] = np.where(contact, bonus, st["bonus"][i])
        # Mid-term cancellations on days max(T, s+1) .. min(R-1, TH-1).
        a = np.maximum(T, s + 1)
        b = np.minimum(R - 1, TH - 1)
        has = b >= a
        a_c = np.where(has, a, T)
        b_c = np.where(has, b, T)
        lam_ab = np.where(has, _cum_at(cw, lam, i, b_c + 1, cal, w_t)
                          - _cum_at(cw, lam, i, a_c, cal, w_t), 0.0)
        p_mid = 1.0 - np.exp(-lam_ab)
        gone[i] += weight[i] * p_mid * (1.0 - winback_by_label((a_c + b_c) // 2))
        weight[i] *= 1.0 - p_mid
        # The renewal decision at R, if before the label day.
        at = R < TH
        h_r = health_on(R, i)
        early = (R - st["spell"][i]) < p.early_tenure_months * DAYS_PER_MONTH
        pcan, plap = _renewal_probs(h_r, seg[i], tm, st["auto"][i], st["disc"][i],
                                    st["seats"][i], integ[i], early, st["shift"][i], p)
        k_gap = TH - R  # a late payment with a gap >= k_gap leaves day TH uncovered
        g_max = p.lapse_max_gap_days
        cover = np.clip((g_max - k_gap + 1) / g_max, 0.0, 1.0)
        w_i = weight[i]
        gone[i] += np.where(at, w_i * (pcan * (1.0 - winback_by_label(R))
                                       + (1.0 - pcan) * plap * cover), 0.0)
        stay = (1.0 - pcan) * (1.0 - plap * cover)
        weight[i] = np.where(at, w_i * stay, w_i)
        # Continue this future with a renewal or a short late payment (drawn).
        p_short = plap * (1.0 - cover) / np.maximum(1.0 - plap * cover, 1e-12)
        short = rng.random(len(i)) < p_short
        n_short = np.maximum(np.minimum(k_gap - 1, g_max), 1)
        gap = 1 + np.floor(rng.random(len(i)) * n_short).astype(np.int64)
        n_seats, n_plan, n_term, n_base, n_disc, n_auto = _renewal_changes(
            rng, h_r, seg[i], tm, st["plan"][i], st["seats"][i], st["base"][i],
            st["auto"][i], st["bonus"][i], p)
        nxt = np.where(short, R + gap, R)
        same_chain = ~short & (n_term == tm)
        upd = {"seats": n_seats, "plan": n_plan, "term": n_term, "base": n_base,
               "disc": n_disc, "auto": n_auto}
        for k2, v in upd.items():
            st[k2][i] = np.where(at, v, st[k2][i])
        new_k = np.where(same_chain, st["k"][i] + 1, 1)
        new_anchor = np.where(same_chain, st["anchor"][i], nxt)
        st["k"][i] = np.where(at, new_k, st["k"][i])
        st["anchor"][i] = np.where(at, new_anchor, st["anchor"][i])
        st["s"][i] = np.where(at, nxt, s)
        st["shift"][i] = np.where(at, 0.0, st["shift"][i])
        st["bonus"][i] = np.where(at, 0.0, st["bonus"][i])
        st["R"][i] = np.where(at, _add_months_days(new_anchor, new_k * n_term, cal.start), R)
        live[i] = at & (nxt < TH - 1)
    return gone
