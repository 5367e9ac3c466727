"""Every feature family and the labels against values computed by hand on tiny data."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from churnguard.features.build import (
    build_features,
    build_snapshot_grid,
    infer_spec,
    label_sql,
    monthly_cutoffs,
    render,
)
from churnguard.features.definitions import FeatureSpec, feature_catalog, slug
from churnguard.features.sources import open_source
from tests.tables import tiny_tables

CUTOFF = date(2024, 5, 1)


@pytest.fixture()
def source():
    src = open_source(tiny_tables())
    yield src
    src.close()


@pytest.fixture()
def feats(source) -> pd.DataFrame:
    spec = infer_spec(source)
    return build_features(source, spec, CUTOFF).to_pandas().set_index("customer_id")


def test_population_is_customers_signed_up_before_the_cutoff(feats):
    # c signs up on 2024-06-01, after the cutoff.
    assert sorted(feats.index) == ["a", "b"]
    assert (feats["as_of"] == pd.Timestamp(CUTOFF)).all() or (feats["as_of"] == CUTOFF).all()


def test_purchase_features_by_hand(feats):
    a = feats.loc["a"]
    # a bought on Jan 5 (10 + 5, same day), Feb 4 (20), Apr 4 (30) and refunded 5 on Mar 5.
    assert a["days_since_last_purchase"] == 27  # Apr 4 -> May 1
    assert a["days_since_first_purchase"] == 117  # Jan 5 -> May 1 (2024 is a leap year)
    assert a["tenure_days"] == 121  # Jan 1 -> May 1
    assert a["orders_total"] == 4
    assert a["purchase_days_total"] == 3
    assert a["spend_total"] == pytest.approx(60.0)  # 10 + 5 + 20 - 5 + 30
    assert a["avg_order_value"] == pytest.approx(65.0 / 4)  # gross / orders
    # Windows are [T - w, T): 30d = [Apr 1, May 1) holds Apr 4 only.
    assert (a["orders_30d"], a["spend_30d"]) == (1, pytest.approx(30.0))
    # 90d = [Feb 1, May 1): Feb 4, the Mar 5 refund and Apr 4.
    assert (a["orders_90d"], a["spend_90d"]) == (2, pytest.approx(45.0))
    assert (a["orders_365d"], a["spend_365d"]) == (4, pytest.approx(60.0))
    # Gaps between purchase days: Jan 5 -> Feb 4 = 30, Feb 4 -> Apr 4 = 60.
    assert a["gap_mean_days"] == pytest.approx(45.0)
    assert a["gap_std_days"] == pytest.approx(math.sqrt(((30 - 45) ** 2 + (60 - 45) ** 2) / 1))
    assert a["overdue_ratio"] == pytest.approx(27 / 45)
    # (2 orders / 90 days) / (4 orders / min(365, max(90, tenure 121)) days)
    assert a["purchase_trend"] == pytest.approx((2 / 90) / (4 / 121))
    assert (a["refunds_365d"], a["refund_amount_365d"]) == (1, pytest.approx(5.0))


def test_single_purchase_has_no_gap(feats):
    b = feats.loc["b"]
    assert b["orders_total"] == 1  # the May 10 order is after the cutoff
    assert math.isnan(b["gap_mean_days"]) and math.isnan(b["overdue_ratio"])
    assert b["purchase_trend"] == pytest.approx(1.0)


def test_interaction_features_by_hand(feats):
    a = feats.loc["a"]
    # Before May 1: Apr 28 login (count 1), Apr 29 login (count 2), Apr 29 complaint.
    # The May 2 login is after the cutoff.
    assert a["events_7d"] == 4
    assert a["login_7d"] == 3 and a["complaint_7d"] == 1 and a["email_open_7d"] == 0
    assert a["active_days_30d"] == 2
    assert a["days_since_last_interaction"] == 2
    assert a["complaints_90d"] == 1 and a["days_since_last_complaint"] == 2
    assert a["tickets_90d"] == 0
    assert a["interaction_trend"] == pytest.approx((4 / 30) / (4 / 90))
    assert a["interaction_trend_90_365"] == pytest.approx((4 / 90) / (4 / 121))
    b = feats.loc["b"]
    assert b["events_90d"] == 1 and b["events_30d"] == 0
    assert b["days_since_last_interaction"] == 61
    assert b["interaction_trend"] == 0
    assert math.isnan(b["days_since_last_complaint"])


def test_attributes_are_categories(feats, source):
    assert feats.loc["a", "segment"] == "x" and feats.loc["b", "segment"] == "y"
    spec = infer_spec(source)
    assert spec.attribute_columns == ("segment",)
    assert spec.attribute_categories == {"segment": ("x", "y")}
    kinds = {f["name"]: f["kind"] for f in feature_catalog(spec)}
    assert kinds["segment"] == "category"


def test_every_feature_has_a_description_and_a_unique_name(source):
    spec = infer_spec(source)
    catalog = feature_catalog(spec)
    names = [f["name"] for f in catalog]
    assert len(names) == len(set(names))
    assert all(f["description"].strip() for f in catalog)


def test_noncontractual_labels_by_hand(source):
    labels = source.con.execute(label_sql(CUTOFF, 60, 90)).df().set_index("customer_id")
    # Horizon [May 1, Jun 30): a buys next on Jul 1 (churned), b on May 10 (retained).
    assert labels.loc["a", "churned"] == 1 and labels.loc["b", "churned"] == 0
    # CLV window [May 1, Jul 30): a spends 50, b spends 40.
    assert labels.loc["a", "future_spend"] == pytest.approx(50.0)
    assert labels.loc["b", "future_spend"] == pytest.approx(40.0)
    assert labels.loc["a", "future_orders"] == 1


def test_snapshot_grid_stacks_cutoffs_with_their_own_features(source):
    spec = infer_spec(source)
    grid = build_snapshot_grid(source, spec, [date(2024, 4, 1), CUTOFF], horizon_days=60,
                               clv_horizon_days=90).to_pandas()
    assert sorted(grid["as_of"].astype(str).unique()) == ["2024-04-01", "2024-05-01"]
    april = grid[grid["as_of"].astype(str) == "2024-04-01"].set_index("customer_id")
    assert april.loc["a", "orders_total"] == 3  # the Apr 4 order is not yet there
    assert april.loc["a", "churned"] == 0  # bought on Apr 4, inside [Apr 1, May 31)


def test_the_grid_gives_each_cutoff_exactly_its_single_build_features(source):
    spec = infer_spec(source)
    cutoffs = [date(2024, 3, 1), date(2024, 4, 1), CUTOFF]
    grid = build_snapshot_grid(source, spec, cutoffs, horizon_days=30, clv_horizon_days=30)
    grid = grid.to_pandas().drop(columns=["churned", "future_spend", "future_orders"])
    for cutoff in cutoffs:
        single = build_features(source, spec, cutoff).to_pandas()
        block = grid[grid["as_of"].astype(str) == cutoff.isoformat()].reset_index(drop=True)
        pd.testing.assert_frame_equal(block, single, check_dtype=False)


def test_subscription_features_and_contractual_labels():
    tables = tiny_tables()
    tables["subscriptions"] = pd.DataFrame({
        "customer_id": ["a", "a", "b"],
        "start_date": pd.to_datetime(["2024-01-01", "2024-03-01", "2024-02-01"]).date,
        "end_date": pd.to_datetime(["2024-03-01", None, "2024-05-20"]).date,
        "plan": ["basic", "pro", "basic"],
        "mrr": [10.0, 30.0, 10.0],
        "renewal_date": pd.to_datetime(["2024-02-01", "2024-06-01", "2024-06-01"]).date,
    })
    with open_source(tables) as src:
        spec = infer_spec(src)
        assert spec.subscriptions
        f = build_features(src, spec, CUTOFF).to_pandas().set_index("customer_id")
        # a: basic ended Mar 1, pro active since Mar 1 with renewal Jun 1.
        assert f.loc["a", "sub_active"] == 1 and f.loc["a", "sub_plan"] == "pro"
        assert f.loc["a", "sub_mrr"] == pytest.approx(30.0)
        assert f.loc["a", "sub_plan_changes"] == 1 and f.loc["a", "sub_ended"] == 1
        assert f.loc["a", "sub_tenure_days"] == 121
        assert f.loc["a", "sub_days_to_renewal"] == 31  # May 1 -> Jun 1
        assert f.loc["a", "sub_term_days"] == 92  # Mar 1 -> Jun 1
        # b's end date (May 20) is after the cutoff: unknown at T, so b is simply active.
        assert f.loc["b", "sub_active"] == 1 and f.loc["b", "sub_ended"] == 0
        labels = src.con.execute(
            label_sql(CUTOFF, 60, 90, mode="contractual")
        ).df().set_index("customer_id")
        assert labels.loc["b", "churned"] == 1  # ends May 20, nothing follows
        assert labels.loc["a", "churned"] == 0


def test_render_and_helpers():
    assert render("x >= {T-30} AND y < {T}", date(2024, 3, 1)) == (
        "x >= DATE '2024-01-31' AND y < DATE '2024-03-01'"
    )
    assert slug("Email Open!") == "email_open"
    assert monthly_cutoffs(date(2024, 1, 15), date(2024, 4, 1)) == [
        date(2024, 2, 1), date(2024, 3, 1), date(2024, 4, 1)]
    assert monthly_cutoffs(date(2024, 11, 1), date(2025, 3, 1), step_months=2) == [
        date(2024, 11, 1), date(2025, 1, 1), date(2025, 3, 1)]


def test_spec_round_trips_through_dict():
    spec = FeatureSpec(event_types=("login",), attribute_columns=("segment",),
                       attribute_categories={"segment": ("x", "y")})
    again = FeatureSpec.from_dict(spec.to_dict())
    assert again == spec and again.fingerprint() == spec.fingerprint()


def test_the_incremental_grid_matches_single_builds_on_demo_data(tmp_path):
    from churnguard.features.demo_data import generate_demo_data

    generate_demo_data(tmp_path / "demo", n_customers=300, seed=5)
    with open_source(tmp_path / "demo") as src:
        spec = infer_spec(src)
        cutoffs = monthly_cutoffs(date(2024, 3, 1), date(2025, 2, 1), step_months=3)
        grid = build_snapshot_grid(src, spec, cutoffs, horizon_days=90,
                                   clv_horizon_days=120).to_pandas()
        for cutoff in cutoffs:
            single = build_features(src, spec, cutoff).to_pandas()
            block = grid[grid["as_of"].astype(str) == cutoff.isoformat()]
            block = block[single.columns].reset_index(drop=True)
            assert len(block) == len(single) > 50
            # Whole-history gap statistics are recombined from interval partials: equal to
            # DuckDB's own stddev up to float rounding.
            pd.testing.assert_frame_equal(block, single, check_dtype=False, rtol=1e-9)
