"""``churnguard monitor``: is the served model still right? (README, "Monitoring").

At an as-of date, from the source and the prediction log:

- **feeds**: whether every table and event type still arrives (:func:`feed_health`): a feed
  that stopped is named as a broken feed, not only seen through the features it zeroes;
- **drift**: every feature's PSI and null rate against the bundle's reference profile
  (:mod:`churnguard.model.profile`; features with one value for every reference customer, the
  calendar's, are listed as ``not_compared``), and the PSI of the churn probabilities and CLVs the
  bundle gives the current customers;
- **estimated performance** before any label exists, from the calibrated probabilities
  (confidence-based performance estimation): if the model is calibrated, a customer with
  probability p churns with probability p, so the expected churn rate is mean(p), the expected
  log loss the mean binary entropy, and the ROC AUC is distributed as the AUC of labels drawn
  from p (Monte Carlo, 5-95 % band);
- **realized performance** of every logged batch run (prediction log, ``channel = batch``)
  whose churn label window has closed by the as-of date: ROC AUC, PR AUC, log loss, expected
  calibration error and the reliability curve against the labels the data now holds (the
  bundle's label definition), the CLV total error and Gini once the CLV window has closed too,
  overall and per value tier and lifecycle stage, beside what was estimated from the run's own
  probabilities; and per campaign action contacted in the window, the churn of the treated
  against the hold-out;
- **a verdict**: ``ok``, ``warn`` or ``alert`` by the settings' thresholds.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churnguard.features.build import LabelMode, feature_batches, label_sql
from churnguard.features.io import atomic_output
from churnguard.features.sources import Source
from churnguard.model import evaluate
from churnguard.model.bundle import ScoringBundle
from churnguard.model.profile import (
    OTHER,
    bin_counts,
    categorical_entry,
    current_shares,
    numeric_entry,
    population_stability_index,
    psi_from_counts,
)
from churnguard.model.score import predict_outputs
from churnguard.serving.predlog import LogLocation, read_prediction_log

log = logging.getLogger(__name__)

Verdict = Literal["ok", "warn", "alert"]
_ORDER: dict[str, int] = {"ok": 0, "warn": 1, "alert": 2}
#: Labels drawn from the probabilities for the estimated ROC AUC.
ESTIMATE_DRAWS = 200
#: Customers a realized group needs before its calibration gap counts.
GROUP_MIN_CUSTOMERS = 100
#: Customers (about) whose outputs are also scored at the reference's calendar, for the score
#: and CLV PSI: a hash sample where there are more. A PSI over 10 bins from 200,000 customers
#: is biased by about 9/200,000 (Kullback-Leibler's chi-square approximation), far below the
#: thresholds, where scoring every customer a second time costs as much as the first scoring.
REFERENCE_CALENDAR_CUSTOMERS = 200_000
#: Bins of the expected calibration error.
ECE_BINS = 10


@dataclass(frozen=True)
class Thresholds:
    """When a number turns a verdict to ``warn`` or ``alert`` (README, "Monitoring")."""

    psi_warn: float = 0.1
    psi_alert: float = 0.25
    null_rate_change_warn: float = 0.05
    auc_drop_alert: float = 0.05
    ece_alert: float = 0.05
    group_gap_warn: float = 0.05


def _status(psi: float, null_change: float, t: Thresholds) -> Verdict:
    if psi >= t.psi_alert:
        return "alert"
    if psi >= t.psi_warn or null_change >= t.null_rate_change_warn:
        return "warn"
    return "ok"


def _point_mass(entry: dict[str, Any]) -> bool:
    """A reference with one non-null value and no nulls."""
    shares = (list(entry["shares"].values()) if entry["kind"] == "categorical"
              else entry["shares"])
    return bool(shares) and max(shares) >= 1.0 - 1e-12 and float(entry["null_rate"]) == 0.0


def _rank_auc(ranks: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC from the scores' ranks (ties averaged, Mann-Whitney); NaN with one class. The
    ranks are computed once and reused by every draw of :func:`estimated_performance`."""
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def distribution(entry: dict[str, Any], values: np.ndarray | pd.Series) -> dict[str, Any]:
    """A numeric profile ``entry``'s inner bin ``edges`` and its ``reference_shares`` beside
    the ``current_shares`` of ``values`` in the same bins (what the PSI compares)."""
    return {"edges": list(entry["edges"]), "reference_shares": list(entry["shares"]),
            "current_shares": current_shares(entry, values).tolist()}


#: Rows a reliability bin needs before its correction counts in full (shrinkage weight
#: n / (n + this)).
ESTIMATE_SHRINK_ROWS = 200


