"""Lifecycle stages and the signals behind them: hand-computed usual interaction counts, the
declining / at_risk / lapsed rules, and facts that never break on missing evidence."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnguard.model.policy import (
    assess,
    evidence,
    interaction_decline,
    lifecycle_stage,
    load_catalog,
    signals,
    usual_interactions,
)
from tests.code.test_policy import frame
from tests.conftest import FAKE_AS_OF


def interactions(year: float, e90: float, e30: float, tenure: float = 500.0) -> dict[str, Any]:
    """The interaction features of a customer with ``year`` interactions in the last 365 days
    (or their tenure), ``e90`` in the last 90 and ``e30`` in the last 30, as the SQL writes
    them (interaction_trend_90_365 = 90-day rate / rate over min(365, max(90, tenure)))."""
    span = min(365.0, max(90.0, tenure))
    return {"tenure_days": tenure, "events_90d": e90, "events_30d": e30,
            "interaction_trend_90_365": (e90 / 90) / (year / span) if year else np.nan}


def rows(*customers: dict[str, Any], **common: Any) -> dict[str, np.ndarray]:
    keys = {k for c in customers for k in c}
    return frame(**{k: [c[k] for c in customers] for k in keys}, **common)


def test_usual_interactions_by_hand() -> None:
    f = rows(interactions(120, 20, 2), interactions(200, 20, 15), interactions(0, 0, 0),
             interactions(40, 40, 10, tenure=80))
    usual = usual_interactions(f)
    # 120 in the year: the 30 days before today are 118 interactions over 335 days
    np.testing.assert_allclose(usual["expected_events_30d"][:2],
                               [30 * 118 / 335, 30 * 185 / 335])
    np.testing.assert_allclose(usual["expected_events_90d"][:2], [90 * 100 / 275, 90 * 180 / 275])
    # no interaction in 90 days: the year's count cannot be read back, so nothing is expected
    assert np.isnan(usual["expected_events_30d"][2]) and np.isnan(usual["expected_events_90d"][2])
    # 80 days of tenure: the 60 days before the last 30, and no "before" the last 90 at all
    assert usual["expected_events_30d"][3] == pytest.approx(30 * 30 / 60)
    assert np.isnan(usual["expected_events_90d"][3])


def test_usual_interactions_read_back_the_yearly_count_of_the_sql(
        small_source: Any, fake_features: pd.DataFrame) -> None:
    """The year's count behind ``interaction_trend_90_365`` is what the events table holds."""
    t = FAKE_AS_OF
    counts = small_source.con.execute(
        "SELECT customer_id, sum(coalesce(\"count\", 1)) AS n FROM events "
        "WHERE CAST(ts AS DATE) >= ? AND CAST(ts AS DATE) < ? GROUP BY customer_id",
        [t - timedelta(days=365), t]).df().set_index("customer_id")["n"]
    f = fake_features.set_index("customer_id")
    year = counts.reindex(f.index).fillna(0).to_numpy(dtype=float)
    cols = {c: f[c].to_numpy(dtype=float) for c in
            ("events_30d", "events_90d", "interaction_trend_90_365", "tenure_days")}
    cols["churn_probability"] = np.zeros(len(f))
    usual = usual_interactions(cols)
    span = np.clip(cols["tenure_days"], 90, 365)
    ok = cols["events_90d"] > 0
    assert ok.sum() > 100
    np.testing.assert_allclose(usual["expected_events_30d"][ok],
                               30 * (year[ok] - cols["events_30d"][ok]) / (span[ok] - 30))


