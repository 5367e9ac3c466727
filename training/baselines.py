"""Step 4 of training: the baselines churnguard is compared with, on the same test snapshots.

- logistic regression on the same features, fitted on the churn training snapshots;
- BG/NBD + Gamma-Gamma, fitted on each test snapshot's own history (features as of its
  cutoff); customers without a purchase get the training rates of such customers. When these
  models cannot be fitted (e.g. the data do not identify them) they are skipped with a warning
  and a note in the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from churnguard.training import evaluate
from churnguard.training.config import TrainConfig
from churnguard.training.data import SplitRows, TrainingData
from churnguard.training.models import BtydBaseline, LogisticBaseline

log = logging.getLogger(__name__)

LOGREG = "logistic regression"
BTYD_CHURN = "BG/NBD"
BTYD_CLV = "BG/NBD + Gamma-Gamma"


@dataclass
class Baselines:
    """Test-snapshot predictions and metric tables per baseline, keyed by its display name,
    plus the run metrics (``test_baseline_*``) and report notes."""

    churn_preds: dict[str, np.ndarray] = field(default_factory=dict)
    churn_table: dict[str, dict[str, float]] = field(default_factory=dict)
    clv_preds: dict[str, np.ndarray] = field(default_factory=dict)
    clv_table: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fit_baselines(data: TrainingData, churn_rows: SplitRows, clv_rows: SplitRows,
                  config: TrainConfig) -> Baselines:
    """Fit and evaluate the baselines on the churn and CLV test snapshots."""
    log.info("fitting baselines")
    X, y, spend = data.X, data.churned, data.future_spend
    tr, te, ctr, cte = churn_rows.train, churn_rows.test, clv_rows.train, clv_rows.test
    out = Baselines()
    lr = LogisticBaseline().fit(X[tr], y[tr])
    out.churn_preds[LOGREG] = lr.predict(X[te])
    out.churn_table[LOGREG] = evaluate.churn_metrics(y[te], out.churn_preds[LOGREG])
    out.metrics.update(evaluate.run_metrics("test_baseline_logreg_churn_",
                                            out.churn_table[LOGREG]))
    try:
        no_buy = X["purchase_days_total"].fillna(0).to_numpy() == 0
        fb_churn = float(y[tr & no_buy].mean()) if (tr & no_buy).any() else 1.0
        fb_clv = float(spend[ctr & no_buy].mean()) if (ctr & no_buy).any() else 0.0

        def btyd() -> BtydBaseline:
            return BtydBaseline(config.horizon_days, config.clv_horizon_days,
                                fallback_churn=fb_churn, fallback_clv=fb_clv, seed=config.seed)

        churn_model = btyd().fit(X[te])
        out.churn_preds[BTYD_CHURN] = churn_model.predict(X[te])[0]
        out.churn_table[BTYD_CHURN] = evaluate.churn_metrics(y[te], out.churn_preds[BTYD_CHURN])
        out.metrics.update(evaluate.run_metrics("test_baseline_btyd_churn_",
                                                out.churn_table[BTYD_CHURN]))
        clv_model = btyd().fit(X[cte])
        out.clv_preds[BTYD_CLV] = clv_model.predict(X[cte])[1]
        out.clv_table[BTYD_CLV] = evaluate.clv_metrics(spend[cte], out.clv_preds[BTYD_CLV])
        out.metrics.update(evaluate.run_metrics("test_baseline_btyd_clv_",
                                                out.clv_table[BTYD_CLV]))
        out.notes.append("BG/NBD + Gamma-Gamma are fitted on the test snapshot's own history "
                         "(features as of the cutoff); customers without a purchase get the "
                         "training rates of such customers.")
    except (ValueError, RuntimeError) as exc:  # ConvergenceError is a RuntimeError
        log.warning("BG/NBD + Gamma-Gamma baseline skipped: %s", exc)
        out.notes.append(f"BG/NBD + Gamma-Gamma baseline skipped: {exc}")
    return out