def expected_labels(p: np.ndarray, reliability: dict[str, list[float]] | None) -> np.ndarray:
    """The churn probability each customer's label is drawn with in the estimate: ``p``
    itself, or with the bundle's out-of-time test reliability (``test_reliability``: per
    probability bin the mean prediction, the observed rate and the count), ``p`` plus the
    test snapshot's calibration gap, interpolated between the bins' means and shrunk toward 0
    where a bin had few customers. A calibrated model's estimate assumes it stays calibrated;
    its own test snapshot says how far it was from that, before any new label exists."""
    if not reliability:
        return p
    mp = np.asarray(reliability["mean_predicted"], dtype=float)
    obs = np.asarray(reliability["observed_rate"], dtype=float)
    n = np.asarray(reliability["count"], dtype=float)
    keep = np.isfinite(mp) & np.isfinite(obs) & (n > 0)
    if keep.sum() < 2:
        return p
    gap = (obs[keep] - mp[keep]) * n[keep] / (n[keep] + ESTIMATE_SHRINK_ROWS)
    return np.clip(p + np.interp(p, mp[keep], gap), 1e-15, 1 - 1e-15)


def estimated_performance(p: np.ndarray, *, seed: int = 0, draws: int = ESTIMATE_DRAWS,
                          reliability: dict[str, list[float]] | None = None
                          ) -> dict[str, Any]:
    """Expected churn rate, ROC AUC (mean and 5-95 % band over labels drawn from the
    :func:`expected_labels` probabilities, ranked by ``p``) and log loss of churn
    probabilities ``p`` (confidence-based performance estimation)."""
    from scipy.stats import rankdata

    # Sorted: the estimate is a function of the probabilities, not of the order the customers
    # came in (the monitor reads them unsorted).
    p = np.sort(np.clip(np.asarray(p, dtype=float), 1e-15, 1 - 1e-15))
    if p.size == 0:
        return {"churn_rate": None, "roc_auc": None, "roc_auc_band": None, "log_loss": None,
                "n": 0}
    q = expected_labels(p, reliability)
    rng = np.random.default_rng(seed)
    ranks = rankdata(p)
    aucs = np.array([_rank_auc(ranks, rng.random(p.size) < q) for _ in range(draws)])
    aucs = aucs[np.isfinite(aucs)]
    # E[-y ln p - (1 - y) ln(1 - p)] with y ~ Bernoulli(q): the binary entropy when q = p.
    loss = -(q * np.log(p) + (1 - q) * np.log1p(-p))
    return {"churn_rate": float(q.mean()),
            "roc_auc": float(aucs.mean()) if aucs.size else None,
            "roc_auc_band": [float(np.quantile(aucs, 0.05)), float(np.quantile(aucs, 0.95))]
            if aucs.size else None,
            "log_loss": float(loss.mean()), "n": int(p.size),
            "corrected_by_test_reliability": reliability is not None and q is not p}


def _nan() -> float:
    return float("nan")


