"""The CLV interval: the quantiles of the hurdle's and the contract model's predictive
distributions, how a bundle stores them, and how the one scoring path returns them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from churnguard.model.bundle import ScoringBundle
from churnguard.model.evaluate import interval_coverage
from churnguard.model.predictors import (
    CLV_INTERVAL_LEVEL,
    ContractClvModel,
    SpendQuantiles,
    interval_levels,
)
from churnguard.model.score import score_matrix

#: A buyer's spend ratio (actual / predicted) with its log uniform on [-1, 1]: quantile u of the
#: log ratio is 2u - 1, easy to work out by hand.
UNIFORM = SpendQuantiles(log_ratio=tuple(np.linspace(-1.0, 1.0, 101)), n=1000)


def test_interval_levels_are_equal_tailed_until_the_atom_at_zero_is_a_tail() -> None:
    lo, hi = interval_levels(np.array([0.0, 0.05, 0.0999, 0.1, 0.5, 0.95]))
    assert lo.tolist() == pytest.approx([0.1, 0.1, 0.1, 0.0, 0.0, 0.0])
    assert hi.tolist() == pytest.approx([0.9, 0.9, 0.9, 0.8, 0.8, 0.8])


def test_hurdle_quantiles_by_hand() -> None:
    p_buy = np.array([1.0, 0.95, 0.5, 0.0])
    spend = np.full(4, 100.0)
    low, high = UNIFORM.interval(p_buy, spend)
    # P(buy) = 1: the 10 % and 90 % quantiles of 100 * exp(2u - 1)
    assert low[0] == pytest.approx(100 * np.exp(-0.8))
    assert high[0] == pytest.approx(100 * np.exp(0.8))
    # P(buy) = 0.95: atom 0.05 below the 10 % level -> u = (0.1 - 0.05) / 0.95 and
    # (0.9 - 0.05) / 0.95
    assert low[1] == pytest.approx(100 * np.exp(2 * 0.05 / 0.95 - 1))
    assert high[1] == pytest.approx(100 * np.exp(2 * 0.85 / 0.95 - 1))
    # P(buy) = 0.5: the interval starts at 0 and ends at the 80 % quantile, u = 0.3 / 0.5
    assert low[2] == 0.0
    assert high[2] == pytest.approx(100 * np.exp(2 * 0.6 - 1))
    # a customer who cannot buy (all mass at zero): [0, 0]
    assert (low[3], high[3]) == (0.0, 0.0)


def test_interval_is_ordered_and_monotone_in_both_hurdle_parts() -> None:
    rng = np.random.default_rng(0)
    p_buy = np.sort(rng.random(2000))
    spend = rng.gamma(2.0, 50.0, 2000)
    low, high = UNIFORM.interval(p_buy, spend)
    assert (low >= 0).all() and (low <= high).all()
    # a mass-at-zero customer (P(no purchase) >= 10 %) has low = 0
    assert (low[p_buy <= 0.9] == 0).all() and (low[p_buy > 0.9] > 0).all()
    # for one E[spend | buy], a likelier buyer never gets a lower interval ...
    lo1, hi1 = UNIFORM.interval(p_buy, np.full(p_buy.size, 100.0))
    assert (np.diff(lo1) >= 0).all() and (np.diff(hi1) >= -1e-9).all()
    # ... and both ends scale with E[spend | buy]
    lo2, hi2 = UNIFORM.interval(p_buy, 2 * spend)
    assert lo2 == pytest.approx(2 * low) and hi2 == pytest.approx(2 * high)


def test_the_point_estimate_can_leave_the_interval_by_construction() -> None:
    # clv is the mean, P(buy) x E[spend | buy]; the interval holds 80 % of the probability.
    # An unlikely buyer's mean is above his interval [0, 0] ...
    low, high = UNIFORM.interval(np.array([0.1]), np.array([100.0]))
    assert (low[0], high[0]) == (0.0, 0.0) and high[0] < 0.1 * 100.0
    # ... and a near-certain buyer with a narrow spend distribution has his mean below low
    narrow = SpendQuantiles(log_ratio=tuple(np.linspace(-0.01, 0.01, 101)), n=1000)
    low, _ = narrow.interval(np.array([0.95]), np.array([100.0]))
    assert low[0] > 0.95 * 100.0


def test_intervals_of_a_correct_model_cover_eighty_percent() -> None:
    # Spend drawn from the hurdle model itself: the ratio measured on one sample gives
    # intervals that hold for 80 % of a fresh one (more where P(no purchase) >= 80 %, whose
    # interval [0, 0] holds P(no purchase)).
    rng = np.random.default_rng(1)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p_buy = rng.uniform(0.25, 1.0, n)
        expected = rng.gamma(2.0, 60.0, n)
        bought = rng.random(n) < p_buy
        spend = np.where(bought, expected * rng.lognormal(-0.3, 0.8, n), 0.0)
        return p_buy, expected, spend

    _, e_cal, y_cal = draw(20_000)
    quantiles = SpendQuantiles.measure(y_cal[y_cal > 0], e_cal[y_cal > 0])
    p, e, y = draw(20_000)
    low, high = quantiles.interval(p, e)
    assert interval_coverage(y, low, high) == pytest.approx(CLV_INTERVAL_LEVEL, abs=0.015)


def test_measure_needs_buyers() -> None:
    with pytest.raises(ValueError, match="at least 2 buyers"):
        SpendQuantiles.measure(np.array([5.0, 0.0]), np.array([1.0, 1.0]))


def _contract_columns() -> dict[str, np.ndarray]:
    # One monthly account (fee 100), 3 renewals made, its next renewal in 10 days.
    return {"sub_active": np.array([1.0, 0.0]), "sub_mrr": np.array([100.0, 100.0]),
            "sub_tenure_days": np.array([95.0, 95.0]), "sub_term_days": np.array([30.0, 30.0]),
            "sub_days_to_renewal": np.array([10.0, 10.0]),
            "sub_term_months": np.array([1.0, 1.0])}


def test_contract_interval_counts_the_renewals_paid() -> None:
    model = ContractClvModel(alpha=1.0, beta=3.0, daily_hazard=0.0, horizon_days=100,
                             scale=1.0)
    cols = _contract_columns()
    fee, paying = model.payments(cols)
    # renewals at days 10, 40, 70, 100 of a 100-day horizon: four; P(N >= k) non-increasing
    assert paying.shape == (2, 4)
    assert (np.diff(paying[0]) <= 0).all() and (paying[1] == 0).all()
    X = np.column_stack([cols[c] for c in cols])
    low, high = model.interval(X, np.zeros(2), np.zeros(2), names=list(cols))
    lo_tau, hi_tau = interval_levels(1.0 - paying[:, 0])
    # the tau-quantile of N is the number of renewals paid with probability above 1 - tau
    assert low[0] == fee[0] * (paying[0] > 1.0 - lo_tau[0]).sum()
    assert high[0] == fee[0] * (paying[0] > 1.0 - hi_tau[0]).sum()
    assert 0 <= low[0] <= high[0] <= 4 * fee[0]
    # an account without an active subscription pays nothing, for certain
    assert (low[1], high[1]) == (0.0, 0.0)
    # the components are the same terms: P(buy) = P(paying at the first renewal)
    p_buy, spend = model.components_from(cols)
    assert p_buy[0] == pytest.approx(paying[0, 0])
    assert p_buy[0] * spend[0] == pytest.approx(fee[0] * paying[0].sum())


# --- the bundle and the scoring path ----------------------------------------------------------


def test_score_matrix_returns_the_interval(fake_bundle: Any, fake_features: Any) -> None:
    X = fake_bundle.encode(fake_features)
    full = score_matrix(fake_bundle, X, drivers=False)
    assert full.clv_low is not None and full.clv_high is not None
    assert (full.clv_low >= 0).all() and (full.clv_low <= full.clv_high).all()
    assert (full.clv_low[full.p_buy <= 0.9] == 0).all()
    # the fast path (inplace_predict) was checked against the models' own methods, interval
    # included
    assert fake_bundle.fast_path is True
    row = full.rows()[0]
    assert row["clv_low"] == float(full.clv_low[0])
    assert row["clv_high"] == float(full.clv_high[0])
    frame = full.to_frame()
    assert {"clv_low", "clv_high"} <= set(frame.columns)


def test_bundle_keeps_the_spend_distribution(fake_bundle_dir: Path, fake_bundle: Any) -> None:
    loaded = ScoringBundle.load(fake_bundle_dir)
    assert loaded.clv.quantiles == fake_bundle.clv.quantiles


def test_a_bundle_without_intervals_still_loads_and_scores(
        fake_bundle_dir: Path, fake_features: Any, tmp_path: Path) -> None:
    old = shutil.copytree(fake_bundle_dir, tmp_path / "old")
    meta = json.loads((old / "bundle.json").read_text())
    del meta["clv"]["quantiles"]  # as bundles were saved before CLV intervals
    (old / "bundle.json").write_text(json.dumps(meta))
    bundle = ScoringBundle.load(old)
    full = score_matrix(bundle, bundle.encode(fake_features.head(20)), drivers=False)
    assert full.clv_low is None and full.clv_high is None
    assert full.rows()[0]["clv_low"] is None and full.rows()[0]["clv_high"] is None
    assert full.to_frame()["clv_low"].isna().all()
    assert (full.clv >= 0).all()
