"""The bootstrap of the test metrics (training/bootstrap.py): each weighted metric is the
evaluate.py metric of the resampled rows, the resamples are seeded and paired across models,
and intervals and differences read the way the report and the gate use them."""

from __future__ import annotations

import numpy as np
import pytest

from churnguard.model import evaluate
from churnguard.training import bootstrap as bs


def _data(n: int = 240, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    spend = np.where(rng.random(n) < 0.5, 0.0, np.round(rng.gamma(1.0, 50.0, n)))
    return {
        "y": (rng.random(n) < 0.4).astype(float),
        "p": np.round(rng.random(n), 1),  # ties, which ranking metrics break in expectation
        "spend": spend,
        "pred": np.round(rng.gamma(1.0, 50.0, n), -1) + 0.5,
        "recency": np.where(rng.random(n) < 0.3, 500.0, 20.0),
    }


def _same(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-9 * max(1.0, abs(b))


def test_weighted_metrics_are_the_plain_metrics_of_the_resampled_rows() -> None:
    d = _data()
    weights = next(bs.resample_weights(d["y"].size, 3, seed=5))
    churn = {**bs.CHURN_METRICS, **bs.active_churn_metrics(d["recency"])}
    lo, hi = d["pred"] * 0.5, d["pred"] * 1.5
    nominal = np.full(d["y"].size, 0.8)
    clv = {**bs.CLV_METRICS, **bs.interval_metrics(d["spend"], lo, hi, nominal)}
    for b, w in enumerate(weights):
        idx = np.repeat(np.arange(w.size), w.astype(int))  # each row as often as it was drawn
        want = {**evaluate.churn_metrics(d["y"][idx], d["p"][idx]),
                **evaluate.active_churn_metrics(d["y"][idx], d["p"][idx], d["recency"][idx])}
        for key, fn in churn.items():
            assert _same(float(fn(weights, d["y"], d["p"])[b]), want[key]), key
            assert _same(float(fn(w, d["y"], d["p"])), want[key]), f"{key} (one resample)"
        s, q = d["spend"][idx], d["pred"][idx]
        want = {**evaluate.clv_metrics(s, q),
                **evaluate.interval_metrics(s, lo[idx], hi[idx], 1.0 - nominal[idx], 0.8)}
        want["abs_total_error"] = abs(want["total_error"])
        for key, fn in clv.items():
            assert _same(float(fn(weights, d["spend"], d["pred"])[b]), want[key]), key


def test_an_infinite_deviance_counts_only_on_resamples_that_draw_its_customer() -> None:
    y = np.array([0.0, 5.0, 0.0, 2.0])
    pred = np.array([1.0, 0.0, 1.0, 2.0])  # 0 for a customer who spent 5
    w = np.array([[1.0, 0.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    dev = bs.weighted_poisson_deviance(w, y, pred)
    assert np.isfinite(dev[0]) and dev[1] == np.inf
    assert dev[0] == pytest.approx(evaluate.poisson_deviance(y[[0, 2, 2, 3]], pred[[0, 2, 2, 3]]))


def test_resamples_are_seeded_and_paired_across_models() -> None:
    d = _data()
    preds = {"good": 0.3 * d["y"] + 0.7 * d["p"], "noise": np.full(d["y"].size, 0.4)}
    one = bs.bootstrap(d["y"], preds, bs.CHURN_METRICS, resamples=200, seed=3)
    two = bs.bootstrap(d["y"], preds, bs.CHURN_METRICS, resamples=200, seed=3)
    other = bs.bootstrap(d["y"], preds, bs.CHURN_METRICS, resamples=200, seed=4)
    assert one.interval("good", "roc_auc") == two.interval("good", "roc_auc")
    assert one.interval("good", "roc_auc") != other.interval("good", "roc_auc")
    assert one.draws["good"]["log_loss"].shape == (200,)
    # The blocks of resamples do not change them: the first 50 of 200 are the 50 of 50 (up
    # to the last bits of a matrix product of another shape).
    fifty = bs.bootstrap(d["y"], preds, {"log_loss": bs.weighted_log_loss}, resamples=50, seed=3)
    assert fifty.draws["good"]["log_loss"] == pytest.approx(one.draws["good"]["log_loss"][:50],
                                                            rel=1e-12)
    # Paired: a model against itself differs by exactly 0 on every resample, and the base
    # rate (a property of the customers) is the same for both models on each resample.
    assert one.difference("good", "good", "log_loss") == (0.0, 0.0)
    assert np.array_equal(one.draws["good"]["base_rate"], one.draws["noise"]["base_rate"])
    low, high = one.interval("good", "roc_auc")
    value = evaluate.churn_metrics(d["y"], preds["good"])["roc_auc"]
    assert low < value < high
    # The good model's log loss is lower beyond noise: its difference is below 0 throughout.
    assert one.difference("good", "noise", "log_loss")[1] < 0


def test_paired_difference_is_narrower_than_the_unpaired_intervals_suggest() -> None:
    """Two nearly identical models: each one's own interval is wide (the customers' noise),
    their paired difference is narrow, because that noise is common to both and cancels."""
    rng = np.random.default_rng(2)
    n = 1000
    truth = rng.random(n)
    y = (rng.random(n) < truth).astype(float)
    a = np.clip(truth + rng.normal(0, 0.01, n), 0.01, 0.99)
    b = np.clip(truth + rng.normal(0, 0.01, n), 0.01, 0.99)
    boot = bs.bootstrap(y, {"a": a, "b": b}, {"log_loss": bs.weighted_log_loss}, resamples=300)
    (alo, ahi), (dlo, dhi) = boot.interval("a", "log_loss"), boot.difference("a", "b",
                                                                            "log_loss")
    assert dhi - dlo < (ahi - alo) / 5


def test_percentile_interval_matches_numpy_and_keeps_infinite_draws() -> None:
    r = np.random.default_rng(0).random(1000)
    assert bs.percentile_interval(r) == pytest.approx(tuple(np.percentile(r, [2.5, 97.5])))
    r[:30] = np.inf
    r[30:40] = np.nan  # undefined resamples are left out
    low, high = bs.percentile_interval(r)
    assert np.isfinite(low) and high == np.inf
    assert all(np.isnan(bs.percentile_interval([np.nan, np.nan])))  # never defined


def test_run_metrics_keep_the_keys_and_add_lo_hi_and_paired_differences() -> None:
    from churnguard.training.register import bootstrap_run_metrics

    d = _data()
    preds = {"churnguard": 0.3 * d["y"] + 0.7 * d["p"], "logistic regression": d["p"]}
    table = {m: evaluate.churn_metrics(d["y"], q) for m, q in preds.items()}
    boot = bs.bootstrap(d["y"], preds, bs.CHURN_METRICS, resamples=100)
    m = bootstrap_run_metrics(table, boot, {"churnguard": "test_churn_",
                                            "logistic regression": "test_baseline_logreg_churn_"})
    assert m["test_churn_roc_auc_lo"] <= table["churnguard"]["roc_auc"] <= m[
        "test_churn_roc_auc_hi"]
    assert "test_baseline_logreg_churn_log_loss_hi" in m
    low, high = boot.difference("churnguard", "logistic regression", "log_loss")
    assert (m["test_churn_log_loss_diff_logreg_lo"], m["test_churn_log_loss_diff_logreg_hi"]) == (
        low, high)
    assert "test_churn_base_rate_lo" in m and "test_churn_base_rate_diff_logreg_lo" not in m
    assert not any(k.startswith("test_churn_n_") for k in m)  # n is every resample's size
    assert not set(table["churnguard"]) & set(m)  # the metrics themselves are not touched