def realized_metrics(y: np.ndarray, p: np.ndarray, clv: np.ndarray | None = None,
                     spend: np.ndarray | None = None) -> dict[str, Any]:
    """The realized numbers of one group of scored customers: churn metrics from the labels
    ``y`` (NaN where a class is missing) and, with the CLV window closed (``spend`` given), the
    CLV total error and normalized Gini (:mod:`churnguard.model.evaluate`, the functions the
    training report uses)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    out: dict[str, Any] = {"n": int(y.size), "churn_rate": float(y.mean()) if y.size else None,
                           "mean_predicted": float(p.mean()) if y.size else None,
                           # The churn rate's standard error if the probabilities are right.
                           "churn_rate_se": (float(np.sqrt(np.sum(p * (1 - p)))) / y.size
                                             if y.size else None),
                           "roc_auc": _nan(), "pr_auc": _nan(),
                           "log_loss": evaluate.log_loss(y, p) if y.size else _nan(),
                           "ece": (evaluate.expected_calibration_error(y, p, ECE_BINS)
                                   if y.size else _nan()),
                           "clv_total_error": None, "clv_gini": None}
    if 0 < y.sum() < y.size:
        out["roc_auc"], out["pr_auc"] = evaluate.ranking_areas(y, p)
    if spend is not None and clv is not None and y.size:
        actual = float(np.sum(spend))
        out["clv_total_error"] = (float(np.sum(clv)) - actual) / actual if actual > 0 else None
        if np.ptp(spend) > 0:
            out["clv_gini"] = evaluate.normalized_gini(spend, clv)
    return out


def reliability(y: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    """The reliability curve behind ``ece``: one entry per non-empty probability bin."""
    if len(y) == 0:
        return []
    table = evaluate.reliability_table(y, p, ECE_BINS)
    table = table[table["count"] > 0]
    return [{"bin_low": float(lo), "bin_high": float(hi), "n": int(n),
             "mean_predicted": float(mp), "observed_rate": float(obs)}
            for lo, hi, n, mp, obs in zip(table["lower"], table["upper"], table["count"],
                                          table["mean_predicted"], table["observed_rate"],
                                          strict=True)]


def _by_group(joined: pd.DataFrame, column: str, clv_closed: bool) -> list[dict[str, Any]]:
    if column not in joined or joined[column].isna().all():
        return []  # logged before churnguard recorded it
    col = joined[column]
    groups = (col if isinstance(col.dtype, pd.CategoricalDtype) else col.astype("category"))
    names = [str(c) for c in groups.cat.categories]
    codes = groups.cat.codes.to_numpy()
    # A missing group is "unknown"; the groups come sorted by name, the missing one among them.
    if "unknown" not in names:
        names.append("unknown")
    codes = np.where(codes < 0, names.index("unknown"), codes)
    y = joined["churned"].to_numpy(dtype=float)
    p = joined["churn_probability"].to_numpy(dtype=float)
    clv = joined["clv"].to_numpy(dtype=float)
    spend = joined["future_spend"].to_numpy(dtype=float) if clv_closed else None
    out = []
    for code in sorted(np.unique(codes).tolist(), key=lambda c: names[c]):
        rows = codes == code
        out.append({"group": names[code], **realized_metrics(
            y[rows], p[rows], clv[rows], None if spend is None else spend[rows])})
    return out


def _campaign_outcomes(source: Source, joined: pd.DataFrame, t0: date, horizon_days: int
                       ) -> list[dict[str, Any]]:
    """Per action contacted in the label window [t0, t0 + horizon): the realized churn of the
    scored customers it treated against its hold-out (``treated`` false), and of those among
    them whose logged top action it was."""
    if not source.has("campaigns") or joined.empty:
        return []
    end = t0 + timedelta(days=horizon_days)
    contacts = source.con.sql(f"""
        SELECT customer_id, action_id, bool_or(treated) AS treated FROM campaigns
        WHERE ts >= TIMESTAMP '{t0.isoformat()}' AND ts < TIMESTAMP '{end.isoformat()}'
        GROUP BY customer_id, action_id""").to_df()
    if contacts.empty:
        return []
    merged = contacts.merge(joined[["customer_id", "churned", "top_action"]], on="customer_id")
    out = []
    for action, g in merged.groupby("action_id", sort=True):
        treated, held = g[g["treated"]], g[~g["treated"]]
        rec = g[g["top_action"] == action]
        rec_t, rec_h = rec[rec["treated"]], rec[~rec["treated"]]

        def rate(frame: pd.DataFrame) -> float | None:
            return float(frame["churned"].mean()) if len(frame) else None

        row: dict[str, Any] = {
            "action_id": str(action), "n_treated": len(treated), "n_holdout": len(held),
            "churn_rate_treated": rate(treated), "churn_rate_holdout": rate(held),
            "recommended": {"n_treated": len(rec_t), "n_holdout": len(rec_h),
                            "churn_rate_treated": rate(rec_t),
                            "churn_rate_holdout": rate(rec_h)}}
        a, b = row["churn_rate_treated"], row["churn_rate_holdout"]
        row["churn_reduction"] = b - a if a is not None and b is not None else None
        out.append(row)
    return out


def realized_performance(source: Source, bundle: ScoringBundle, log_root: LogLocation,
                         as_of: date) -> list[dict[str, Any]]:
    """One entry per logged batch run (as-of date, model version) whose churn label window
    ends by ``as_of``, oldest first: its realized metrics overall, per value tier and per
    lifecycle stage, its reliability curve, what was estimated from its own probabilities
    before the labels existed, and its campaigns' treated-against-hold-out churn."""
    # Only what the metrics need, joined with the labels in DuckDB: at a million logged
    # customers, pandas merges of the whole log cost half a GiB.
    table = read_prediction_log(log_root, columns=[
        "channel", "customer_id", "scored_as_of", "model_version", "churn_probability", "clv",
        "value_tier", "lifecycle_stage", "top_action"])
    logged = table.filter(pc.equal(table["channel"], "batch")).drop_columns(["channel"])
    del table
    if logged.num_rows == 0:
        return []
    label = str(bundle.metadata.get("label", "noncontractual"))
    grace = int(bundle.metadata.get("grace_days", 0))
    h, hc = bundle.horizon_days, bundle.clv_horizon_days
    mode: LabelMode = "contractual" if label == "contractual" else "noncontractual"
    con = source.con
    con.register("_monitor_log", logged)
    out: list[dict[str, Any]] = []
    try:
        runs = con.sql("SELECT DISTINCT scored_as_of, model_version FROM _monitor_log "
                       "ORDER BY 1, 2").fetchall()
        for scored, version in runs:
            entry = _realized_run(source, scored, str(version), as_of, mode, h, hc, grace,
                                  bundle.metadata.get("test_reliability"))
            if entry is not None:
                out.append(entry)
    finally:
        con.unregister("_monitor_log")
    return out