def test_declining_needs_a_drop_against_the_customers_own_usual_rate() -> None:
    policy = load_catalog()
    f = rows(
        interactions(120, 20, 2),    # 2 in 30 days against 10.6 usually: declining (30 days)
        interactions(200, 20, 15),   # steady last month, but 20 in 90 days against 58.9
        interactions(40, 6, 1),      # a drop, but 3.5 usually in 30 days: too little to tell
        interactions(120, 30, 8),    # 8 against 10.6: no drop
        {"tenure_days": 500, "events_90d": np.nan, "events_30d": np.nan,
         "interaction_trend_90_365": np.nan},  # no interaction features: no signal
    )
    assert interaction_decline(f, policy).tolist() == [30, 90, 0, 0, 0]
    sig = signals(f, policy)
    assert sig["interaction_decline"].tolist() == [True, True, False, False, False]
    a = assess(f, policy)
    assert a.lifecycle_stage.tolist() == ["declining", "declining", "loyal", "loyal", "loyal"]
    facts = evidence(a.columns, a.signals)["interaction_decline"]
    assert facts[0] == "2 interactions in the last 30 days, 81% fewer than their usual 11"
    assert facts[1] == "20 interactions in the last 90 days, 66% fewer than their usual 59"
    # the fact is what an action's reason quotes
    reasons = " ".join(x["reason"] for x in a.actions(f, policy, 0))
    assert "2 interactions in the last 30 days, 81% fewer than their usual 11" in reasons


def test_at_risk_is_declining_with_a_high_churn_risk() -> None:
    policy = load_catalog()
    declining, steady = interactions(120, 20, 2), interactions(120, 30, 10)
    f = rows(declining, declining, steady, steady,
             churn_probability=[0.9, 0.3, 0.9, 0.3])
    assert lifecycle_stage(f, policy).tolist() == ["at_risk", "declining", "loyal", "loyal"]


def test_lapsed_is_quiet_on_both_sides_or_far_past_the_usual_gap() -> None:
    policy = load_catalog()
    f = frame(
        tenure_days=[500, 500, 500, 60, 60, 30, 500, 500],
        purchase_days_total=[10, 10, 10, 0, 0, 0, 10, 10],
        days_since_last_purchase=[50, 50, 40, np.nan, np.nan, np.nan, 70, 70],
        days_since_last_interaction=[50, 10, 50, np.nan, 20, np.nan, 3, 3],
        overdue_ratio=[1.0, 1.0, 1.0, np.nan, np.nan, np.nan, 4.5, 3.0],
    )
    assert lifecycle_stage(f, policy).tolist() == [
        "lapsed",  # 50 days without a purchase or an interaction
        "loyal",   # still interacting
        "loyal",   # bought 40 days ago
        "lapsed",  # never bought nor interacted in 60 days of tenure
        "new",     # never bought, but interacted 20 days ago
        "new",     # 30 days of tenure: not quiet for long enough yet
        "lapsed",  # 4.5x the usual gap and 70 days: gone past their own rhythm
        "loyal",   # 3x: not yet
    ]


def test_a_signal_is_off_without_its_facts_and_facts_never_break() -> None:
    """Regression: an inline row with ``overdue_ratio`` set but ``days_since_last_purchase``
    null turned the overdue signal on, and its fact crashed (``cannot convert float NaN to
    integer``)."""
    policy = load_catalog().fit_value_tiers(np.arange(1000.0))
    f = frame(overdue_ratio=3.0, days_since_last_purchase=np.nan, churn_probability=0.8,
              clv=900.0)
    a = assess(f, policy)
    assert not a.signals["overdue"][0]
    texts = a.actions_json(policy)
    assert json.loads(texts[0]) == a.actions(f, policy, 0)
    # facts of a signal that is on with a missing value read as unknown instead of failing
    on = {s: np.ones(1, dtype=bool) for s in a.signals}
    cols = {k: np.full(1, np.nan) for k in a.columns}
    facts = evidence(cols, on)
    assert facts["overdue"][0].startswith("an unknown number of days since the last purchase")
    assert facts["inactive"][0] == "no interaction for an unknown number of days"
    assert facts["interaction_decline"][0] == "interactions fell in the last 30 days vs. " \
        "their usual"


def test_inline_row_with_missing_recency_scores_through_the_scoring_path(
        fake_bundle: Any, fake_features: pd.DataFrame) -> None:
    """The same regression through the encoder and ``score_matrix``, as the API scores
    inline features."""
    from churnguard.model.score import score_matrix

    enc = fake_bundle.encoder()
    rec = {k: (None if isinstance(v, float) and np.isnan(v) else v)
           for k, v in fake_features[fake_bundle.feature_names].iloc[0].to_dict().items()}
    rec["days_since_last_purchase"] = None
    rec["overdue_ratio"] = 3.0
    X = enc.encode_records([rec])
    full = score_matrix(fake_bundle, X)
    assert not full.assessment.signals["overdue"][0]
    assert full.actions(0)
