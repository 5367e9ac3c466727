"""What ``monitor.html`` and the monitoring run are made of: the reliability bins agree with
the calibration error, the current shares are the PSI's, and the page stands alone (plots
inline, names escaped, nothing fetched) on a report with and without realized runs."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from churnguard.model.evaluate import expected_calibration_error
from churnguard.model.profile import (
    PSI_FLOOR,
    categorical_entry,
    current_shares,
    numeric_entry,
    population_stability_index,
)
from churnguard.serving.monitor import distribution, reliability
from churnguard.serving.monitor_report import (
    html_page,
    latest_realized,
    monitoring_metrics,
    monitoring_tags,
    write_html,
)

NASTY = '<script>alert("x")</script>&$a_b$'


def test_reliability_bins_are_the_calibration_error() -> None:
    rng = np.random.default_rng(4)
    # Values on the bin edges too, and nothing in some bins.
    p = np.r_[rng.beta(1, 12, 700), [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]]
    y = (rng.random(p.size) < p).astype(float)
    bins = reliability(y, p)
    assert sum(b["n"] for b in bins) == p.size and all(b["n"] > 0 for b in bins)
    assert len(bins) < 10  # the beta leaves top bins empty: only non-empty ones are listed
    ece = sum(b["n"] / p.size * abs(b["observed_rate"] - b["mean_predicted"]) for b in bins)
    assert ece == pytest.approx(expected_calibration_error(y, p), abs=1e-12)
    for b in bins:
        assert b["bin_high"] - b["bin_low"] == pytest.approx(0.1)
        assert b["bin_low"] - 1e-12 <= b["mean_predicted"] <= b["bin_high"] + 1e-12
        assert 0.0 <= b["observed_rate"] <= 1.0
    # By hand: two bins, half the rows each.
    hand = reliability(np.array([0.0, 1.0, 1.0, 1.0]), np.array([0.05, 0.05, 0.95, 0.95]))
    assert hand == [
        {"bin_low": 0.0, "bin_high": 0.1, "n": 2, "mean_predicted": 0.05, "observed_rate": 0.5},
        {"bin_low": 0.9, "bin_high": 1.0, "n": 2, "mean_predicted": 0.95, "observed_rate": 1.0}]
    assert reliability(np.array([]), np.array([])) == []


def _psi_from(ref: list[float], cur: list[float]) -> float:
    p = np.maximum(np.asarray(ref), PSI_FLOOR)
    q = np.maximum(np.asarray(cur), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def test_current_shares_sum_to_one_and_give_the_psi() -> None:
    rng = np.random.default_rng(5)
    entry = numeric_entry(rng.gamma(2.0, 50.0, 2000))
    current = np.r_[rng.gamma(2.5, 60.0, 1500), [np.nan] * 40]  # nulls are not in the shares
    d = distribution(entry, current)
    assert d["edges"] == entry["edges"] and d["reference_shares"] == entry["shares"]
    assert len(d["current_shares"]) == len(d["edges"]) + 1
    assert sum(d["current_shares"]) == pytest.approx(1.0)
    assert sum(d["reference_shares"]) == pytest.approx(1.0)
    assert _psi_from(d["reference_shares"], d["current_shares"]) == pytest.approx(
        population_stability_index(entry, current), abs=1e-12)
    # Values on an edge fall in the bin the edge closes, as in the profile.
    assert current_shares(entry, np.array(entry["edges"][:1]))[0] == 1.0
    cat = categorical_entry(["a", "b", "b", None], ["a", "b"])
    shares = current_shares(cat, ["b", "z", "z", "a"])
    assert shares.sum() == pytest.approx(1.0)
    assert _psi_from(list(cat["shares"].values()), shares.tolist()) == pytest.approx(
        population_stability_index(cat, ["b", "z", "z", "a"]), abs=1e-12)


def _report(*, realized: bool = True) -> dict[str, Any]:
    rng = np.random.default_rng(6)
    p_ref, p_cur = rng.beta(1, 4, 3000), rng.beta(1.3, 4, 2500)
    clv_ref, clv_cur = rng.gamma(1.5, 300.0, 3000), rng.gamma(1.5, 280.0, 2500)
    entry, clv_entry = numeric_entry(p_ref), numeric_entry(clv_ref)
    runs = []
    if realized:
        for k, day in enumerate(("2025-01-01", "2025-02-01", "2025-03-01")):
            y = (rng.random(800) < p_cur[:800]).astype(float)
            runs.append({"scored_as_of": day, "model_version": "3" if k < 2 else "4",
                         "n": 800, "n_logged": 810, "churn_rate": float(y.mean()),
                         "roc_auc": 0.71 + 0.01 * k, "pr_auc": 0.4, "log_loss": 0.45,
                         "ece": expected_calibration_error(y, p_cur[:800]),
                         "clv_total_error": None if k else -0.05,
                         "clv_gini": None if k else 0.6,
                         "estimated": {"churn_rate": 0.2, "roc_auc": 0.72,
                                       "roc_auc_band": [0.7, 0.74], "log_loss": 0.45},
                         "reliability": reliability(y, p_cur[:800]),
                         "by_value_tier": [{"group": f"<b>{NASTY}", "n": 300,
                                            "churn_rate": 0.3, "roc_auc": 0.7,
                                            "log_loss": 0.5, "ece": 0.02,
                                            "clv_total_error": None}],
                         "by_lifecycle_stage": [],
                         "campaigns": [{"action_id": "care_email", "n_treated": 80,
                                        "n_holdout": 20, "churn_rate_treated": 0.25,
                                        "churn_rate_holdout": 0.35,
                                        "churn_reduction": 0.10}]})
    return {
        "verdict": "warn", "reasons": [f"warn: {NASTY} PSI 0.140"], "as_of": "2025-06-01",
        "model_version": "4", "reference_snapshot": "2024-12-01", "customers": 2500,
        "feeds": [
            {"feed": "transactions", "window_days": 14, "recent_rows": 900,
             "expected_recent_rows": 880.0, "last_seen": "2025-05-31", "status": "ok"},
            {"feed": f"events.{NASTY}", "window_days": 14, "recent_rows": 0,
             "expected_recent_rows": 120.0, "last_seen": "2025-04-02", "status": "broken"}],
        "features": [
            {"name": NASTY, "psi": 0.14, "null_rate": 0.0, "reference_null_rate": 0.0,
             "status": "warn"},
            {"name": "recency_days", "psi": 0.31, "null_rate": 0.2, "reference_null_rate": 0.0,
             "status": "alert"},
            {"name": "tenure_days", "psi": 0.01, "null_rate": 0.0, "reference_null_rate": 0.0,
             "status": "ok"}],
        "not_compared": ["season_sin"],
        "score": {"psi": population_stability_index(entry, p_cur), **distribution(entry, p_cur)},
        "clv": {"psi": population_stability_index(clv_entry, clv_cur),
                **distribution(clv_entry, clv_cur)},
        "test_roc_auc": 0.74,
        "estimated": {"churn_rate": float(p_cur.mean()), "roc_auc": 0.72,
                      "roc_auc_band": [0.70, 0.74], "log_loss": 0.44, "n": 2500},
        "realized": runs,
        "thresholds": {"psi_warn": 0.1, "psi_alert": 0.25, "null_rate_change_warn": 0.05,
                       "auc_drop_alert": 0.05, "ece_alert": 0.05},
    }


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', page)


def test_the_page_stands_alone_with_escaped_names(tmp_path: Path) -> None:
    report = _report()
    path = write_html(report, tmp_path / "out")
    page = path.read_text(encoding="utf-8")
    assert path.name == "monitor.html" and [p.name for p in path.parent.iterdir()] == [
        "monitor.html"]  # no temporary left beside it
    images = _images(page)
    # drift bars, score/CLV distributions, AUC over time, reliability
    assert len(images) == 4
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(link|script|iframe)\b", page)
    assert "banner-warn" in page and "season_sin" in page
    assert '<td class="status-alert">broken</td>' in page  # the feed table
    for needle in ("recency_days", "2025-03-01", "CLV total error", "psi_alert",
                   "per value tier", "care_email", "+10.0%"):
        assert needle in page
    assert "&lt;b&gt;" in page  # group names are escaped too


def test_the_page_without_realized_runs_or_numbers() -> None:
    report = _report(realized=False)
    report["estimated"].update(roc_auc=None, roc_auc_band=None)
    report["features"][2]["psi"] = math.nan
    report["test_roc_auc"] = None
    page = html_page(report)
    assert len(_images(page)) == 2  # drift bars and distributions: no AUC, no reliability
    assert "No logged batch run has a closed churn label window" in page
    # An older report (no bins, no reliability) still renders.
    for key in ("score", "clv"):
        report[key] = {"psi": report[key]["psi"]}
    report["features"] = []
    assert len(_images(html_page(report))) == 0


def test_run_metrics_and_tags() -> None:
    report = _report()
    report["features"][2]["psi"] = math.nan
    metrics = monitoring_metrics(report)
    assert metrics["max_feature_psi"] == 0.31 and metrics["verdict_level"] == 1
    assert metrics["score_psi"] == report["score"]["psi"]
    assert metrics["estimated_roc_auc"] == 0.72 and metrics["estimated_roc_auc_p05"] == 0.70
    assert metrics["features_alert"] == 1 and metrics["features_warn"] == 1
    assert metrics["feeds_broken"] == 1 and metrics["feeds_thin"] == 0
    last = report["realized"][-1]
    assert latest_realized(report) is last
    assert metrics["realized_roc_auc"] == last["roc_auc"]
    assert metrics["realized_ece"] == last["ece"]
    assert "realized_clv_total_error" not in metrics  # None is not a metric
    assert "realized_clv_gini" not in metrics
    assert all(math.isfinite(v) for v in metrics.values())
    tags = monitoring_tags(report, "churnguard")
    assert tags["churnguard.run_kind"] == "monitoring"
    assert tags["churnguard.model_version"] == "4" and tags["churnguard.verdict"] == "warn"
    assert tags["churnguard.realized_scored_as_of"] == "2025-03-01"
    # Two versions scored the same day: the monitored version's entry.
    other = dict(last, model_version="5", roc_auc=0.5)
    report["realized"].append(other)
    assert latest_realized(report) is last
    report["model_version"] = "6"
    assert latest_realized(report) is other
    assert "realized_roc_auc" not in monitoring_metrics(_report(realized=False))
