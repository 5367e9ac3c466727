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
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
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
from churnguard.features.io import atomic_output

__all__ = ["DemoSummary", "generate_demo_data", "oracle_churn_probability"]

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
    "subscriptions": pa.schema(
        [
            ("customer_id", pa.string()),
            ("start_date", pa.date32()),
            ("end_date", pa.date32()),
            ("plan", pa.string()),
            ("mrr", pa.float64()),
            ("renewal_date", pa.date32()),
            ("term_months", pa.int64()),
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
                      "plan", "stage", "stage_at_contact", "stage_at_end"}
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
    subscriptions: bool,
) -> dict[str, pa.Table]:
    n = len(signup)
    t_end_f = float((end - start).days + 1)
    start_s = (start - date(1970, 1, 1)).days * SECONDS_PER_DAY
    lat = sim.draw_latent(rng, signup, params)
    t_end = np.full(n, t_end_f)
    camps = sim.campaign_times(start, 0.0, t_end_f, params)
    res = sim.simulate_forward(rng, lat, StartState.fresh(signup), t_end, camps, params)
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
    if subscriptions:
        out["subscriptions"] = _subscriptions(rng, ids, lat, signup, death, start, end)
    return out


def _add_months(d: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Calendar month arithmetic on datetime64[D], clipping to the month's last day."""
    m = d.astype("datetime64[M]")
    dom = (d - m.astype("datetime64[D]")).astype(np.int64)
    target = m + months
    dim = ((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(np.int64)
    return target.astype("datetime64[D]") + np.minimum(dom, dim - 1)


def _subscriptions(
    rng: np.random.Generator,
    ids: pa.Array,
    lat: Latent,
    signup: np.ndarray,
    death: np.ndarray,
    start: date,
    end: date,
) -> pa.Table:
    """Subscriptions: one per subscribing customer, split at plan changes, churn at renewal.

    A subscription runs in monthly or annual terms from the signup date; the customer's latent
    churn (death) takes effect at the first renewal on or after it. At each renewal the plan
    changes with a small probability, shown as one row ending and another starting that day.
    """
    n = len(lat)
    seg = lat.segment
    subscribes = rng.random(n) < np.array([0.35, 0.7, 0.9])[seg]
    si = np.flatnonzero(subscribes)
    term = np.where(rng.random(len(si)) < np.array([0.75, 0.5, 0.2])[seg[si]], 1, 12)
    plan0 = np.minimum(seg[si] + (rng.random(len(si)) < 0.3), 2)
    d0 = np.datetime64(start, "D") + np.floor(signup[si]).astype(np.int64)
    end_d = np.datetime64(end, "D")
    death_d = np.datetime64(start, "D") + np.where(
        np.isfinite(death[si]), np.ceil(death[si]), 10**6
    ).astype(np.int64)
    # Number of renewals until both the churn and the end of data are passed.
    max_k = np.ceil((np.minimum(death_d, end_d + 1) - d0).astype(np.int64) / (28 * term)) + 1
    max_k = max_k.astype(np.int64)
    r = np.repeat(np.arange(len(si)), max_k)
    k = np.arange(len(r)) - np.repeat(np.cumsum(max_k) - max_k, max_k) + 1
    ren = _add_months(d0[r], k * term[r])
    prev = _add_months(d0[r], (k - 1) * term[r])
    # Keep terms that start before churn takes effect and no later than end.
    live = (prev < death_d[r]) & (prev <= end_d)
    r, k, ren, prev = r[live], k[live], ren[live], prev[live]
    churns = (ren >= death_d[r]) & (ren <= end_d)
    step = np.where(rng.random(len(r)) < 0.6, 1, -1)
    wants = (rng.random(len(r)) < 0.03) & ~churns & (ren <= end_d)
    # Plan of each term: initial plan plus the customer's earlier plan changes (clipped).
    first_of_cust = np.ones(len(r), bool)
    first_of_cust[1:] = r[1:] != r[:-1]
    delta = np.where(wants, step, 0)
    cs = np.cumsum(delta)
    cust_base = np.maximum.accumulate(np.where(first_of_cust, np.arange(len(r)), 0))
    shift = cs - delta - (cs[cust_base] - delta[cust_base])
    plan = np.clip(plan0[r] + shift, 0, 2)
    # A plan change at a renewal ends one subscription row and starts another the same day.
    change = np.zeros(len(r), bool)
    change[:-1] = ~first_of_cust[1:] & (plan[1:] != plan[:-1])
    grp_start = first_of_cust.copy()
    grp_start[1:] |= change[:-1]
    g_first = np.flatnonzero(grp_start)
    g_last = np.append(g_first[1:] - 1, len(r) - 1)
    gr = r[g_first]
    ended = churns[g_last] | change[g_last]
    epoch = np.datetime64("1970-01-01", "D")
    # For ended rows the renewal date is the end date; for running rows it is the scheduled
    # end of the term running at `end`.
    renewal = (ren[g_last] - epoch).astype(np.int64)
    price = np.array(PLAN_PRICE)[plan[g_first]]
    seats = np.array([1.0, 3.0, 12.0])[seg[si[gr]]]
    mrr = np.round(price * seats * np.where(term[gr] == 12, 0.85, 1.0), 2)
    return pa.table(
        {
            "customer_id": pc.take(ids, pa.array(si[gr])),
            "start_date": pa.array((prev[g_first] - epoch).astype(np.int32), pa.date32()),
            "end_date": pa.array(renewal.astype(np.int32), pa.date32(), mask=~ended),
            "plan": _names(PLANS, plan[g_first]),
            "mrr": mrr,
            "renewal_date": pa.array(renewal.astype(np.int32), pa.date32()),
            "term_months": term[gr].astype(np.int64),
        }
    )


def _readme(summary: DemoSummary, subscriptions: bool, fmt: str) -> str:
    ext = fmt
    sub = (
        f"- `subscriptions.{ext}`: customer_id, start_date, end_date (null = active at end), plan,"
        " mrr, renewal_date (scheduled end of the current term), term_months (1 or 12).\n"
        if subscriptions
        else ""
    )
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
{sub}{omitted}
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
"""


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
) -> DemoSummary:
    """Generate the synthetic CRM data set with ground truth into ``out_dir`` (atomically).

    Deterministic per ``seed``: customers are simulated in fixed-size chunks, each with its own
    RNG from ``numpy.random.SeedSequence(seed).spawn``, so the output is byte-identical across
    runs and memory stays bounded. ``end`` is inclusive: no row falls after ``end``'s last second.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    _validate(out_dir, n_customers, seed, start, end, fmt)
    params = SimParams()
    with atomic_output(out_dir) as tmp:  # out_dir is new or empty (validated above)
        (tmp / "ground_truth").mkdir(parents=True)
        return _generate_into(
            tmp, out_dir, n_customers, seed, start, end, subscriptions, fmt, progress, params,
            t_start,
        )


def _generate_into(
    tmp: Path,
    out_dir: Path,
    n_customers: int,
    seed: int,
    start: date,
    end: date,
    subscriptions: bool,
    fmt: str,
    progress: Callable[[int, int], None] | None,
    params: SimParams,
    t_start: float,
) -> DemoSummary:
    cs = params.chunk_size
    n_chunks = -(-n_customers // cs)
    children = np.random.SeedSequence(seed).spawn(n_chunks + 1)
    signups = _draw_signups(np.random.default_rng(children[0]), n_customers, start, end, params)
    t_end_f = (end - start).days + 1
    season = sim.season_by_day(start, t_end_f + 1, params)
    id_width = max(7, len(str(n_customers - 1)))
    names = ["customers", "transactions", "events", "campaigns"]
    if subscriptions:
        names.append("subscriptions")
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
                subscriptions,
            )
            orders += int(pc.sum(pc.greater(tables["transactions"]["amount"], 0)).as_py() or 0)
            for k, w in writers.items():
                w.write(tables[k])
            if progress is not None:
                progress(hi, n_customers)
    finally:
        for w in writers.values():
            w.close()
    omitted = _omit_empty_tables(tmp, names, writers, fmt, start, end, params)
    meta = {
        "generator": "churnguard.features.demo_data",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n_customers": n_customers,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "subscriptions": subscriptions,
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
    summary = DemoSummary(
        out_dir=out_dir,
        n_customers=n_customers,
        n_transactions=writers["transactions"].rows,
        n_events=writers["events"].rows,
        n_campaign_contacts=writers["campaigns"].rows,
        n_subscriptions=writers["subscriptions"].rows if subscriptions else 0,
        start=start,
        end=end,
        seed=seed,
        seconds=time.perf_counter() - t_start,
        omitted=omitted,
    )
    (tmp / "README.md").write_text(_readme(summary, subscriptions, fmt))
    return summary


def _omit_empty_tables(tmp: Path, names: list[str], writers: dict[str, _TableWriter], fmt: str,
                       start: date, end: date, params: SimParams) -> tuple[str, ...]:
    """Remove the files of optional tables without rows (an empty table breaks the contract;
    a missing optional one is none); raise ValueError if a required table has no rows."""
    empty = [k for k in names if writers[k].rows == 0]
    required = [k for k in empty if TABLES[k].required]
    if required:
        raise ValueError(f"{start} .. {end} has no {' and no '.join(required)} for these "
                         "customers; generate more customers or a longer period")
    for k in empty:
        why = (f" (campaigns start {params.campaign_first_month_offset} months after the first "
               "month)" if k == "campaigns" else "")
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
    Returns columns ``customer_id``, ``p_churn`` for every customer with signup_date < cutoff.
    """
    data_dir = Path(data_dir)
    gt = data_dir / "ground_truth"
    if not (gt / "params.json").exists():
        raise ValueError(f"{data_dir} has no ground_truth/params.json; not a demo data directory")
    meta = json.loads((gt / "params.json").read_text())
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
