"""Tracking location, promotion by hand, and the versions listing on an embedded store."""

from __future__ import annotations

from pathlib import Path

import pytest

from churnguard.model.registry import Tracking
from churnguard.training.registry import champion_version, list_versions, promote


def test_tracking_resolves_embedded_store_or_given_uri(tmp_path: Path) -> None:
    embedded = Tracking.resolve(tmp_path / "data")
    assert embedded.uri == f"sqlite:///{(tmp_path / 'data').resolve()}/mlflow.db"
    assert embedded.artifact_root == (tmp_path / "data" / "mlartifacts").resolve().as_uri()
    server = Tracking.resolve(tmp_path / "data", "http://mlflow:5000")
    assert server.uri == "http://mlflow:5000" and server.artifact_root is None


def test_promote_respects_the_gate_unless_forced(tmp_path: Path) -> None:
    tracking = Tracking.resolve(tmp_path)
    client = tracking.client()
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=str(tmp_path))
    client.set_model_version_tag("m", "1", "gate_decision", "champion")
    client.set_model_version_tag("m", "2", "gate_decision", "challenger")
    client.set_model_version_tag("m", "2", "gate_reason", "worse on CLV MAE")
    client.set_registered_model_alias("m", "challenger", "2")

    assert champion_version(client, "m") is None
    assert promote(client, "m", "1").promote
    assert champion_version(client, "m") == "1"
    refused = promote(client, "m", "2")
    assert not refused.promote and "worse on CLV MAE" in refused.reason
    assert champion_version(client, "m") == "1"
    assert promote(client, "m", "2", force=True).promote
    assert champion_version(client, "m") == "2"
    with pytest.raises(ValueError, match="no version 9"):
        promote(client, "m", "9")

    rows = list_versions(client, "m")
    assert [r["version"] for r in rows] == ["2", "1"]
    assert rows[0]["aliases"] == ["challenger", "champion"] and rows[1]["aliases"] == []
    assert rows[0]["gate_reason"] == "worse on CLV MAE"
    assert list_versions(client, "unknown-model") == []


def test_class_minimums_name_the_counts_and_the_settings() -> None:
    from churnguard.training.registry import class_count_problem

    y = [1] * 12 + [0] * 11
    msg = class_count_problem(y, positive="churners", negative="non-churners", snapshot="churn")
    assert msg is not None and msg.startswith("12 churners and 11 non-churners among 23")
    assert "CHURNGUARD_GATE_MIN_POSITIVES" in msg
    assert class_count_problem([1] * 50 + [0] * 50, positive="a", negative="b",
                               snapshot="churn") is None
    assert class_count_problem([1] * 3 + [0] * 3, positive="a", negative="b", snapshot="churn",
                               min_positives=3, min_negatives=3) is None


def test_weighted_metrics_match_the_plain_ones() -> None:
    import numpy as np

    from churnguard.model import evaluate
    from churnguard.training.bootstrap import (
        weighted_abs_total_error,
        weighted_log_loss,
        weighted_rmse,
        weighted_roc_auc,
    )

    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.4).astype(float)
    p = np.round(rng.random(200), 1)  # ties
    ones = np.ones(200)
    churn = evaluate.churn_metrics(y, p)
    assert weighted_roc_auc(ones, y, p) == pytest.approx(churn["roc_auc"])
    assert weighted_log_loss(ones, y, p) == pytest.approx(churn["log_loss"])
    spend, pred = rng.gamma(1.0, 50.0, 200), rng.gamma(1.0, 50.0, 200)
    clv = evaluate.clv_metrics(spend, pred)
    assert weighted_rmse(ones, spend, pred) == pytest.approx(clv["rmse"])
    assert weighted_abs_total_error(ones, spend, pred) == pytest.approx(abs(clv["total_error"]))
    # Weight 2 on a row is that row drawn twice.
    w = np.ones(200)
    w[:10] = 2.0
    idx = np.r_[np.arange(200), np.arange(10)]
    assert weighted_roc_auc(w, y, p) == pytest.approx(evaluate.churn_metrics(y[idx], p[idx])[
        "roc_auc"])


def test_baselines_must_be_beaten_beyond_noise() -> None:
    import numpy as np

    from churnguard.training.bootstrap import weighted_log_loss, weighted_roc_auc
    from churnguard.training.registry import baseline_decision, compare

    rng = np.random.default_rng(0)
    n = 2000
    truth = rng.random(n)
    y = (rng.random(n) < truth).astype(float)
    good, noise = np.clip(truth, 0.01, 0.99), np.full(n, y.mean())
    better = [compare("churn log loss", "lr", y, good, noise, weighted_log_loss,
                      higher_is_better=False),
              compare("churn ROC AUC", "lr", y, good, noise, weighted_roc_auc,
                      higher_is_better=True)]
    assert all(c.better for c in better) and baseline_decision(better).promote
    worse = [compare("churn log loss", "lr", y, noise, good, weighted_log_loss,
                     higher_is_better=False)]
    d = baseline_decision(worse)
    assert worse[0].worse and not d.promote and "worse than the baselines" in d.reason
    same = [compare("churn log loss", "lr", y, good, good, weighted_log_loss,
                    higher_is_better=False)]
    d = baseline_decision(same)
    assert not d.promote and "not better than the baselines beyond noise" in d.reason
    assert not baseline_decision([]).promote


def test_versions_list_the_key_metrics_intervals_beside_the_metrics(tmp_path: Path) -> None:
    """``models --json`` keeps ``metrics`` as it was and adds ``intervals`` from the run's
    ``_lo`` / ``_hi`` metrics; a version trained before intervals has none."""
    import mlflow

    tracking = Tracking.resolve(tmp_path)
    tracking.activate()
    client = tracking.client()
    client.create_registered_model("m")
    for metrics in ({"test_churn_roc_auc": 0.8},
                    {"test_churn_roc_auc": 0.8, "test_churn_roc_auc_lo": 0.78,
                     "test_churn_roc_auc_hi": 0.82, "test_churn_log_loss": 0.4}):
        with mlflow.start_run() as run:
            mlflow.log_metrics(metrics)
        client.create_model_version("m", source=str(tmp_path), run_id=run.info.run_id)
    client.set_registered_model_alias("m", "challenger", "2")
    new, old = list_versions(client, "m")
    assert new["metrics"] == {"test_churn_roc_auc": 0.8, "test_churn_log_loss": 0.4}
    assert new["intervals"] == {"test_churn_roc_auc": [0.78, 0.82]}
    assert old["metrics"] == {"test_churn_roc_auc": 0.8} and old["intervals"] == {}