def _realized_run(source: Source, scored: date, version: str, as_of: date, mode: LabelMode,
                  h: int, hc: int, grace: int,
                  test_reliability: dict[str, list[float]] | None) -> dict[str, Any] | None:
    t0 = pd.Timestamp(scored).date()
    if t0 + timedelta(days=h + grace) > as_of:
        return None  # the label window is still open
    # In no particular order: every number below is a function of the set of rows (the
    # estimate sorts its probabilities, Gini resolves ties in expectation).
    where = f"scored_as_of = DATE '{t0.isoformat()}' AND model_version = $version"
    run_p = source.con.execute(
        f"SELECT churn_probability FROM _monitor_log WHERE {where}",
        {"version": version}).fetchnumpy()["churn_probability"]
    attrs = [c for c in source.attribute_columns if c not in ("customer_id", "signup_date")]
    attr_cols = "".join(f', CAST(c."{a}" AS VARCHAR) AS "attr_{a}"' for a in attrs)
    # A relation, not an executed statement: DuckDB's Arrow output of the latter copies the rows.
    result = source.con.sql(
        f"""SELECT l.customer_id, l.churn_probability, l.clv, l.value_tier, l.lifecycle_stage,
                   l.top_action, lab.churned, lab.future_spend{attr_cols}
            FROM (SELECT * FROM _monitor_log WHERE {where}) AS l
            JOIN ({label_sql(t0, h, hc, mode, grace_days=grace)}) AS lab USING (customer_id)
            LEFT JOIN customers AS c USING (customer_id)""",
        params={"version": version}).to_arrow_table()
    # Groups as categories: a million rows of repeated tier and segment names as Python strings
    # cost hundreds of MB.
    joined = result.to_pandas(strings_to_categorical=True)
    clv_closed = t0 + timedelta(days=hc) <= as_of and "future_spend" in joined
    y = joined["churned"].to_numpy(dtype=float)
    p = joined["churn_probability"].to_numpy(dtype=float)
    est = estimated_performance(np.asarray(run_p, dtype=float), reliability=test_reliability)
    entry: dict[str, Any] = {
        "scored_as_of": t0.isoformat(), "model_version": version, "n_logged": len(run_p),
        **realized_metrics(y, p, joined["clv"].to_numpy(dtype=float),
                           joined["future_spend"].to_numpy(dtype=float)
                           if clv_closed else None),
        "estimated": {k: est[k] for k in ("churn_rate", "roc_auc", "roc_auc_band",
                                          "log_loss")},
        "reliability": reliability(y, p),
        "by_value_tier": _by_group(joined, "value_tier", clv_closed),
        "by_lifecycle_stage": _by_group(joined, "lifecycle_stage", clv_closed),
        "by_attribute": {a: _by_group(joined, f"attr_{a}", clv_closed) for a in attrs},
        "campaigns": _campaign_outcomes(source, joined, t0, h)}
    return entry


#: Feed health: the shortest recent window, and the reference window before the reference
#: snapshot that sets each feed's expected rate and cadence.
FEED_RECENT_DAYS = 14
FEED_REFERENCE_DAYS = 91
#: Expected rows in the recent window below which a feed is too sparse to judge.
FEED_MIN_EXPECTED = 20
#: A feed with fewer than this share of its expected recent rows is ``thin`` (warn).
FEED_THIN_SHARE = 0.25


def feed_health(source: Source, reference_day: date, as_of: date) -> list[dict[str, Any]]:
    """Is every feed still arriving? Per table (transactions, campaigns) and per event type:
    the rows in a recent window before ``as_of`` against what the :data:`FEED_REFERENCE_DAYS`
    before the reference snapshot predict. The recent window is :data:`FEED_RECENT_DAYS`, or
    twice the longest silence the feed had in the reference window if that is longer (a monthly
    campaign is not late after two weeks). ``broken``: no rows where at least
    :data:`FEED_MIN_EXPECTED` were expected (the feed stopped arriving); ``thin``: under
    :data:`FEED_THIN_SHARE` of the expected; ``new``: rows where the reference had none."""
    ref_start = reference_day - timedelta(days=FEED_REFERENCE_DAYS)
    first = min(ref_start, as_of - timedelta(days=2 * FEED_REFERENCE_DAYS))

    def ts(d: date) -> str:
        return f"TIMESTAMP '{d.isoformat()}'"

    tables = [t for t in ("transactions", "campaigns") if source.has(t)]
    daily = [f"SELECT '{t}' AS tbl, NULL::VARCHAR AS kind, ts FROM {t}" for t in tables]
    if source.has("events"):
        daily.append("SELECT 'events' AS tbl, event_type AS kind, ts FROM events")
    if not daily:
        return []
    # One pass over every feed: per feed and day its rows and first and last timestamp, from
    # which the all-time first and last rows and the reference window's count follow.
    per_day = source.con.sql(f"""
        SELECT tbl, kind, CAST(ts AS DATE) AS day, count(*) AS n, min(ts) AS first_ts,
               max(ts) AS last_ts
        FROM ({" UNION ALL ".join(daily)}) AS f WHERE ts < {ts(as_of)} GROUP BY ALL""").to_df()
    out = []
    per_day["day"] = pd.to_datetime(per_day["day"])
    in_reference = ((per_day["day"] >= pd.Timestamp(ref_start))
                    & (per_day["day"] < pd.Timestamp(reference_day)))
    feeds = per_day.assign(n_ref=per_day["n"].where(in_reference, 0)).groupby(
        ["tbl", "kind"], dropna=False).agg(first_seen=("first_ts", "min"),
                                           last_seen=("last_ts", "max"), n_ref=("n_ref", "sum"))
    per_day = per_day[per_day["day"] >= pd.Timestamp(first)]
    rows = [(table, None if pd.isna(kind) else kind, r.first_seen, r.last_seen, int(r.n_ref))
            for (table, kind), r in feeds.iterrows()]
    for table, kind, first_seen, last_seen, n_ref in sorted(rows,
                                                             key=lambda r: (r[0], r[1] or "")):
        # A feed younger than the reference window: its rate over the days it existed.
        span = max(1, min(FEED_REFERENCE_DAYS, (reference_day - first_seen.date()).days))
        mine = per_day[(per_day["tbl"] == table) & (
            per_day["kind"].isna() if kind is None else per_day["kind"] == kind)]
        ref_days = np.sort(mine.loc[(mine["day"] >= pd.Timestamp(ref_start))
                                    & (mine["day"] < pd.Timestamp(reference_day)), "day"])
        gaps = np.diff(ref_days).astype("timedelta64[D]").astype(int)
        silence = int(gaps.max()) if gaps.size else span
        window = min(max(FEED_RECENT_DAYS, 2 * silence), 2 * FEED_REFERENCE_DAYS)
        since = pd.Timestamp(as_of - timedelta(days=window))
        n_recent = int(mine.loc[mine["day"] >= since, "n"].sum())
        expected = n_ref / span * window
        if n_ref == 0:
            status = "new" if n_recent else "ok"
        elif expected >= FEED_MIN_EXPECTED and n_recent == 0:
            status = "broken"
        elif expected >= FEED_MIN_EXPECTED and n_recent < FEED_THIN_SHARE * expected:
            status = "thin"
        else:
            status = "ok"
        out.append({"table": table, "event_type": kind,
                    "feed": f"{table}.{kind}" if kind else table, "window_days": window,
                    "expected_recent_rows": round(expected, 1), "recent_rows": n_recent,
                    "last_seen": last_seen.isoformat() if last_seen is not None else None,
                    "status": status})
    return out


