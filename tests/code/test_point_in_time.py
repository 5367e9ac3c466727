"""Point-in-time correctness as a property: the future never leaks into a feature.

Adding, removing or changing rows dated on or after the cutoff never changes any feature, and the
labels never read rows before the cutoff.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churnguard.features.build import build_features, label_sql
from churnguard.features.definitions import FeatureSpec
from churnguard.features.sources import open_source

CUTOFF = date(2024, 6, 1)
CUTOFF_TS = datetime(2024, 6, 1)
T0 = datetime(2023, 1, 1)
CUSTOMERS = ["c1", "c2", "c3"]
SPEC = FeatureSpec(event_types=("complaint", "login", "support_ticket"),
                   attribute_columns=("segment",))
# One fixed old row per table keeps every table non-empty whatever is generated.
ANCHOR_TXN = ("c1", T0, 1.0)
ANCHOR_EVT = ("c1", T0, "login", 1)

times = st.integers(min_value=0, max_value=700 * 24 * 60).map(
    lambda minutes: T0 + timedelta(minutes=minutes))
txn_rows = st.lists(st.tuples(st.sampled_from(CUSTOMERS), times,
                              st.floats(min_value=-50, max_value=500, allow_nan=False)),
                    max_size=25)
evt_rows = st.lists(st.tuples(st.sampled_from(CUSTOMERS), times,
                              st.sampled_from(["login", "complaint", "support_ticket"]),
                              st.integers(min_value=1, max_value=5)), max_size=25)


def _tables(txns: list, evts: list) -> dict[str, pd.DataFrame]:
    return {
        "customers": pd.DataFrame({
            "customer_id": CUSTOMERS,
            "signup_date": [date(2023, 1, 1), date(2023, 6, 1), date(2024, 1, 1)],
            "segment": ["a", "b", "a"],
        }),
        "transactions": pd.DataFrame([ANCHOR_TXN, *txns],
                                     columns=["customer_id", "ts", "amount"]),
        "events": pd.DataFrame([ANCHOR_EVT, *evts],
                               columns=["customer_id", "ts", "event_type", "count"]),
    }


def _run(tables: dict[str, pd.DataFrame], labels: bool = False) -> pd.DataFrame:
    with open_source(tables, reference_time=datetime(2030, 1, 1), thorough=False) as s:
        frame = (s.con.execute(label_sql(CUTOFF, 90, 180)).df() if labels
                 else build_features(s, SPEC, CUTOFF).to_pandas())
    return frame.sort_values("customer_id").reset_index(drop=True)


def _past(rows: list) -> list:
    return [r for r in rows if r[1] < CUTOFF_TS]


def _future(rows: list) -> list:
    return [r for r in rows if r[1] >= CUTOFF_TS]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(txns=txn_rows, evts=evt_rows, new_txns=txn_rows, new_evts=evt_rows)
def test_rows_on_or_after_the_cutoff_never_change_a_feature(txns, evts, new_txns, new_evts):
    base = _tables(txns, evts)
    # Keep the past, replace the whole future: adds, removes and changes rows at once.
    changed = _tables(_past(txns) + _future(new_txns), _past(evts) + _future(new_evts))
    pd.testing.assert_frame_equal(_run(base), _run(changed))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(txns=txn_rows, new_txns=txn_rows)
def test_labels_never_read_rows_before_the_cutoff(txns, new_txns):
    base = _tables(txns, [])
    changed = _tables(_past(new_txns) + _future(txns), [])
    pd.testing.assert_frame_equal(_run(base, labels=True), _run(changed, labels=True))


def test_the_property_would_catch_a_leak():
    """Guard against a vacuous property: a row just before the cutoff does change features."""
    base = _tables([], [])
    leaked = _tables([("c2", CUTOFF_TS - timedelta(seconds=1), 10.0)], [])
    assert not _run(base).equals(_run(leaked))
    at_cutoff = _tables([("c2", CUTOFF_TS, 10.0)], [])
    pd.testing.assert_frame_equal(_run(base), _run(at_cutoff))
