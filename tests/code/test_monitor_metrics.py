"""The monitor's numbers on tiny inputs: the rank AUC of the estimate, realized metrics per
group, the reliability curve, the confidence-based estimate, feed health and the status
thresholds."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churnguard.model.evaluate import log_loss
from churnguard.serving.monitor import (
    Thresholds,
    _rank_auc,
    _status,
    estimated_performance,
    realized_metrics,
    reliability,
)


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    from scipy.stats import rankdata

    return _rank_auc(rankdata(p), np.asarray(y, dtype=bool))


def test_rank_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    p = np.round(rng.random(500), 1)  # many ties
    y = rng.random(500) < p
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert np.isnan(roc_auc(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_realized_metrics_and_reliability_by_hand() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    m = realized_metrics(y, p, clv=np.array([1.0, 2.0, 3.0, 4.0]),
                         spend=np.array([0.0, 1.0, 4.0, 5.0]))
    # bin 0: mean y 0.5 vs p 0.05; bin 9: 1.0 vs 0.95; each half the rows
    assert m["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["clv_total_error"] == pytest.approx((10.0 - 10.0) / 10.0)
    assert m["clv_gini"] == pytest.approx(1.0)  # CLV orders spend perfectly
    curve = reliability(y, p)
    assert [(c["n"], c["observed_rate"]) for c in curve] == [(2, 0.5), (2, 1.0)]
    assert sum(c["n"] / 4 * abs(c["observed_rate"] - c["mean_predicted"])
               for c in curve) == pytest.approx(m["ece"])


def test_realized_metrics_with_one_class_are_not_made_up() -> None:
    m = realized_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["pr_auc"])
    assert m["clv_total_error"] is None and m["clv_gini"] is None
    assert m["log_loss"] == pytest.approx(log_loss(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_estimate_of_a_calibrated_model_brackets_what_happens() -> None:
    rng = np.random.default_rng(2)
    p = rng.beta(1.0, 6.0, 4000)
    est = estimated_performance(p, seed=3)
    hits = 0
    for k in range(20):
        y = np.random.default_rng(100 + k).random(p.size) < p
        lo, hi = est["roc_auc_band"]
        hits += lo <= roc_auc(y, p) <= hi
        assert log_loss(y, p) == pytest.approx(est["log_loss"], rel=0.05)
    assert hits >= 15  # a 90 % band
    assert est["churn_rate"] == pytest.approx(p.mean())
    # The monitor reads its customers in no particular order: the estimate must not care.
    shuffled = estimated_performance(np.random.default_rng(4).permutation(p), seed=3)
    assert shuffled["roc_auc"] == est["roc_auc"]
    assert shuffled["roc_auc_band"] == est["roc_auc_band"]
    assert shuffled["log_loss"] == pytest.approx(est["log_loss"], rel=1e-12)


def test_status_thresholds() -> None:
    t = Thresholds()
    assert _status(0.05, 0.0, t) == "ok"
    assert _status(0.12, 0.0, t) == "warn"
    assert _status(0.05, 0.2, t) == "warn"  # a feed half gone shows in its null rate
    assert _status(0.3, 0.0, t) == "alert"


def test_feed_health_names_a_feed_that_stopped() -> None:
    import pandas as pd

    from churnguard.features.sources import open_source
    from churnguard.serving.monitor import FEED_MIN_EXPECTED, feed_health

    days = pd.date_range("2025-01-01", "2025-06-30", freq="D")
    ids = ["a", "b", *(f"c{i}" for i in range(60))]
    customers = pd.DataFrame({"customer_id": ids,
                              "signup_date": pd.to_datetime(["2024-12-01"] * len(ids)).date})
    # Two visits a day throughout; three email opens a day until May; one rare complaint.
    visits = pd.DataFrame({"customer_id": "a", "ts": days.repeat(2), "event_type": "web_visit"})
    opens = pd.DataFrame({"customer_id": "b", "ts": days[days < "2025-05-01"].repeat(3),
                          "event_type": "email_open"})
    rare = pd.DataFrame({"customer_id": ["a"], "ts": [days[10]], "event_type": ["complaint"]})
    txn = pd.DataFrame({"customer_id": "a", "ts": days[::3], "amount": 10.0})
    # A monthly campaign of 60 contacts: three weeks without one is its normal cadence.
    firsts = days[days.day == 1]
    campaigns = pd.DataFrame({"customer_id": ids[2:] * len(firsts), "ts": firsts.repeat(60),
                              "action_id": "care_email", "treated": True})
    tables = {"customers": customers, "transactions": txn, "campaigns": campaigns,
              "events": pd.concat([visits, opens, rare], ignore_index=True)}
    with open_source(tables, reference_time=datetime(2025, 7, 1)) as src:
        feeds = {f["feed"]: f for f in feed_health(src, date(2025, 3, 1), date(2025, 6, 1))}
        same_day = {f["feed"]: f["status"] for f in feed_health(src, date(2025, 3, 1),
                                                                date(2025, 3, 1))}
    assert feeds["events.email_open"]["status"] == "broken"
    assert feeds["events.email_open"]["last_seen"].startswith("2025-04-30")
    assert feeds["events.email_open"]["expected_recent_rows"] == pytest.approx(42.0)
    assert feeds["events.email_open"]["window_days"] == 14
    assert feeds["events.email_open"]["recent_rows"] == 0 < FEED_MIN_EXPECTED
    assert feeds["events.web_visit"]["status"] == "ok"
    assert feeds["events.complaint"]["status"] == "ok"  # too rare to judge
    assert feeds["transactions"]["status"] == "ok"
    assert feeds["campaigns"]["status"] == "ok" and feeds["campaigns"]["window_days"] >= 56
    assert set(same_day.values()) == {"ok"}
    with open_source({**tables, "campaigns": campaigns[campaigns["ts"] < "2025-03-15"]},
                     reference_time=datetime(2025, 7, 1)) as src:
        late = {f["feed"]: f for f in feed_health(src, date(2025, 3, 1), date(2025, 6, 1))}
    assert late["campaigns"]["status"] == "broken"  # April, May and June's never came


def test_outputs_are_compared_at_the_reference_calendar(fake_bundle: Any,
                                                         fake_features: Any) -> None:
    from churnguard.model.profile import categorical_entry, numeric_entry
    from churnguard.model.score import predict_outputs
    from churnguard.serving.monitor import _Sample, reference_calendar

    entries = {"season_sin": numeric_entry(np.full(50, 0.5)),
               "quarter": categorical_entry(["q1"] * 50, ["q1", "q2"]),
               "spend": numeric_entry(np.arange(50.0))}
    assert reference_calendar(entries, ["season_sin", "quarter"]) == {"season_sin": 0.5,
                                                                      "quarter": "q1"}
    assert reference_calendar(entries, []) == {}

    # The sample's outputs at the reference calendar: those of the chunk with the calendar's
    # columns set, whichever way it gets there.
    frame = fake_features.to_pandas() if hasattr(fake_features, "to_pandas") else fake_features
    # The calendar's features and, so that pinning visibly moves the fake model's outputs,
    # the recency ones (any column is pinned the same way).
    calendar = {c: float(frame[c].median()) for c in ("season_sin", "season_cos",
                                                      "days_since_last_purchase",
                                                      "days_since_last_interaction")
                if c in frame}
    moved = frame.assign(**{c: frame[c] * 2 + 1 for c in calendar})
    sample = _Sample({}, [], calendar)
    sample.add(moved, fake_bundle)
    p_ref, clv_ref = predict_outputs(fake_bundle, fake_bundle.encode(moved.assign(**calendar)))
    p, clv = predict_outputs(fake_bundle, fake_bundle.encode(moved))
    assert np.array_equal(sample.output("p_ref"), p_ref)
    assert np.array_equal(sample.output("clv_ref"), clv_ref)
    assert np.array_equal(sample.output("p"), p) and np.array_equal(sample.output("clv"), clv)
    assert not np.array_equal(p, p_ref)  # the calendar counts, so pinning it is tested


def test_reference_calendar_sample_is_by_customer_not_by_row_order(
        fake_bundle: Any, fake_features: Any) -> None:
    from churnguard.model.score import predict_outputs
    from churnguard.serving.monitor import _Sample

    frame = fake_features.copy()
    calendar = {"days_since_last_purchase": float(frame["days_since_last_purchase"].median())}
    half, shuffled = _Sample({}, [], calendar, 0.5), _Sample({}, [], calendar, 0.5)
    half.add(frame, fake_bundle)
    shuffled.add(frame.sample(frac=1.0, random_state=3), fake_bundle)
    n = len(frame)
    assert half.output("p").size == n  # today's calendar: every customer
    assert 0.3 * n < half.output("p_ref").size < 0.7 * n
    assert np.array_equal(np.sort(half.output("p_ref")), np.sort(shuffled.output("p_ref")))
    # The sampled customers' reference-calendar outputs are theirs, not a subset of others'.
    everyone = _Sample({}, [], calendar)
    everyone.add(frame, fake_bundle)
    assert np.isin(half.output("p_ref"), everyone.output("p_ref")).all()
    p_all, _ = predict_outputs(fake_bundle, fake_bundle.encode(frame.assign(**calendar)))
    assert np.array_equal(everyone.output("p_ref"), p_all)


def test_the_estimate_takes_the_test_snapshot_calibration_gap() -> None:
    from churnguard.serving.monitor import expected_labels

    rng = np.random.default_rng(4)
    p = rng.beta(2.0, 2.0, 5000)
    assert expected_labels(p, None) is p
    # An underconfident model at the top (as CDNOW's at 1998-04-01): the test snapshot's
    # observed rates sit above the predictions there.
    rel = {"mean_predicted": [0.1, 0.5, 0.9], "observed_rate": [0.1, 0.5, 0.95],
           "count": [10_000, 10_000, 10_000]}
    q = expected_labels(p, rel)
    assert np.allclose(q[p <= 0.5], p[p <= 0.5])
    top = (p >= 0.9) & (p < 0.94)  # above, the sum is clipped below 1
    assert np.allclose(q[top] - p[top], 0.05 * 10_000 / 10_200)
    thin = {**rel, "count": [10, 10, 10]}  # ten customers a bin: barely moved
    assert np.abs(expected_labels(p, thin) - p).max() < 0.05 * 10 / 200
    est = estimated_performance(p, reliability=rel)
    assert est["churn_rate"] == pytest.approx(q.mean())
    assert est["corrected_by_test_reliability"] is True


def test_order_values_and_new_customers_show_a_price_change_and_a_mix_shift() -> None:
    import pandas as pd

    from churnguard.features.sources import open_source
    from churnguard.serving.monitor import new_customer_mix, order_value_drift

    rng = np.random.default_rng(9)
    days = pd.date_range("2024-10-01", "2025-05-31", freq="D")
    # 20 sign-ups a day, 20 % from social; from April 60 % social and twice as many.
    signups = [(d, "social" if rng.random() < (0.6 if d >= pd.Timestamp("2025-04-01")
                                               else 0.2) else "search")
               for d in days for _ in range(40 if d >= pd.Timestamp("2025-04-01") else 20)]
    customers = pd.DataFrame({"customer_id": [f"c{i}" for i in range(len(signups))],
                              "signup_date": [d.date() for d, _ in signups],
                              "channel": [c for _, c in signups]})
    ts = days.repeat(30)
    amount = rng.gamma(2.0, 20.0, ts.size) * np.where(ts >= pd.Timestamp("2025-04-01"), 1.4, 1)
    txn = pd.DataFrame({"customer_id": "c0", "ts": ts + pd.to_timedelta(
        np.arange(ts.size) % 86_000, unit="s"), "amount": amount})
    tables = {"customers": customers, "transactions": txn}
    with open_source(tables, reference_time=datetime(2025, 6, 1)) as src:
        before = order_value_drift(src, date(2025, 1, 1), date(2025, 3, 1))
        after = order_value_drift(src, date(2025, 1, 1), date(2025, 5, 1))
        mix_before = new_customer_mix(src, date(2025, 1, 1), date(2025, 3, 1))
        mix_after = new_customer_mix(src, date(2025, 1, 1), date(2025, 5, 1))
    assert before is not None and after is not None
    assert before["psi"] < 0.05 < 0.1 < after["psi"]
    assert after["recent_median"] / after["reference_median"] == pytest.approx(1.4, rel=0.1)
    assert mix_before is not None and mix_after is not None
    assert mix_before["attributes"][0]["psi"] < 0.05
    assert 0.5 <= mix_before["volume_ratio"] <= 2.0
    [channel] = mix_after["attributes"]
    assert channel["psi"] > 0.25 and channel["grew_most"]["level"] == "social"
    assert mix_after["volume_ratio"] == pytest.approx(2.0, rel=0.05)