def reference_calendar(entries: dict[str, Any], constant: list[str]) -> dict[str, Any]:
    """The reference's value of every one-valued reference feature (the calendar's) that has
    one to pin: a numeric point mass's value, a categorical's level (not ``OTHER``)."""
    values: dict[str, Any] = {}
    for name in constant:
        entry = entries[name]
        if entry["kind"] == "numeric" and entry["edges"]:
            values[name] = float(entry["edges"][0])  # a point mass's only decile edge
        elif entry["kind"] == "categorical":
            level = max(entry["shares"], key=entry["shares"].get)
            if level != OTHER:
                values[name] = level
    return values


#: Order values: the recent window compared with the feeds' reference window, and the orders
#: each needs before it is compared.
ORDER_VALUE_DAYS = 28
ORDER_VALUE_MIN_ORDERS = 200


def order_value_drift(source: Source, reference_day: date, as_of: date) -> dict[str, Any] | None:
    """The PSI of the purchase amounts in the :data:`ORDER_VALUE_DAYS` before ``as_of`` against
    those in the :data:`FEED_REFERENCE_DAYS` before the reference snapshot (deciles of the
    latter). A price change, or a feed now in another currency or in cents, shows here at once,
    while the spend features average it over months. None with too few orders to compare."""
    if not source.has("transactions"):
        return None
    ref_start = reference_day - timedelta(days=FEED_REFERENCE_DAYS)
    rec_start = as_of - timedelta(days=ORDER_VALUE_DAYS)

    # Both windows (which may overlap) in one scan of the table.
    got = source.con.execute(
        "SELECT amount, ts >= $ref_start AND ts < $ref_end AS in_ref, "
        "ts >= $rec_start AND ts < $as_of AS in_recent FROM transactions "
        "WHERE amount > 0 AND ((ts >= $ref_start AND ts < $ref_end) "
        "OR (ts >= $rec_start AND ts < $as_of))",
        {"ref_start": ref_start, "ref_end": reference_day, "rec_start": rec_start,
         "as_of": as_of}).fetchnumpy()
    amount = np.asarray(got["amount"], dtype=float)
    ref = amount[np.asarray(got["in_ref"], dtype=bool)]
    recent = amount[np.asarray(got["in_recent"], dtype=bool)]
    if min(ref.size, recent.size) < ORDER_VALUE_MIN_ORDERS:
        return None
    entry = numeric_entry(ref)
    return {"psi": population_stability_index(entry, recent), "window_days": ORDER_VALUE_DAYS,
            "reference_orders": int(ref.size), "recent_orders": int(recent.size),
            "reference_median": float(np.median(ref)), "recent_median": float(np.median(recent))}


#: New customers: the sign-ups of the recent window against those of the reference window.
NEW_CUSTOMER_DAYS = 28
NEW_CUSTOMER_MIN = 100
#: Sign-up volume (per day, against the reference window's) outside these factors warns.
SIGNUP_VOLUME_BAND = (0.5, 2.0)


