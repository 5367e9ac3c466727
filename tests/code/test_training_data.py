"""The out-of-time split plan, the per-target snapshot grid and the model matrix."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnguard.features.build import infer_spec
from churnguard.features.definitions import FeatureSpec
from churnguard.features.sources import open_source
from churnguard.model.encode import model_matrix
from churnguard.training.data import (
    build_training_grid,
    category_levels,
    data_fingerprint,
    data_window,
)
from churnguard.training.split import (
    PlanError,
    longest_feasible_window,
    plan_split,
    plan_targets,
)


@pytest.mark.parametrize("label_days", [30, 90, 91, 120, 180])
@pytest.mark.parametrize("as_of", [date(2026, 1, 1), date(2025, 12, 17), date(2025, 3, 1)])
def test_plan_is_purged_and_inside_as_of(label_days: int, as_of: date) -> None:
    first = date(2022, 1, 1)
    plan = plan_split(first, as_of, label_days, max_train_cutoffs=100)
    window = timedelta(days=label_days)
    # every label window ends on or before as-of
    assert all(c + window <= as_of for c in plan.all)
    # purged: train windows end on/before the validation cutoff, validation's on/before test
    assert all(c + window <= plan.valid for c in plan.train)
    assert plan.valid + window <= plan.test
    # the test cutoff is the latest month start that fits; validation the latest before test
    next_month = (plan.test.replace(day=28) + timedelta(days=5)).replace(day=1)
    assert next_month + window > as_of
    assert all(c.day == 1 for c in plan.all)
    assert list(plan.train) == sorted(plan.train)
    assert plan.train[0] >= first + timedelta(days=90)


def test_plan_keeps_the_latest_training_cutoffs() -> None:
    plan = plan_split(date(2020, 1, 1), date(2026, 1, 1), 90, max_train_cutoffs=4)
    assert plan.train == (date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1), date(2025, 4, 1))
    assert (plan.valid, plan.test) == (date(2025, 7, 1), date(2025, 10, 1))


def test_plan_too_short_is_a_clear_error() -> None:
    with pytest.raises(PlanError, match="365-day label window"):
        plan_split(date(2023, 1, 1), date(2026, 1, 1), 365)
    best = longest_feasible_window(date(2023, 1, 1), date(2026, 1, 1))
    assert best is not None and 180 <= best < 365
    plan_split(date(2023, 1, 1), date(2026, 1, 1), best)
    with pytest.raises(PlanError):
        plan_split(date(2023, 1, 1), date(2026, 1, 1), best + 30)


@pytest.fixture()
def training_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the churnguard.training loggers (whatever the CLI did to the parent's
    handlers and propagation earlier in the session)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("churnguard.training")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_short_data_falls_back_with_a_logged_warning_or_an_automatic_horizon(
        training_log: list[logging.LogRecord]) -> None:
    first, as_of = date(1997, 1, 1), date(1998, 1, 1)
    plans = plan_targets(first, as_of, horizon_days=182, clv_horizon_days=182)
    assert not plans.churn.purged and not plans.clv.purged
    assert plans.churn == plan_split(first, as_of, 182, purge=False)
    warnings = [r.getMessage() for r in training_log if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("overlapping label windows" in w for w in warnings)
    assert "182-day churn horizon" in warnings[0] and "182-day CLV horizon" in warnings[1]

    training_log.clear()
    auto = plan_targets(date(2023, 1, 1), date(2026, 1, 1), horizon_days=90,
                        clv_horizon_days=365, clv_horizon_auto=True)
    assert auto.churn.purged and auto.clv.purged and 30 <= auto.clv.label_days < 365
    # The default adapting to the data is said once, as information, not as a warning.
    assert not [r for r in training_log if r.levelno >= logging.WARNING]
    (info,) = [r.getMessage() for r in training_log if "CLV horizon" in r.getMessage()]
    assert f"CLV horizon: {auto.clv.label_days} days" in info and "default 365 days" in info
    with pytest.raises(PlanError):
        plan_targets(first, first + timedelta(days=40), horizon_days=30, clv_horizon_days=30)


def test_grid_labels_only_where_their_window_fits(small_source: object) -> None:
    source = small_source
    first, as_of = data_window(source)  # type: ignore[arg-type]
    spec = infer_spec(source)  # type: ignore[arg-type]
    churn = plan_split(first, as_of, 60, max_train_cutoffs=2)
    clv = plan_split(first, as_of, 150, max_train_cutoffs=2)
    grid = build_training_grid(source, spec, as_of=as_of, churn_cutoffs=churn.all,  # type: ignore[arg-type]
                               horizon_days=60, clv_cutoffs=clv.all, clv_horizon_days=150)
    assert set(grid["as_of"]) == set(churn.all) | set(clv.all)
    for cutoff, rows in grid.groupby("as_of"):
        assert rows["churned"].notna().all() == (cutoff in churn.all)
        assert rows["churned"].isna().all() == (cutoff not in churn.all)
        assert rows["future_spend"].notna().all() == (cutoff in clv.all)
    with pytest.raises(PlanError, match="ends after"):
        build_training_grid(source, spec, as_of=churn.test, churn_cutoffs=churn.all,  # type: ignore[arg-type]
                            horizon_days=60, clv_cutoffs=(), clv_horizon_days=60)


def test_grid_never_reads_rows_on_or_after_as_of(small_demo_dir: Path, tmp_path: Path) -> None:
    """Rewriting every row dated on/after as-of leaves the training grid unchanged."""
    as_of = date(2025, 2, 1)
    changed = tmp_path / "changed"
    shutil.copytree(small_demo_dir, changed)
    for name in ("transactions", "events"):
        frame = pd.read_parquet(changed / f"{name}.parquet")
        late = frame["ts"] >= pd.Timestamp(as_of)
        assert late.any()
        if name == "transactions":
            frame.loc[late, "amount"] = frame.loc[late, "amount"] * 7 + 1
        else:
            frame.loc[late, "event_type"] = "complaint"
        frame.to_parquet(changed / f"{name}.parquet", index=False)

    grids = []
    spec = None
    for directory in (small_demo_dir, changed):
        with open_source(directory) as source:
            spec = spec or infer_spec(source)
            first, _ = data_window(source)
            plan = plan_split(first, as_of, 90, max_train_cutoffs=3)
            grids.append(build_training_grid(
                source, spec, as_of=as_of, churn_cutoffs=plan.all, horizon_days=90,
                clv_cutoffs=plan.all, clv_horizon_days=90))
    a, b = (g.sort_values(["as_of", "customer_id"]).reset_index(drop=True) for g in grids)
    pd.testing.assert_frame_equal(a, b)


def test_model_matrix_fixes_categories_and_rejects_bad_input() -> None:
    spec = FeatureSpec(event_types=("login",), attribute_columns=("segment",),
                       attribute_categories={"segment": ("a", "b")})
    names = spec.feature_names()
    frame = pd.DataFrame({n: [1.0, np.nan, 3.0] for n in names})
    frame["segment"] = ["b", None, "zzz"]
    levels = category_levels(spec)
    X = model_matrix(frame, spec, levels)
    assert list(X.columns) == names
    assert list(X["segment"].cat.categories) == ["a", "b"]
    assert X["segment"].tolist()[0] == "b"
    assert X["segment"].isna().tolist() == [False, True, True]  # unseen level -> missing
    assert X["orders_total"].dtype == np.float64
    with pytest.raises(ValueError, match="missing 1 column"):
        model_matrix(frame.drop(columns=["orders_total"]), spec, levels)
    bad = frame.copy()
    bad["orders_total"] = ["1", "x", "3"]
    with pytest.raises(ValueError, match="orders_total"):
        model_matrix(bad, spec, levels)


def test_data_fingerprint_changes_with_content(small_demo_dir: Path, tmp_path: Path) -> None:
    as_of = date(2025, 1, 1)
    with open_source(small_demo_dir) as source:
        fp1 = data_fingerprint(source, as_of)
        fp1_again = data_fingerprint(source, as_of)
    changed = tmp_path / "changed"
    shutil.copytree(small_demo_dir, changed)
    tx = pd.read_parquet(changed / "transactions.parquet")
    tx.loc[tx.index[0], "amount"] += 0.01
    tx.to_parquet(changed / "transactions.parquet", index=False)
    with open_source(changed) as source:
        fp2 = data_fingerprint(source, as_of)
    assert fp1 == fp1_again
    assert fp1["fingerprint"] != fp2["fingerprint"]
    assert fp1["tables"]["events"] == fp2["tables"]["events"]  # type: ignore[index]
    assert fp1["tables"]["transactions"]["rows"] == fp2["tables"]["transactions"]["rows"]  # type: ignore[index]
