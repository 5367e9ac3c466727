"""Step 4 of training: the baselines churnguard is compared with, on the same test snapshots.

- logistic regression on the same features, fitted on the churn training snapshots;
- BG/NBD + Gamma-Gamma, fitted on each test snapshot's own history (features as of its
  cutoff); customers without a purchase get the training rates of such customers. When these
  models cannot be fitted (e.g. the data do not identify them) they are skipped with a warning
  and a note in the report;
- for a contractual churn label, the shifted-beta-geometric model (:class:`SbgBaseline`) in
  place of BG/NBD's churn probability.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from churnguard.model import evaluate
from churnguard.model.predictors import SBG_COLUMNS, SbgPrior, feature_columns
from churnguard.model.sbg import SBGModel
from churnguard.training.config import TrainConfig
from churnguard.training.data import SplitRows, TrainingData
from churnguard.training.models import BtydBaseline, LogisticBaseline

log = logging.getLogger(__name__)

LOGREG = "logistic regression"
BTYD_CHURN = "BG/NBD"
BTYD_CLV = "BG/NBD + Gamma-Gamma"
SBG = "sBG"


class SbgBaseline:
    """The shifted-beta-geometric model (Fader & Hardie 2007, "How to project customer
    retention", J. Interactive Marketing 21(1)) as a churn baseline for a ``window_days`` label:
    :class:`~churnguard.model.predictors.SbgPrior` (how it predicts) fitted here.

    A training row whose next renewal (``sub_days_to_renewal``) falls inside the label window
    is one renewal decision, observed after surviving t periods: α and β maximise the
    likelihood of those decisions (the sBG likelihood of left-truncated histories, P(cancel) =
    α / (α + β + t)). Rows without a renewal in the window churn at the training rate of such
    rows (cancellations between renewals).
    """

    def __init__(self, window_days: int) -> None:
        self.window_days = window_days
        self.model: SBGModel | None = None
        self.prior: SbgPrior | None = None

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> SbgBaseline:
        from scipy.optimize import minimize
        from scipy.special import expit

        unfitted = SbgPrior(alpha=1.0, beta=1.0, between_renewals=0.0,
                            window_days=self.window_days)
        t, due = unfitted.renewal_periods(feature_columns(X, SBG_COLUMNS))
        y = np.asarray(y, dtype=float)
        if not due.any() or y[due].min() == y[due].max():
            raise ValueError("sBG: the training snapshots have no renewal decisions with both "
                             "outcomes")
        td, yd = t[due], y[due]

        def nll(theta: np.ndarray) -> float:
            a, b = np.exp(theta)
            p = np.clip(a / (a + b + td), 1e-12, 1 - 1e-12)
            return float(-(yd * np.log(p) + (1 - yd) * np.log1p(-p)).sum())

        rate = float(yd.mean())
        start = np.log([1.0, max(1.0 / max(rate, 1e-3) - 1.0, 1e-3)])
        res = minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-8,
                                                                  "fatol": 1e-10})
        a, b = np.exp(res.x)
        self.model = SBGModel(alpha=float(a), beta=float(b), log_likelihood=-float(res.fun))
        rest = ~due & np.isfinite(y)
        between = float(y[rest].mean()) if rest.any() else float(expit(-6))
        self.prior = SbgPrior(alpha=float(a), beta=float(b), between_renewals=between,
                              window_days=self.window_days)
        return self

    @property
    def between_renewals(self) -> float:
        assert self.prior is not None, "fit first"
        return self.prior.between_renewals

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        assert self.prior is not None, "fit first"
        return self.prior.probability(X)


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
    if config.label == "contractual":
        try:
            sbg = SbgBaseline(config.horizon_days + config.grace_days).fit(X[tr], y[tr])
            out.churn_preds[SBG] = sbg.predict(X[te])
            out.churn_table[SBG] = evaluate.churn_metrics(y[te], out.churn_preds[SBG])
            out.metrics.update(evaluate.run_metrics("test_baseline_sbg_churn_",
                                                    out.churn_table[SBG]))
            assert sbg.model is not None
            out.notes.append(f"sBG (Fader & Hardie 2007) fitted on the training snapshots' "
                             f"renewal decisions: alpha {sbg.model.alpha:.3f}, beta "
                             f"{sbg.model.beta:.3f}.")
        except (ValueError, RuntimeError) as exc:
            log.warning("sBG baseline skipped: %s", exc)
            out.notes.append(f"sBG baseline skipped: {exc}")
        # BG/NBD's purchase process does not describe invoices that follow a subscription's
        # terms: the sBG is the contractual baseline, so BG/NBD is not fitted.
        return out
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