def new_customer_mix(source: Source, reference_day: date, as_of: date) -> dict[str, Any] | None:
    """Who is signing up: per customer attribute (segment, region, channel, …) the PSI of the
    sign-ups in the :data:`NEW_CUSTOMER_DAYS` before ``as_of`` against those of the
    :data:`FEED_REFERENCE_DAYS` before the reference snapshot, and the sign-ups per day of
    each. An acquisition mix shift shows here weeks before the new customers are numerous
    enough to move the whole base's features. None with too few sign-ups to compare."""
    ref_start = reference_day - timedelta(days=FEED_REFERENCE_DAYS)
    rec_start = as_of - timedelta(days=NEW_CUSTOMER_DAYS)
    attrs = [c for c in source.attribute_columns if c not in ("customer_id", "signup_date")]
    cols = ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in attrs)
    frame = source.con.execute(
        f"""SELECT signup_date >= ? AS recent{', ' + cols if cols else ''} FROM customers
            WHERE (signup_date >= ? AND signup_date < ?) OR (signup_date >= ? AND signup_date < ?)
        """, [rec_start, ref_start, reference_day, rec_start, as_of]).df()
    recent, ref = frame[frame["recent"]], frame[~frame["recent"]]
    if min(len(recent), len(ref)) < NEW_CUSTOMER_MIN:
        return None
    span = (reference_day - ref_start).days
    out: dict[str, Any] = {
        "window_days": NEW_CUSTOMER_DAYS, "recent_signups": len(recent),
        "reference_signups": len(ref),
        "volume_ratio": (len(recent) / NEW_CUSTOMER_DAYS) / (len(ref) / span),
        "attributes": []}
    for c in attrs:
        levels = sorted(ref[c].dropna().astype(str).unique())
        entry = categorical_entry(ref[c], levels)
        shares = current_shares(entry, recent[c])
        top = max(zip(entry["shares"], shares, strict=True),
                  key=lambda x: x[1] - entry["shares"][x[0]])
        out["attributes"].append({
            "name": c, "psi": population_stability_index(entry, recent[c]),
            "grew_most": {"level": top[0], "reference_share": entry["shares"][top[0]],
                          "recent_share": float(top[1])}})
    out["attributes"].sort(key=lambda a: -a["psi"])
    return out


#: The steps :func:`monitor` reports to its ``progress`` callback.
MONITOR_STEPS = ("customers", "drift", "feeds", "realized")


class _Sample:
    """What :func:`monitor` keeps of the customers as of its date, chunk by chunk: per
    compared feature its bin counts and nulls, and the two outputs, at today's calendar for
    every customer and at the reference's for a hash sample of ``reference_share`` of them."""

    def __init__(self, entries: dict[str, Any], compared: list[str],
                 calendar: dict[str, Any], reference_share: float = 1.0) -> None:
        self.entries, self.compared, self.calendar = entries, compared, calendar
        self.reference_share = reference_share
        self.counts = {n: np.zeros(_n_bins(entries[n]), dtype=np.int64) for n in compared}
        self.nulls = dict.fromkeys(compared, 0)
        self.rows = 0
        self.outputs: dict[str, list[np.ndarray]] = {
            k: [] for k in ("p", "clv", "p_ref", "clv_ref")}

    def add(self, chunk: pa.RecordBatch | pa.Table | pd.DataFrame, bundle: ScoringBundle
            ) -> None:
        # Arrow throughout: encoding a pandas frame costs four times the Arrow encoding.
        if isinstance(chunk, pd.DataFrame):
            chunk = pa.Table.from_pandas(chunk, preserve_index=False)
        n = chunk.num_rows
        self.rows += n
        present = set(chunk.schema.names)
        for name in self.compared:
            values = (_profile_values(chunk.column(name), self.entries[name]["kind"])
                      if name in present else pd.Series([None] * n, dtype=object))
            counts = bin_counts(self.entries[name], values)
            self.counts[name] += counts
            self.nulls[name] += n - int(counts.sum())
        X = bundle.encode_arrow(chunk)
        p, clv = predict_outputs(bundle, X)
        pinned = {k: v for k, v in self.calendar.items() if k in present}
        if pinned and n:
            X_ref = X[self._reference_rows(chunk)] if self.reference_share < 1.0 else X
            # Only the calendar's columns change: encode them on one row and overwrite, rather
            # than encoding the rows a second time.
            row = bundle.encode(chunk.slice(0, 1).to_pandas().assign(**pinned))[0]
            cols = [j for j, name in enumerate(bundle.encoder().names) if name in pinned]
            X_ref[:, cols] = row[cols]
            p_ref, clv_ref = predict_outputs(bundle, X_ref)
        else:
            p_ref, clv_ref = p, clv
        for key, value in (("p", p), ("clv", clv), ("p_ref", p_ref), ("clv_ref", clv_ref)):
            self.outputs[key].append(np.asarray(value, dtype=float))

    def _reference_rows(self, chunk: pa.RecordBatch | pa.Table) -> np.ndarray:
        """The chunk's rows in the reference-calendar sample: by a hash of the customer id, so
        the same customers whatever order the rows come in."""
        if "customer_id" not in chunk.schema.names:
            return np.ones(chunk.num_rows, dtype=bool)
        ids = chunk.column("customer_id").to_numpy(zero_copy_only=False)
        buckets = pd.util.hash_array(np.asarray(ids)) % np.uint64(_HASH_BUCKETS)
        return buckets < np.uint64(round(self.reference_share * _HASH_BUCKETS))

    def output(self, key: str) -> np.ndarray:
        parts = self.outputs[key]
        return np.concatenate(parts) if parts else np.zeros(0)


_HASH_BUCKETS = 1 << 20


