"""On demo data with ground truth: the churn model against the oracle (slow, a real fit)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from churnguard.features.build import label_sql
from churnguard.features.demo_data import generate_demo_data, oracle_churn_probability
from churnguard.features.sources import open_source
from churnguard.model import evaluate
from churnguard.training.pipeline import TrainConfig, fit_models
from tests.scoring import score_source


@pytest.mark.slow
def test_churn_auc_near_the_oracle_and_calibrated(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    generate_demo_data(data, n_customers=20_000, seed=7, start=date(2023, 1, 1),
                       end=date(2025, 12, 31))
    with open_source(data) as source:
        fitted = fit_models(source, config=TrainConfig(clv_horizon_days=180,
                                                       max_train_cutoffs=12))
        cutoff = fitted.churn_plan.test
        scores = score_source(source, fitted.bundle, cutoff)
        labels = source.con.sql(label_sql(cutoff, 90, 90)).df()
    oracle = oracle_churn_probability(data, cutoff, 90)
    m = scores.merge(labels[["customer_id", "churned"]], on="customer_id").merge(
        oracle, on="customer_id")
    assert len(m) == len(scores) == len(oracle)
    model = evaluate.churn_metrics(m["churned"], m["churn_probability"])
    best = evaluate.churn_metrics(m["churned"], m["p_churn"])
    print(f"\nchurn test cutoff {cutoff}: model AUC {model['roc_auc']:.4f} ECE "
          f"{model['ece']:.4f} log loss {model['log_loss']:.4f}; oracle AUC "
          f"{best['roc_auc']:.4f} ECE {best['ece']:.4f} log loss {best['log_loss']:.4f}")
    # The targets: churn AUC within 0.02 of the oracle's, calibration error <= 0.02.
    assert best["roc_auc"] - model["roc_auc"] <= 0.02
    assert model["ece"] <= 0.02
    assert model["roc_auc"] > fitted.metrics["test_baseline_btyd_churn_roc_auc"] - 0.005
