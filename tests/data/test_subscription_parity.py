"""DuckDB and Spark agree on the subscription (contractual) features.

The demo data of tests/integration/test_spark_parity.py has no subscriptions table, so the
subscription SQL (windows over the rows known at T, calendar month arithmetic, bitmaps of
active days) is compared here on a small hand-made source with the edge cases it must get
right: month-end starts, gaps, plan changes, rows with the same start date, values left empty,
rows that end or start after the cutoff. (Named apart from tests/code/test_subscription_features
.py: the test folders are not packages, so two test modules may not share a basename.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnguard.features.build import build_features, infer_spec
from churnguard.features.sources import open_source

pytestmark = pytest.mark.spark

CUTOFFS = (date(2024, 6, 1), date(2024, 3, 31))
CUSTOMERS = [f"c{i}" for i in range(1, 10)]
NEW_FEATURES = ("sub_term_months", "sub_renewals", "sub_auto_renew", "sub_discount",
                "sub_mrr_change_90d", "sub_plan_changes_365d", "sub_seats",
                "sub_seats_change_90d", "sub_plan_tenure_days", "usage_per_active_day_30d",
                "usage_per_active_day_trend", "usage_per_seat_30d", "usage_per_seat_trend",
                "support_per_seat_90d")


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from churnguard.features.spark import spark_session

    session = spark_session("local[1]")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _d(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)


# customer, start, end, plan, mrr, renewal_date, seats, discount, auto_renew, term_months
SUBSCRIPTIONS = [
    # Monthly from a month end, plan change at a renewal (Feb 29), still running.
    ("c1", "2023-01-31", "2024-02-29", "basic", 30.0, "2024-02-29", 3.0, 0.0, True, 1),
    ("c1", "2024-02-29", None, "pro", 90.0, "2024-06-29", 3.0, 0.1, True, 1),
    # Annual, a gap of six weeks, then annual again.
    ("c2", "2022-03-15", "2023-03-15", "team", 500.0, "2023-03-15", 10.0, 0.2, False, 12),
    ("c2", "2023-05-01", None, "team", 550.0, "2024-05-01", 12.0, 0.2, False, 12),
    # Seats grow at a renewal, same plan: a new row, no plan change.
    ("c3", "2023-06-10", "2024-04-10", "team", 100.0, "2024-04-10", 5.0, None, True, 1),
    ("c3", "2024-04-10", None, "team", 160.0, "2024-06-10", 8.0, None, True, 1),
    # Two rows starting the same day (the current row is the same whatever the row order).
    ("c4", "2024-01-15", None, "a", 20.0, "2024-07-15", 2.0, 0.05, None, 6),
    ("c4", "2024-01-15", None, "b", 40.0, "2025-01-15", 4.0, 0.15, True, 12),
    # Ends after the cutoff (unknown at T), and a row that starts after it.
    ("c5", "2023-09-01", "2024-07-01", "basic", 30.0, "2024-07-01", 1.0, 0.0, False, None),
    ("c5", "2024-06-15", None, "pro", 90.0, "2024-07-15", 1.0, 0.0, True, 1),
    # Nothing but the dates.
    ("c6", "2023-11-20", None, None, None, None, None, None, None, None),
    # Ended before the cutoff: no current subscription.
    ("c7", "2023-02-01", "2024-05-15", "basic", 30.0, "2024-05-15", 2.0, 0.5, True, 3),
    # A restart after a gap on another plan, derived term (renewal_date - start_date).
    ("c8", "2023-01-10", "2023-07-10", "basic", 30.0, "2023-07-10", 1.0, None, None, None),
    ("c8", "2023-10-01", None, "pro", 60.0, "2024-10-01", 1.0, None, None, None),
]


def _tables() -> dict[str, pa.Table]:
    rows = SUBSCRIPTIONS
    subs = pa.table({
        "customer_id": [r[0] for r in rows],
        "start_date": pa.array([_d(r[1]) for r in rows], pa.date32()),
        "end_date": pa.array([_d(r[2]) for r in rows], pa.date32()),
        "plan": [r[3] for r in rows],
        "mrr": pa.array([r[4] for r in rows], pa.float64()),
        "renewal_date": pa.array([_d(r[5]) for r in rows], pa.date32()),
        "seats": pa.array([r[6] for r in rows], pa.float64()),
        "discount": pa.array([r[7] for r in rows], pa.float64()),
        "auto_renew": pa.array([r[8] for r in rows], pa.bool_()),
        "term_months": pa.array([r[9] for r in rows], pa.int64()),
    })
    rng = np.random.default_rng(3)
    ev: list[tuple[str, datetime, str, int]] = []
    for cust in CUSTOMERS[:8]:
        # Daily rollups over the half year before the cutoffs, fading for some customers.
        days = pd.date_range("2023-12-01", "2024-06-10", freq="D")
        fade = 0.3 if cust in ("c1", "c3") else 1.0
        for day in days:
            p = 0.5 * (fade if day >= pd.Timestamp("2024-05-01") else 1.0)
            if rng.random() < p:
                ev.append((cust, day.to_pydatetime(), "login", int(rng.integers(1, 6))))
            if rng.random() < 0.04:
                ev.append((cust, day.to_pydatetime(), "support_ticket", 1))
            if rng.random() < 0.02:
                ev.append((cust, day.to_pydatetime(), "complaint", 1))
    events = pa.table({
        "customer_id": [e[0] for e in ev],
        "ts": pa.array([e[1] for e in ev], pa.timestamp("us")),
        "event_type": [e[2] for e in ev],
        "count": pa.array([e[3] for e in ev], pa.int64()),
    })
    customers = pa.table({
        "customer_id": CUSTOMERS,
        "signup_date": pa.array([date(2022, 1, 1)] * len(CUSTOMERS), pa.date32()),
    })
    transactions = pa.table({
        "customer_id": CUSTOMERS,
        "ts": pa.array([datetime(2023, 6, 1)] * len(CUSTOMERS), pa.timestamp("us")),
        "amount": pa.array([10.0] * len(CUSTOMERS), pa.float64()),
    })
    return {"customers": customers, "transactions": transactions, "events": events,
            "subscriptions": subs}


def _write(directory: Path, tables: dict[str, pa.Table]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, directory / f"{name}.parquet")
    return directory


def _assert_same(duck: pd.DataFrame, spark_frame: pd.DataFrame) -> None:
    duck = duck.sort_values("customer_id").reset_index(drop=True)
    spark_frame = spark_frame.sort_values("customer_id").reset_index(drop=True)
    assert list(duck.columns) == list(spark_frame.columns)
    assert len(duck) == len(spark_frame) > 0
    for col in duck.columns:
        a, b = duck[col], spark_frame[col]
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), rtol=1e-9,
                                       atol=0, equal_nan=True, err_msg=col)
        elif a.dtype.kind in "iu":
            assert b.dtype.kind in "iu", col
            assert (a.to_numpy() == b.to_numpy()).all(), col
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col


def _both(spark: Any, directory: Path, cutoff: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    from churnguard.features.spark import open_spark_source, spark_features

    ref = datetime(2030, 1, 1)
    with open_source(directory, reference_time=ref) as source:
        spec = infer_spec(source, as_of=cutoff)
        duck = build_features(source, spec, cutoff).to_pandas()
    src = open_spark_source(spark, str(directory), reference_time=ref)
    return duck, spark_features(src, spec, cutoff).toPandas()


@pytest.mark.parametrize("cutoff", CUTOFFS, ids=str)
def test_subscription_features_identical_on_spark(spark: Any, tmp_path: Path,
                                                  cutoff: date) -> None:
    duck, got = _both(spark, _write(tmp_path / "src", _tables()), cutoff)
    _assert_same(duck, got)
    assert (duck.dtypes.to_numpy() == got.dtypes.to_numpy()).all()
    # The fixture exercises the new features: values, not only nulls.
    f = duck.set_index("customer_id")
    for name in NEW_FEATURES:
        assert f[name].notna().any() and f[name].ne(0).any(), name
    assert f["usage_per_active_day_trend"].dropna().mod(1).ne(0).any()


def test_identical_on_spark_without_the_optional_columns(spark: Any, tmp_path: Path) -> None:
    """Only the required columns: every feature of the spec is still there (null or 0)."""
    tables = _tables()
    tables["subscriptions"] = tables["subscriptions"].select(
        ["customer_id", "start_date", "end_date"])
    duck, got = _both(spark, _write(tmp_path / "src", tables), CUTOFFS[0])
    _assert_same(duck, got)
    f = duck.set_index("customer_id")
    for name in ("sub_auto_renew", "sub_discount", "sub_seats", "sub_seats_change_90d",
                 "sub_term_months", "usage_per_seat_30d", "usage_per_seat_trend",
                 "support_per_seat_90d", "sub_plan"):
        assert f[name].isna().all(), name
    assert (f[["sub_plan_changes_365d", "sub_mrr"]] == 0).all().all()
    # Without terms only a row taking over from another counts (c1's and c3's second rows).
    assert f["sub_renewals"].to_dict() == {c: int(c in ("c1", "c3")) for c in CUSTOMERS}
    assert f["sub_plan_tenure_days"].notna().sum() == 7  # every customer with a current row