def _profile_values(col: pa.Array | pa.ChunkedArray, kind: str) -> np.ndarray | pd.Series:
    """A feature column as :func:`bin_counts` reads it: numbers as floats (null → NaN),
    anything else through pandas."""
    if kind == "numeric" and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                              or pa.types.is_boolean(col.type)):
        return np.asarray(pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(
            zero_copy_only=False), dtype=float)
    return col.to_pandas()


def _n_bins(entry: dict[str, Any]) -> int:
    return len(entry["shares"]) if entry["kind"] == "categorical" else len(entry["edges"]) + 1


def _feature_drift(sample: _Sample, entries: dict[str, Any], t: Thresholds
                   ) -> list[dict[str, Any]]:
    """Each compared feature's PSI, null rates and status, the most drifted first."""
    features: list[dict[str, Any]] = []
    for name in sample.compared:
        entry = entries[name]
        null_rate = sample.nulls[name] / sample.rows if sample.rows else 0.0
        psi = psi_from_counts(entry, sample.counts[name])
        change = abs(null_rate - float(entry["null_rate"]))
        features.append({"name": name, "psi": psi, "null_rate": null_rate,
                         "reference_null_rate": float(entry["null_rate"]),
                         "status": _status(psi, change, t)})
    features.sort(key=lambda f: -f["psi"])
    return features


SourceFacts = tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None,
                    list[dict[str, Any]]]


def _source_facts(source: Source, bundle: ScoringBundle, log_root: LogLocation,
                  reference_day: date, as_of: date) -> SourceFacts:
    """Feeds, order values, new customers and the realized performance of the logged runs:
    what :func:`monitor` reads from the source besides the customers' features."""
    log.info("monitoring: feeds, order values and sign-ups")
    feeds = feed_health(source, reference_day, as_of)
    order_values = order_value_drift(source, reference_day, as_of)
    new_customers = new_customer_mix(source, reference_day, as_of)
    log.info("monitoring: realized performance of the logged runs")
    return feeds, order_values, new_customers, realized_performance(source, bundle, log_root,
                                                                    as_of)


