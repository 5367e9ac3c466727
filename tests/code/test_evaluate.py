"""Evaluation metrics against values worked out by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import mean_poisson_deviance

from churnguard.model.evaluate import (
    active_at_cutoff,
    active_churn_metrics,
    capture_at,
    churn_metrics,
    clv_metrics,
    decile_calibration,
    decile_calibration_error,
    decile_metrics,
    expected_calibration_error,
    gains_table,
    interval_coverage,
    interval_metrics,
    lift_at,
    normalized_gini,
    poisson_deviance,
    reliability_table,
)

# 10 customers sorted by descending score; churners at ranks 1, 3 and 6 -> base rate 3/10.
P10 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
Y10 = np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 0])


# --- churn: discrimination -------------------------------------------------------------------


def test_roc_auc_counts_ties_as_half() -> None:
    # pairs (churner score, active score): (0.4, 0.1) 1, (0.4, 0.4) 1/2, (0.8, 0.1) 1,
    # (0.8, 0.4) 1 -> 3.5 / 4 = 0.875
    m = churn_metrics([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8])
    assert m["roc_auc"] == pytest.approx(0.875)


def test_pr_auc_churn_and_active_class() -> None:
    y = [0, 0, 0, 1, 1]
    p = [0.1, 0.5, 0.7, 0.6, 0.9]
    m = churn_metrics(y, p)
    # churn class, by descending p: 0.9 (churner) P=1 R=1/2; 0.7 (active); 0.6 (churner)
    # P=2/3 R=1. AP = sum (R_k - R_{k-1}) P_k = 1/2 * 1 + 1/2 * 2/3 = 5/6
    assert m["pr_auc"] == pytest.approx(5 / 6)
    # active class, by descending 1-p = [0.9, 0.5, 0.3, 0.4, 0.1]: 0.9 (active) P=1 R=1/3;
    # 0.5 (active) P=1 R=2/3; 0.4 (churner); 0.3 (active) P=3/4 R=1.
    # AP = 1/3 * 1 + 1/3 * 1 + 1/3 * 3/4 = 11/12
    assert m["pr_auc_active"] == pytest.approx(11 / 12)


# --- churn: probability quality --------------------------------------------------------------


def test_log_loss_and_brier_by_hand() -> None:
    m = churn_metrics([1, 0], [0.8, 0.4])
    # log loss = -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.22314 + 0.51083) / 2
    assert m["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert m["log_loss"] == pytest.approx(0.366985, abs=1e-6)
    # Brier = ((0.8 - 1)^2 + (0.4 - 0)^2) / 2 = (0.04 + 0.16) / 2
    assert m["brier"] == pytest.approx(0.1)
    assert m["base_rate"] == 0.5
    assert m["n"] == 2


def test_log_loss_of_a_confident_miss_is_large_but_finite() -> None:
    m = churn_metrics([1, 0], [0.0, 0.0])
    # -ln(eps) / 2 for the churner given p = 0, nothing for the active customer (p clipped to eps)
    assert m["log_loss"] == pytest.approx(-math.log(np.finfo(float).eps) / 2)


def test_ece_on_four_points() -> None:
    y = [0, 1, 1, 1]
    p = [0.12, 0.18, 0.75, 0.95]
    # bin (0.1, 0.2]: mean p 0.15, observed 1/2, gap 0.35, weight 2/4 -> 0.175
    # bin (0.7, 0.8]: mean p 0.75, observed 1,   gap 0.25, weight 1/4 -> 0.0625
    # bin (0.9, 1.0]: mean p 0.95, observed 1,   gap 0.05, weight 1/4 -> 0.0125
    # ECE = 0.175 + 0.0625 + 0.0125 = 0.25
    assert expected_calibration_error(y, p) == pytest.approx(0.25)
    assert churn_metrics(y, p)["ece"] == pytest.approx(0.25)
    # with 2 bins [0, 0.5] and (0.5, 1]: gaps |0.15 - 0.5| * 2/4 + |0.85 - 1| * 2/4 = 0.25
    assert churn_metrics(y, p, n_bins=2)["ece"] == pytest.approx(0.175 + 0.075)


def test_reliability_table_bins_are_right_closed_and_complete() -> None:
    t = reliability_table([0, 1, 1, 0], [0.0, 0.5, 1.0, 0.55], n_bins=10)
    columns = ["bin", "lower", "upper", "mean_predicted", "observed_rate", "count"]
    assert list(t.columns) == columns
    assert len(t) == 10  # empty bins are kept
    counts = dict(zip(t["bin"], t["count"], strict=True))
    # 0.0 -> bin 0 [0, 0.1]; 0.5 -> bin 4 (0.4, 0.5]; 0.55 -> bin 5; 1.0 -> bin 9 (0.9, 1]
    assert counts == {0: 1, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 0, 7: 0, 8: 0, 9: 1}
    assert t.loc[4, "observed_rate"] == 1.0
    assert t.loc[5, "observed_rate"] == 0.0
    assert math.isnan(t.loc[1, "mean_predicted"])


def test_perfectly_calibrated_bins_have_zero_ece() -> None:
    # every bin's observed rate equals its mean prediction: 0.25 with 1 of 4, 0.75 with 3 of 4
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    p = [0.25] * 4 + [0.75] * 4
    assert expected_calibration_error(y, p) == pytest.approx(0.0)


# --- churn: targeting ------------------------------------------------------------------------


def test_lift_and_capture_on_ten_points() -> None:
    m = churn_metrics(Y10, P10)
    # top 10 % = 1 row (p = 0.9, a churner): rate 1 / base rate 0.3 = 10/3; captured 1 of 3
    assert m["lift_at_10"] == pytest.approx(10 / 3)
    assert m["capture_at_10"] == pytest.approx(1 / 3)
    # top 30 % = 3 rows, 2 churners: capture 2/3, lift (2/3) / 0.3 = 20/9
    assert capture_at(Y10, P10, 0.3) == pytest.approx(2 / 3)
    assert lift_at(Y10, P10, 0.3) == pytest.approx(20 / 9)


def test_lift_with_a_tie_at_the_cutoff_is_the_random_tie_break_expectation() -> None:
    p = P10.copy()
    p[1] = 0.9  # the churner and the active customer at the top now tie
    # top 1 row is either of the two tied rows with probability 1/2 -> 0.5 churners expected:
    # capture 0.5 / 3 = 1/6, lift (0.5 / 1) / 0.3 = 5/3
    assert capture_at(Y10, p, 0.1) == pytest.approx(1 / 6)
    assert churn_metrics(Y10, p)["lift_at_10"] == pytest.approx(5 / 3)
    # and the answer does not depend on which of the tied rows comes first in the input
    assert capture_at(Y10[::-1], p[::-1], 0.1) == pytest.approx(1 / 6)


def test_capture_with_a_fractional_cutoff() -> None:
    # 15 rows: the top 10 % is 1.5 rows -> row 1 (churner) + half of row 2 (active) = 1 churner
    # of 2 in total -> capture 1/2; lift (1 / 1.5) / (2 / 15) = 5
    y = np.zeros(15)
    y[[0, 5]] = 1
    p = np.linspace(1.0, 0.0, 15)
    assert capture_at(y, p) == pytest.approx(0.5)
    assert lift_at(y, p) == pytest.approx(5.0)


def test_gains_table_by_hand() -> None:
    g = gains_table(Y10, P10, n_bins=5)
    # 5 bins of 2 rows by descending p: churners [1, 1, 1, 0, 0]
    assert g["positives"].tolist() == pytest.approx([1, 1, 1, 0, 0])
    assert g["cum_capture"].tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    # bin rate 1/2 against base rate 3/10 -> lift 5/3; cum lift = cum capture / population share
    assert g["lift"].tolist() == pytest.approx([5 / 3, 5 / 3, 5 / 3, 0, 0])
    assert g["cum_lift"].tolist() == pytest.approx([5 / 3, 5 / 3, 5 / 3, 1.25, 1.0])
    assert g["rows"].tolist() == [2.0] * 5
    # first decile of the default table = lift_at_10
    assert gains_table(Y10, P10).loc[0, "lift"] == pytest.approx(10 / 3)


def test_constant_score_is_random_targeting() -> None:
    g = gains_table(Y10, np.full(10, 0.3))
    assert g["lift"].tolist() == pytest.approx([1.0] * 10)


# --- CLV ---------------------------------------------------------------------------------------

SPEND = np.array([10.0, 0, 0, 5, 0, 0, 0, 0, 0, 5])
PRED = np.array([8.0, 1, 1, 9, 1, 1, 1, 1, 1, 2])


def test_clv_metrics_by_hand() -> None:
    m = clv_metrics(SPEND, PRED)
    # |errors| = [2, 1, 1, 4, 1, 1, 1, 1, 1, 3]: sum 16 -> MAE 1.6; squares sum 36 -> RMSE
    # sqrt(3.6)
    assert m["mae"] == pytest.approx(1.6)
    assert m["rmse"] == pytest.approx(math.sqrt(3.6))
    # totals: predicted 26, actual 20 -> total error (26 - 20) / 20 = 0.3
    assert (m["total_pred"], m["total_actual"], m["n"]) == (26.0, 20.0, 10.0)
    assert m["total_error"] == pytest.approx(0.3)
    # top 10 % by prediction = 1 customer (pred 9) who spent 5 of 20 -> 0.25
    assert m["top10_spend_share"] == pytest.approx(0.25)
    assert m["spearman"] == pytest.approx(spearmanr(SPEND, PRED).statistic)


def test_normalized_gini_on_four_points() -> None:
    a = [0, 1, 2, 3]  # total 6
    # by descending pred: a = 1, 2, 3, 0 -> cumulative shares 1/6, 3/6, 6/6, 6/6; minus i/4:
    # -1/12, 0, 1/4, 0 -> mean 1/24.  Perfect order a = 3, 2, 1, 0 -> 3/6, 5/6, 1, 1;
    # minus i/4: 1/4, 1/3, 1/4, 0 -> mean 5/24.  Normalized = (1/24) / (5/24) = 0.2
    assert normalized_gini(a, [0.1, 0.4, 0.3, 0.2]) == pytest.approx(0.2)
    assert normalized_gini(a, a) == pytest.approx(1.0)
    assert normalized_gini(a, [-x for x in a]) == pytest.approx(-1.0)


def test_normalized_gini_with_tied_predictions() -> None:
    # pred [1, 1, 0, 0]: tie groups {a=0, a=1} (sum 1) then {a=2, a=3} (sum 5). Expected
    # cumulative shares: 0.5/6, 1/6, 3.5/6, 1; minus i/4: -1/6, -1/3, -1/6, 0 -> mean -1/6.
    # Normalized = (-1/6) / (5/24) = -0.8
    assert normalized_gini([0, 1, 2, 3], [1, 1, 0, 0]) == pytest.approx(-0.8)
    # a constant prediction ranks no one above anyone: Gini 0, Spearman undefined (NaN)
    assert normalized_gini([0, 1, 2, 3], [5, 5, 5, 5]) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(clv_metrics([0, 1, 2, 3], [5, 5, 5, 5])["spearman"])


def _kaggle_gini(actual: np.ndarray, pred: np.ndarray) -> float:
    # The Porto Seguro reference implementation (ties broken by row order).
    a = np.c_[actual, pred, np.arange(len(actual))].astype(float)
    a = a[np.lexsort((a[:, 2], -a[:, 1]))]
    gini_sum = a[:, 0].cumsum().sum() / a[:, 0].sum() - (len(actual) + 1) / 2.0
    return gini_sum / len(actual)


def test_normalized_gini_matches_kaggle_reference_without_ties() -> None:
    rng = np.random.default_rng(3)
    actual = rng.gamma(0.7, 50.0, size=200)
    pred = actual * rng.lognormal(0.0, 1.0, size=200)
    expected = _kaggle_gini(actual, pred) / _kaggle_gini(actual, actual)
    assert normalized_gini(actual, pred) == pytest.approx(expected)


def test_decile_calibration_by_hand() -> None:
    t = decile_calibration(SPEND, PRED, n_bins=5)
    # ascending pred: seven 1s (all spend 0), then 2 (spend 5), 8 (spend 10), 9 (spend 5).
    # bins of 2 rows: [1,1]/[0,0], [1,1]/[0,0], [1,1]/[0,0], [1,2]/[0,5], [8,9]/[10,5]
    assert t["mean_predicted"].tolist() == pytest.approx([1, 1, 1, 1.5, 8.5])
    assert t["mean_actual"].tolist() == pytest.approx([0, 0, 0, 2.5, 7.5])
    assert t["count"].tolist() == [2.0] * 5
    # all predictions tied: each bin gets the overall mean actual (3) in expectation
    t = decile_calibration([0, 3, 6], [1, 1, 1], n_bins=3)
    assert t["mean_actual"].tolist() == pytest.approx([3, 3, 3])


def test_decile_calibration_error_and_metrics_by_hand() -> None:
    t = decile_calibration(SPEND, PRED, n_bins=5)
    # gaps per bin of 2 rows (table above): 1, 1, 1, 1, 1 -> weighted mean 1; mean spend 2
    assert decile_calibration_error(SPEND, PRED, n_bins=5) == pytest.approx(0.5)
    m = decile_metrics(t)
    assert m["decile_05_mean_predicted"] == pytest.approx(8.5)
    assert m["decile_04_mean_actual"] == pytest.approx(2.5)
    assert len(m) == 10
    # clv_metrics carries the ten-bin figure; exact predictions have none
    assert clv_metrics(SPEND, PRED)["decile_calibration_error"] == pytest.approx(
        decile_calibration_error(SPEND, PRED))
    assert decile_calibration_error(SPEND, SPEND) == pytest.approx(0.0)


def test_poisson_deviance_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    spend = np.where(rng.random(300) < 0.4, rng.gamma(2.0, 40.0, 300), 0.0)
    pred = rng.gamma(1.5, 30.0, 300)
    assert poisson_deviance(spend, pred) == pytest.approx(mean_poisson_deviance(spend, pred))
    assert clv_metrics(spend, pred)["poisson_deviance"] == pytest.approx(
        mean_poisson_deviance(spend, pred))


def test_poisson_deviance_of_zero_predictions() -> None:
    # A zero prediction for a non-buyer costs nothing: 2 · (0 - (0 - 0)) = 0; by hand for
    # y = 2, mu = 1: 2 · (2 log 2 - 1) -> mean over the two rows is 2 log 2 - 1.
    assert poisson_deviance([0.0, 2.0], [0.0, 1.0]) == pytest.approx(2 * math.log(2) - 1)
    # ... and for a buyer it is infinite (sklearn refuses y_pred <= 0 instead)
    assert poisson_deviance([1.0, 2.0], [0.0, 1.0]) == math.inf
    with pytest.raises(ValueError, match="y_pred must be non-negative"):
        poisson_deviance([1.0, 2.0], [-1.0, 1.0])
    # clv_metrics leaves it out for predictions below zero (a regressor's raw output)
    assert "poisson_deviance" not in clv_metrics([1.0, 2.0], [-1.0, 1.0])


def test_interval_coverage_on_a_tiny_frame() -> None:
    spend = np.array([0.0, 0.0, 12.0, 30.0, 5.0])
    low = np.array([0.0, 1.0, 10.0, 0.0, 0.0])
    high = np.array([0.0, 9.0, 12.0, 20.0, 5.0])
    # in: 0 in [0, 0], 12 in [10, 12] (closed), 5 in [0, 5]; out: 0 < 1, 30 > 20
    assert interval_coverage(spend, low, high) == pytest.approx(3 / 5)
    m = interval_metrics(spend, low, high, p_zero=[0.95, 0.5, 0.0, 0.3, 0.2], level=0.8)
    assert m["interval_coverage"] == pytest.approx(0.6)
    assert m["interval_coverage_buyers"] == pytest.approx(2 / 3)  # 12 and 5 in, 30 out
    assert m["interval_coverage_nonbuyers"] == pytest.approx(1 / 2)
    # the model's own expectation: 0.95 for the [0, 0] customer, 0.8 for the others
    assert m["interval_nominal"] == pytest.approx((0.95 + 4 * 0.8) / 5)
    assert m["interval_width"] == pytest.approx((0 + 8 + 2 + 20 + 5) / 5)
    with pytest.raises(ValueError, match="1 of 2 intervals have low > high"):
        interval_coverage([1.0, 2.0], [0.0, 3.0], [1.0, 2.5])


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1, 1], [0.1, 0.2], "y_true has 3 values but p has 2"),
        ([], [], "y_true is empty"),
        ([0, 1, 1], [0.1, np.nan, np.inf], "p has 2 non-finite"),
        ([0, 2, 1, 0.5], [0.1, 0.2, 0.3, 0.4], "2 of 4 values are not"),
        ([0, 1, 1], [0.1, 1.2, -0.1], "2 of 3 values are outside"),
        ([[0, 1]], [[0.1, 0.2]], "one-dimensional"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "0 active"),
        (["a", "b"], [0.1, 0.2], "numeric"),
    ],
)
def test_churn_metrics_rejects_bad_input(y: object, p: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        churn_metrics(y, p)  # type: ignore[arg-type]


def test_bad_bins_and_fractions_raise() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        churn_metrics(Y10, P10, n_bins=0)
    with pytest.raises(ValueError, match="n_bins"):
        gains_table(Y10, P10, n_bins=-1)
    with pytest.raises(ValueError, match="fraction"):
        lift_at(Y10, P10, 0.0)
    with pytest.raises(ValueError, match="0 of 10 rows"):
        capture_at(np.zeros(10), P10)


def test_clv_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 of 3 values are < 0"):
        clv_metrics([-1.0, -2.0, 3.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="sums to 0"):
        clv_metrics([0.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="y_pred has 1 non-finite"):
        clv_metrics([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(ValueError, match="all 3 actual values are equal"):
        normalized_gini([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="y_true has 2 values but y_pred has 1"):
        decile_calibration([1.0, 2.0], [1.0])


# --- churn among customers active at the cutoff ----------------------------------------------


def test_active_at_cutoff_means_a_purchase_in_the_last_365_days() -> None:
    recency = [1.0, 365.0, 366.0, math.nan, 30.0]
    assert active_at_cutoff(recency).tolist() == [True, True, False, False, True]
    assert active_at_cutoff(recency, days=30).tolist() == [True, False, False, False, True]


def test_roc_auc_among_active_customers_by_hand() -> None:
    # Lapsed customers (recency 400 / never) are churners ranked first: they make the whole
    # population's AUC look better than the ranking among the active ones.
    y = [1, 1, 1, 0, 1, 0, 0]
    p = [0.99, 0.98, 0.6, 0.7, 0.3, 0.4, 0.1]
    recency = [400.0, math.nan, 10.0, 20.0, 30.0, 40.0, 50.0]
    m = active_churn_metrics(y, p, recency)
    # Active: churners {0.6, 0.3} vs actives {0.7, 0.4, 0.1}: pairs won 0.6>0.4, 0.6>0.1,
    # 0.3>0.1 -> 3 of 6.
    assert m["roc_auc_active_365d"] == pytest.approx(0.5)
    assert churn_metrics(y, p)["roc_auc"] == pytest.approx(9 / 12)
    assert m["active_share_365d"] == pytest.approx(5 / 7)
    assert m["base_rate_active_365d"] == pytest.approx(2 / 5)


def test_roc_auc_active_is_nan_with_one_class_and_rejects_bad_input() -> None:
    m = active_churn_metrics([1, 0, 1], [0.9, 0.1, 0.8], [400.0, 500.0, 10.0])
    assert math.isnan(m["roc_auc_active_365d"]) and m["base_rate_active_365d"] == 1.0
    none = active_churn_metrics([1, 0], [0.9, 0.1], [math.nan, math.nan])
    assert none["active_share_365d"] == 0.0 and math.isnan(none["base_rate_active_365d"])
    with pytest.raises(ValueError, match="days_since_last_purchase has 2"):
        active_churn_metrics([1, 0, 1], [0.9, 0.1, 0.8], [1.0, 2.0])


@pytest.mark.parametrize("ties", [False, True])
def test_ranking_areas_equal_sklearns(ties: bool) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from churnguard.model.evaluate import ranking_areas

    rng = np.random.default_rng(11)
    for n in (2, 7, 500, 20_000):
        s = rng.random(n)
        if ties:
            s = np.round(s * 5) / 5  # six distinct scores: long runs of ties
        y = (rng.random(n) < s * 0.8 + 0.1).astype(float)
        y[0], y[-1] = 0.0, 1.0
        auc, ap = ranking_areas(y, s)
        assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert ap == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert all(np.isnan(v) for v in ranking_areas(np.ones(4), np.arange(4.0)))
    assert all(np.isnan(v) for v in ranking_areas(np.zeros(0), np.zeros(0)))
