"""The contractual subscription features: hand-computed values, point in time, contract checks.

Values are worked out by hand on tiny tables around a 2024-05-01 cutoff (T - 30 = Apr 1,
T - 90 = Feb 1, T - 120 = Jan 2); the point-in-time property extends
tests/code/test_point_in_time.py to subscriptions: rows starting on or after the cutoff, end
dates not yet passed at it and events on or after it never change a feature.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churnguard.features.build import (
    build_features,
    build_snapshot_grid,
    infer_spec,
    subscription_sql,
)
from churnguard.features.definitions import FeatureSpec, feature_catalog
from churnguard.features.sources import DataContractError, open_source
from churnguard.features.spark import to_spark_sql
from tests.tables import tiny_tables, write_source

CUTOFF = date(2024, 5, 1)
D = date.fromisoformat

#: The features the contractual spec adds, with their kind and role.
NEW = {
    "sub_term_months": ("float", "context"),
    "sub_renewals": ("int", "context"),
    "sub_auto_renew": ("float", "actionable"),
    "sub_discount": ("float", "actionable"),
    "sub_mrr_change_90d": ("float", "actionable"),
    "sub_plan_changes_365d": ("int", "actionable"),
    "sub_seats": ("float", "actionable"),
    "sub_seats_change_90d": ("float", "actionable"),
    "sub_plan_tenure_days": ("float", "context"),
    "usage_per_active_day_30d": ("float", "actionable"),
    "usage_per_active_day_trend": ("float", "actionable"),
    "usage_per_seat_30d": ("float", "actionable"),
    "usage_per_seat_trend": ("float", "actionable"),
    "support_per_seat_90d": ("float", "actionable"),
}


def _subscriptions() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": ["a", "a", "b"],
        "start_date": [D("2024-01-01"), D("2024-03-01"), D("2024-02-01")],
        # b's end (May 20) is after the cutoff: unknown at T, b is simply subscribed.
        "end_date": [D("2024-03-01"), None, D("2024-05-20")],
        "plan": ["basic", "pro", "basic"],
        "mrr": [10.0, 30.0, 10.0],
        "renewal_date": [D("2024-02-01"), D("2024-06-01"), D("2024-06-01")],
        "seats": [2.0, 5.0, None],
        "discount": [0.0, 0.25, None],
        "auto_renew": [True, False, None],
        "term_months": pd.array([1, 3, None], dtype="Int64"),
    })


def _events() -> pd.DataFrame:
    rows = [  # daily rollups: customer, day, type, count
        ("a", "2024-02-15", "login", 6),           # 76 days before T: the earlier 90 days
        ("a", "2024-03-10", "login", 4),           # 52 days before
        ("a", "2024-03-20", "support_ticket", 1),  # 42 days before
        ("a", "2024-04-20", "login", 3),           # the last 30 days ...
        ("a", "2024-04-28", "login", 1),
        ("a", "2024-04-29", "complaint", 1),
        ("a", "2024-05-02", "login", 9),           # after the cutoff: never read
        ("b", "2024-03-01", "email_open", 2),      # 61 days before
    ]
    return pd.DataFrame({
        "customer_id": [r[0] for r in rows],
        "ts": pd.to_datetime([r[1] for r in rows]),
        "event_type": [r[2] for r in rows],
        "count": [r[3] for r in rows],
    })


def _tables() -> dict[str, pd.DataFrame]:
    tables = tiny_tables()
    tables["events"] = _events()
    tables["subscriptions"] = _subscriptions()
    return tables


def _features(tables: dict[str, Any], spec: FeatureSpec | None = None,
              cutoff: date = CUTOFF) -> pd.DataFrame:
    with open_source(tables, reference_time=datetime(2030, 1, 1)) as src:
        spec = spec or infer_spec(src, as_of=cutoff)
        return build_features(src, spec, cutoff).to_pandas().set_index("customer_id")


# ---------------------------------------------------------------------------------------------
# Hand-computed values


def test_contractual_features_by_hand():
    f = _features(_tables())
    a, b = f.loc["a"], f.loc["b"]
    # a: basic, monthly, Jan 1 - Mar 1 (2 seats); then pro, quarterly, from Mar 1 (5 seats,
    # 25 % off, no auto-renew).
    assert a["sub_term_months"] == 3
    # Renewed Feb 1 (a monthly term end inside the first row) and Mar 1 (pro took over the day
    # basic ended); pro's first term ends Jun 1, after the cutoff.
    assert a["sub_renewals"] == 2
    assert a["sub_auto_renew"] == 0.0 and a["sub_discount"] == 0.25
    assert a["sub_seats"] == 5 and a["sub_seats_change_90d"] == 3  # 2 seats on Feb 1
    assert a["sub_mrr_change_90d"] == 20  # 30 now, 10 on Feb 1
    assert a["sub_plan_changes_365d"] == 1
    assert a["sub_plan_tenure_days"] == 61  # on pro since Mar 1
    assert a["sub_days_to_renewal"] == 31 and a["sub_term_days"] == 92  # unchanged
    # Usage: 5 interactions on 3 active days in the last 30 days; 11 on 3 days in the 90 before.
    assert a["usage_per_active_day_30d"] == pytest.approx(5 / 3)
    assert a["usage_per_active_day_trend"] == pytest.approx((5 / 3) / (11 / 3))
    assert a["usage_per_seat_30d"] == pytest.approx(5 / 5)
    assert a["usage_per_seat_trend"] == pytest.approx((5 / 30 / 5) / (11 / 90 / 2))
    assert a["support_per_seat_90d"] == pytest.approx(2 / 5)  # the ticket and the complaint
    # b: one row, nothing optional recorded but the renewal date: the term is derived from it
    # (Feb 1 -> Jun 1, 121 days: 4 months); b was not yet subscribed 90 days before.
    assert b["sub_term_months"] == 4 and b["sub_renewals"] == 0
    assert b["sub_plan_tenure_days"] == 90 and b["sub_plan_changes_365d"] == 0
    for name in ("sub_auto_renew", "sub_discount", "sub_seats", "sub_seats_change_90d",
                 "sub_mrr_change_90d", "usage_per_seat_30d", "usage_per_seat_trend",
                 "support_per_seat_90d"):
        assert pd.isna(b[name]), name
    assert b["usage_per_active_day_30d"] == 0 and b["usage_per_active_day_trend"] == 0
    assert "c" not in f.index  # signed up after the cutoff


def test_renewals_count_term_ends_and_rows_without_a_gap():
    """Annual terms with a restart after a gap: only the current, continuous subscription's
    renewals count; the term comes from term_months, else from the renewal date."""
    tables = _tables()
    tables["subscriptions"] = pd.DataFrame({
        "customer_id": ["a", "a", "a", "b"],
        "start_date": [D("2020-01-01"), D("2021-01-01"), D("2022-03-01"), D("2024-01-31")],
        "end_date": [D("2021-01-01"), D("2022-01-01"), None, None],
        "plan": ["x", "x", "y", "m"],
        "renewal_date": [D("2021-01-01"), D("2022-01-01"), D("2023-03-01"), D("2024-02-29")],
        "term_months": pd.array([12, 12, None, 1], dtype="Int64"),
    })
    f = _features(tables)
    # a: 2020 -> 2021 -> (two-month gap) -> annual from Mar 2022: renewed Mar 1 2023 and
    # Mar 1 2024; the rows before the gap do not count.
    assert f.loc["a", "sub_renewals"] == 2 and f.loc["a", "sub_term_months"] == 12
    assert f.loc["a", "sub_plan_tenure_days"] == (CUTOFF - D("2022-03-01")).days
    # b: monthly from a month end: Feb 29, Mar 31 and Apr 30 are term ends before May 1.
    assert f.loc["b", "sub_renewals"] == 3
    assert f.loc["a", "sub_plan_changes_365d"] == 0  # y started more than a year ago


def test_absent_optional_columns_still_give_every_feature():
    tables = _tables()
    tables["subscriptions"] = tables["subscriptions"][["customer_id", "start_date",
                                                       "end_date"]]
    f = _features(tables)
    spec = FeatureSpec(event_types=("complaint", "email_open", "login", "support_ticket"),
                       attribute_columns=("segment",), subscriptions=True,
                       contract_features=True)
    assert list(f.columns) == ["as_of", *spec.feature_names()]
    for name in ("sub_term_months", "sub_auto_renew", "sub_discount", "sub_seats",
                 "sub_seats_change_90d", "usage_per_seat_30d", "support_per_seat_90d"):
        assert f[name].isna().all(), name
    assert (f["sub_plan_changes_365d"] == 0).all()
    assert f.loc["a", "sub_renewals"] == 1  # pro took over from basic on Mar 1
    assert f.loc["a", "sub_mrr_change_90d"] == 0  # mrr not recorded: 0 - 0


def test_a_contractual_spec_on_a_source_without_subscriptions_is_zero_filled():
    tables = _tables()
    del tables["subscriptions"]
    spec = FeatureSpec(event_types=("login",), subscriptions=True, contract_features=True)
    f = _features(tables, spec)
    assert list(f.columns) == ["as_of", *spec.feature_names()]
    assert (f[["sub_renewals", "sub_plan_changes_365d", "sub_active"]] == 0).all().all()
    assert f["sub_seats"].isna().all() and f["sub_plan_tenure_days"].isna().all()
    assert f.loc["a", "usage_per_active_day_30d"] == pytest.approx(5 / 3)


def test_the_grid_gives_each_cutoff_its_single_build_features():
    cutoffs = [date(2024, 3, 1), date(2024, 4, 1), CUTOFF]
    with open_source(_tables(), reference_time=datetime(2030, 1, 1)) as src:
        spec = infer_spec(src, as_of=CUTOFF)
        grid = build_snapshot_grid(src, spec, cutoffs, horizon_days=30,
                                   clv_horizon_days=30).to_pandas()
        grid = grid.drop(columns=["churned", "future_spend", "future_orders"])
        for cutoff in cutoffs:
            single = build_features(src, spec, cutoff).to_pandas()
            block = grid[grid["as_of"].astype(str) == cutoff.isoformat()]
            pd.testing.assert_frame_equal(block.reset_index(drop=True), single,
                                          check_dtype=False)


# ---------------------------------------------------------------------------------------------
# The spec: an older model keeps its columns


def test_a_spec_saved_before_the_contractual_features_keeps_its_columns():
    old = FeatureSpec(event_types=("login",), subscriptions=True)
    new = FeatureSpec(event_types=("login",), subscriptions=True, contract_features=True)
    assert "contract_features" not in old.to_dict()
    assert FeatureSpec.from_dict(json.loads(json.dumps(old.to_dict()))) == old
    assert FeatureSpec.from_dict(json.loads(json.dumps(new.to_dict()))) == new
    assert old.fingerprint() != new.fingerprint()
    assert not set(NEW) & set(old.feature_names())
    assert new.feature_names()[:len(old.feature_names())] == old.feature_names()
    assert set(new.feature_names()) - set(old.feature_names()) == set(NEW)
    # Without subscriptions the flag adds nothing.
    plain = FeatureSpec(event_types=("login",), contract_features=True)
    assert plain.feature_names() == FeatureSpec(event_types=("login",)).feature_names()


def test_new_features_have_their_kind_role_and_null_meaning():
    spec = FeatureSpec(event_types=("login",), subscriptions=True, contract_features=True)
    catalog = {f["name"]: f for f in feature_catalog(spec)}
    for name, (kind, role) in NEW.items():
        assert (catalog[name]["kind"], catalog[name]["role"]) == (kind, role), name
        # Counts are never null; every other new feature says what null means.
        assert ("null_meaning" in catalog[name]) == (kind == "float"
                                                     and name != "usage_per_active_day_30d"), \
            name


def test_the_subscription_sql_transpiles_to_spark():
    spec = FeatureSpec(event_types=("login",), subscriptions=True, contract_features=True)
    sql = to_spark_sql(subscription_sql(CUTOFF, source_columns=("customer_id", "start_date")))
    assert "LAST_DAY" in sql and "CAST(NULL AS DOUBLE) AS `seats`" in sql
    assert "TO_MONTHS" not in sql.upper() and spec.aggregates()


# ---------------------------------------------------------------------------------------------
# Contract checks of the optional columns


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bad_optional_subscription_columns_break_the_contract(tmp_path, fmt):
    tables = _tables()
    subs = tables["subscriptions"]
    subs["seats"] = [-1.0, 5.0, -3.0]
    subs["discount"] = [0.1, 1.5, None]
    subs["term_months"] = pd.array([0, 3, None], dtype="Int64")
    with pytest.raises(DataContractError) as exc:
        open_source(write_source(tmp_path / "src", tables, fmt))
    found = {(p.table, p.column, p.n_rows, p.message): p.examples for p in exc.value.problems}
    text = "'" if fmt == "csv" else ""
    assert found == {
        ("subscriptions", "seats", 2, "with a seats below 0"):
            (f"{text}-1.0{text}", f"{text}-3.0{text}"),
        ("subscriptions", "discount", 1, "with a discount above 1"): (f"{text}1.5{text}",),
        ("subscriptions", "term_months", 1, "with a term_months below 1"): (f"{text}0{text}",),
    }
    assert "subscriptions.discount: 1 row with a discount above 1 (e.g. " in str(exc.value)


def test_optional_subscription_columns_of_the_wrong_type_break_the_contract(tmp_path):
    tables = _tables()
    tables["subscriptions"]["auto_renew"] = ["yes", "false", None]
    with pytest.raises(DataContractError,
                       match=r"subscriptions.auto_renew: 1 row that cannot be parsed as bool "
                             r"\(e.g. 'yes'\)"):
        open_source(write_source(tmp_path / "src", tables, "csv"))
    tables["subscriptions"]["auto_renew"] = [True, False, None]
    tables["subscriptions"]["seats"] = [True, False, None]
    with pytest.raises(DataContractError,
                       match=r"subscriptions.seats: has type BOOLEAN, expected float"):
        open_source(write_source(tmp_path / "pq", tables, "parquet"))


def test_good_optional_columns_open_cleanly_in_both_formats(tmp_path):
    for fmt in ("csv", "parquet"):
        with open_source(write_source(tmp_path / fmt, _tables(), fmt),
                         reference_time=datetime(2030, 1, 1)) as src:
            assert set(src.columns["subscriptions"]) >= {"seats", "discount", "auto_renew",
                                                         "term_months"}
            f = build_features(src, infer_spec(src, as_of=CUTOFF), CUTOFF).to_pandas()
            assert f.set_index("customer_id").loc["a", "sub_auto_renew"] == 0.0


# ---------------------------------------------------------------------------------------------
# Point in time


PIT_CUTOFF = date(2024, 6, 1)
PIT_CUSTOMERS = ["c1", "c2", "c3"]
T0 = date(2023, 1, 1)
PIT_SPEC = FeatureSpec(event_types=("complaint", "login", "support_ticket"),
                       subscriptions=True, contract_features=True)
# One old row per table with every column set keeps each column typed whatever is generated.
ANCHOR_SUB = ("c1", date(2022, 1, 1), date(2022, 3, 1), "basic", 10.0, date(2022, 2, 1), 1.0,
              0.0, True, 1)
SUB_COLUMNS = ["customer_id", "start_date", "end_date", "plan", "mrr", "renewal_date", "seats",
               "discount", "auto_renew", "term_months"]

days = st.integers(min_value=0, max_value=700)
sub_rows = st.lists(
    st.tuples(
        st.sampled_from(PIT_CUSTOMERS), days,
        st.one_of(st.none(), st.integers(min_value=0, max_value=400)),  # length (None: open)
        st.sampled_from([None, "basic", "pro"]),
        st.one_of(st.none(), st.sampled_from([10.0, 30.0, 99.5])),
        st.one_of(st.none(), st.integers(min_value=1, max_value=400)),  # renewal after start
        st.one_of(st.none(), st.integers(min_value=0, max_value=20)),
        st.one_of(st.none(), st.sampled_from([0.0, 0.15, 1.0])),
        st.one_of(st.none(), st.booleans()),
        st.one_of(st.none(), st.sampled_from([1, 3, 12])),
    ),
    max_size=10, unique_by=lambda r: (r[0], r[1]))
evt_rows = st.lists(st.tuples(st.sampled_from(PIT_CUSTOMERS), days,
                              st.sampled_from(["login", "complaint", "support_ticket"]),
                              st.integers(min_value=1, max_value=5)), max_size=25)
future_ends = st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
                       min_size=10, max_size=10)


def _sub(row: tuple) -> tuple:
    cust, start, length, plan, mrr, renewal, seats, discount, auto, term = row
    s = T0 + timedelta(days=start)
    return (cust, s, None if length is None else s + timedelta(days=length), plan, mrr,
            None if renewal is None else s + timedelta(days=renewal),
            None if seats is None else float(seats), discount, auto, term)


def _pit_tables(subs: list[tuple], evts: list[tuple]) -> dict[str, pd.DataFrame]:
    frame = pd.DataFrame([ANCHOR_SUB, *subs], columns=SUB_COLUMNS)
    frame["term_months"] = frame["term_months"].astype("Int64")
    frame["auto_renew"] = frame["auto_renew"].astype("boolean")
    return {
        "customers": pd.DataFrame({"customer_id": PIT_CUSTOMERS,
                                   "signup_date": [date(2022, 1, 1)] * 3}),
        "transactions": pd.DataFrame({"customer_id": ["c1"], "ts": [datetime(2023, 1, 1)],
                                      "amount": [1.0]}),
        "events": pd.DataFrame(
            [("c1", datetime(2023, 1, 1), "login", 1),
             *((c, datetime.combine(T0 + timedelta(days=d), datetime.min.time())
                + timedelta(hours=9), t, n) for c, d, t, n in evts)],
            columns=["customer_id", "ts", "event_type", "count"]),
        "subscriptions": frame,
    }


def _known_at_cutoff(rows: list[tuple], new_ends: list[int | None]) -> list[tuple]:
    """The rows started before the cutoff, with every end date not yet passed at it replaced
    (by another on or after the cutoff, or none): what is known at T is unchanged."""
    out = []
    for row, new_end in zip(rows, new_ends, strict=False):
        if row[1] >= PIT_CUTOFF:
            continue
        if row[2] is None or row[2] >= PIT_CUTOFF:
            end = None if new_end is None else PIT_CUTOFF + timedelta(days=new_end)
            row = (row[0], row[1], end, *row[3:])
        out.append(row)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subs=sub_rows, evts=evt_rows, new_subs=sub_rows, new_evts=evt_rows, ends=future_ends)
def test_subscription_rows_not_known_at_the_cutoff_never_change_a_feature(
        subs, evts, new_subs, new_evts, ends):
    subs, new_subs = [_sub(r) for r in subs], [_sub(r) for r in new_subs]
    past_evts = [e for e in evts if T0 + timedelta(days=e[1]) < PIT_CUTOFF]
    future_evts = [e for e in new_evts if T0 + timedelta(days=e[1]) >= PIT_CUTOFF]
    base = _pit_tables(subs, evts)
    # Keep what is known at T; replace the future: new rows starting on or after the cutoff
    # (unique start per customer, as generated), other end dates for the rows still running.
    kept = _known_at_cutoff(subs, ends)
    starts = {(r[0], r[1]) for r in kept}
    future = [r for r in new_subs if r[1] >= PIT_CUTOFF and (r[0], r[1]) not in starts]
    changed = _pit_tables(kept + future, past_evts + future_evts)
    pd.testing.assert_frame_equal(_features(base, PIT_SPEC, PIT_CUTOFF),
                                  _features(changed, PIT_SPEC, PIT_CUTOFF))


def test_the_property_would_catch_a_leak():
    """Guard against a vacuous property: a row known at the cutoff does change features, one
    starting on it does not."""
    base = _features(_pit_tables([], []), PIT_SPEC, PIT_CUTOFF)
    row = ("c2", PIT_CUTOFF - timedelta(days=1), None, "pro", 30.0, None, 4.0, 0.1, True, 12)
    assert not base.equals(_features(_pit_tables([row], []), PIT_SPEC, PIT_CUTOFF))
    on_cutoff = (row[0], PIT_CUTOFF, *row[2:])
    pd.testing.assert_frame_equal(
        base, _features(_pit_tables([on_cutoff], []), PIT_SPEC, PIT_CUTOFF))
    # An end date on the cutoff is not passed yet: the same features as no end date.
    started = ("c2", date(2024, 1, 10), None, "pro", 30.0, None, 4.0, 0.1, True, 1)
    ends_on_cutoff = (*started[:2], PIT_CUTOFF, *started[3:])
    pd.testing.assert_frame_equal(
        _features(_pit_tables([started], []), PIT_SPEC, PIT_CUTOFF),
        _features(_pit_tables([ends_on_cutoff], []), PIT_SPEC, PIT_CUTOFF))