def monitor(source: Source, bundle: ScoringBundle, model_version: str, *, as_of: date,
            log_root: LogLocation, thresholds: Thresholds | None = None,
            features_as_of: Iterable[pa.RecordBatch | pd.DataFrame] | None = None,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The monitoring report of ``bundle`` at ``as_of`` (the keys of ``monitor.json``).

    ``features_as_of``: the bundle's features of the customers as of ``as_of``, in chunks,
    when another engine built them (``--engine spark``); by default one build like
    ``features build`` (which the monitor's time is measured against, bench/monitor.py), read
    back a chunk at a time so that only summaries are kept.
    ``progress(done, total)`` is called after each of :data:`MONITOR_STEPS`."""
    t = thresholds or Thresholds()
    reference = bundle.metadata.get("reference_profile")
    if not reference:
        raise ValueError("this model version has no reference profile (trained before "
                         "churnguard stored one): retrain it to monitor it")

    def step(name: str) -> None:
        if progress is not None:
            progress(MONITOR_STEPS.index(name) + 1, len(MONITOR_STEPS))

    entries: dict[str, Any] = reference["features"]
    # A feature with the same value for every reference customer (a calendar feature such as
    # the season): any other date moves all of it, which says nothing about the data.
    constant = [name for name, entry in entries.items() if _point_mass(entry)]
    # The outputs' drift is taken at the reference's calendar too: the season moves every CLV
    # (a month later, PSI 0.16 on undrifted demo data) with nothing wrong.
    n_customers = int(source.con.sql("SELECT count(*) FROM customers").fetchall()[0][0])
    sample = _Sample(entries, [name for name in entries if name not in constant],
                     reference_calendar(entries, constant),
                     reference_share=min(1.0, REFERENCE_CALENDAR_CUSTOMERS / max(n_customers, 1)))
    chunks = iter(features_as_of if features_as_of is not None
                  else feature_batches(source, bundle.spec, as_of))
    reference_day = date.fromisoformat(str(reference["snapshot"])[:10])
    log.info("monitoring: features and scores of the customers as of %s", as_of)
    first = next(chunks, None)  # the feature build (unless another engine built them)
    # The source checks and the labels of the logged runs are DuckDB queries and the scoring is
    # Python: run the queries on a second connection while this thread scores, so that the
    # engine's threads are busy while Python encodes and predicts (bench/monitor.py).
    checks = source.con.cursor()
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="monitor-source") as pool:
            facts = pool.submit(_source_facts, replace(source, con=checks), bundle, log_root,
                                reference_day, as_of)
            try:
                for chunk in itertools.chain([] if first is None else [first], chunks):
                    sample.add(chunk, bundle)
            except BaseException:
                checks.interrupt()  # the pool waits for the queries before it re-raises
                raise
            step("customers")  # features and scores: one chunked pass
            features = _feature_drift(sample, entries, t)
            p, clv = sample.output("p"), sample.output("clv")
            p_ref, clv_ref = sample.output("p_ref"), sample.output("clv_ref")
            score_psi = population_stability_index(reference["churn_probability"], p_ref)
            clv_psi = population_stability_index(reference["clv"], clv_ref)
            score_psi_raw = population_stability_index(reference["churn_probability"], p)
            clv_psi_raw = population_stability_index(reference["clv"], clv)
            step("drift")
            estimated = estimated_performance(
                p, reliability=bundle.metadata.get("test_reliability"))
            feeds, order_values, new_customers, realized = facts.result()
    finally:
        checks.close()
    step("feeds")
    step("realized")
    test_auc = bundle.metadata.get("test_roc_auc")
    reasons: list[str] = []
    verdict: Verdict = "ok"

    def raise_to(level: Verdict, why: str) -> None:
        nonlocal verdict
        reasons.append(f"{level}: {why}")
        if _ORDER[level] > _ORDER[verdict]:
            verdict = level

    for feed in feeds:
        if feed["status"] == "broken":
            raise_to("alert", f"broken feed: {feed['feed']} stopped arriving (none in the "
                     f"{feed['window_days']} days before {as_of}, about "
                     f"{feed['expected_recent_rows']:.0f} expected; last row "
                     f"{feed['last_seen'] or 'never'})")
        elif feed["status"] == "thin":
            raise_to("warn", f"thin feed: {feed['feed']} sent {feed['recent_rows']} rows in "
                     f"the {feed['window_days']} days before {as_of}, about "
                     f"{feed['expected_recent_rows']:.0f} expected")
    if order_values is not None and order_values["psi"] >= t.psi_warn:
        raise_to("alert" if order_values["psi"] >= t.psi_alert else "warn",
                 f"order values: PSI {order_values['psi']:.3f} over the {ORDER_VALUE_DAYS} days "
                 f"before {as_of} (median {order_values['reference_median']:,.2f} -> "
                 f"{order_values['recent_median']:,.2f}): a price change, or amounts in "
                 "another unit")
    if new_customers is not None:
        for a in new_customers["attributes"]:
            if a["psi"] >= t.psi_warn:
                g = a["grew_most"]
                raise_to("alert" if a["psi"] >= t.psi_alert else "warn",
                         f"new customers' {a['name']}: PSI {a['psi']:.3f} ({g['level']} "
                         f"{g['reference_share']:.0%} -> {g['recent_share']:.0%} of sign-ups)")
        lo, hi = SIGNUP_VOLUME_BAND
        if not lo <= new_customers["volume_ratio"] <= hi:
            raise_to("warn", f"sign-ups per day x{new_customers['volume_ratio']:.2f} against "
                     "the reference period")
    for f in features:
        if f["status"] != "ok":
            raise_to(f["status"], f"{f['name']} PSI {f['psi']:.3f}, null rate "
                     f"{f['reference_null_rate']:.1%} -> {f['null_rate']:.1%}")
    for what, psi in (("churn probability", score_psi), ("CLV", clv_psi)):
        if psi >= t.psi_warn:
            raise_to("alert" if psi >= t.psi_alert else "warn", f"{what} PSI {psi:.3f}")
    for r in realized:
        groups = [(what, g) for what in ("value tier", "lifecycle stage")
                  for g in r[f"by_{what.replace(' ', '_')}"]]
        groups += [(name, g) for name, gs in r["by_attribute"].items() for g in gs]
        for what, g in groups:
            gap = (g["churn_rate"] or 0.0) - (g["mean_predicted"] or 0.0)
            # Far enough to matter, and beyond chance (three standard errors).
            if (g["n"] >= GROUP_MIN_CUSTOMERS and abs(gap) >= t.group_gap_warn
                    and abs(gap) >= 3 * (g["churn_rate_se"] or 0.0)):
                raise_to("warn", f"scored {r['scored_as_of']}: {what} {g['group']} churned "
                         f"{g['churn_rate']:.1%} against {g['mean_predicted']:.1%} predicted "
                         f"({g['n']:,} customers)")
        if np.isfinite(r["ece"]) and r["ece"] >= t.ece_alert:
            raise_to("alert", f"scored {r['scored_as_of']}: calibration error {r['ece']:.3f}")
        if test_auc is not None and np.isfinite(r["roc_auc"]) and (
                float(test_auc) - r["roc_auc"] >= t.auc_drop_alert):
            raise_to("alert", f"scored {r['scored_as_of']}: ROC AUC {r['roc_auc']:.3f} vs "
                     f"{float(test_auc):.3f} at training")
    return {"verdict": verdict, "reasons": reasons, "as_of": as_of.isoformat(),
            "model_version": model_version, "reference_snapshot": reference["snapshot"],
            "customers": sample.rows, "feeds": feeds, "order_values": order_values,
            "new_customers": new_customers,
            "features": features,
            "not_compared": constant,
            "score": {"psi": score_psi, "psi_with_calendar": score_psi_raw,
                      "reference_calendar_customers": int(p_ref.size),
                      **distribution(reference["churn_probability"], p_ref)},
            "clv": {"psi": clv_psi, "psi_with_calendar": clv_psi_raw,
                    **distribution(reference["clv"], clv_ref)},
            "test_roc_auc": None if test_auc is None else float(test_auc),
            "estimated": estimated,
            "realized": realized,
            "thresholds": {k: getattr(t, k) for k in t.__dataclass_fields__}}


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """``out_dir/monitor.json`` (NaN written as null)."""
    path = out_dir / "monitor.json"

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(clean(report), indent=2))
    return path
