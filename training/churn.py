"""Step 2 of training: fit the churn model.

Every candidate (:func:`churnguard.training.priors.candidates`) is fitted on the training
snapshots with early stopping on the out-of-time validation snapshot, and calibrated; the one
with the lowest cross-fitted calibrated validation log loss is kept, with its calibrator. It is
evaluated on the test snapshot as fitted, and (with ``refit``) refitted on train + validation
with the early-stopped tree count, then evaluated again: those are the test metrics. Last, the
shipped model is refitted once more on train + validation + test (same trees, same
calibrator), so it has no out-of-sample test score of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnguard.model import evaluate
from churnguard.model.predictors import ChurnModel
from churnguard.training.config import TrainConfig
from churnguard.training.data import SplitRows, TrainingData
from churnguard.training.models import (
    CHURN_MONOTONE,
    CalibrationChoice,
    choose_calibration,
    fit_churn,
    refit_churn,
)
from churnguard.training.priors import Candidate, SnapshotPriors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChurnTried:
    """One fitted churn candidate and its cross-fitted calibrated validation log loss."""

    candidate: Candidate
    loss: float
    model: ChurnModel
    calibration: CalibrationChoice


@dataclass
class ChurnFit:
    """The churn step's result."""

    #: The shipped model (refitted on every split with ``refit``), calibrated.
    model: ChurnModel
    #: The chosen candidate and every candidate tried, in order.
    chosen: ChurnTried
    tried: list[ChurnTried]
    #: Trees of the early-stopped fit (the refits keep that count).
    n_trees: int
    #: Test-snapshot predictions of the evaluated model and their metrics.
    test_pred: np.ndarray
    test_metrics: dict[str, float]
    #: Run metrics (``valid_churn_cv_log_loss_*``, ``calib_*``, ``test_churn_*``).
    metrics: dict[str, float]
    #: Reliability-diagram table of the test predictions.
    reliability: pd.DataFrame
    notes: list[str]


def monotone(config: TrainConfig) -> dict[str, int]:
    """The churn model's monotone constraints for the run's label. Purchase recency raises
    non-contractual churn, but not contractual churn: an annual account is invoiced once a
    year, so a long time since its last invoice is normal (only complaints keep their sign)."""
    if config.label == "contractual":
        return {k: v for k, v in CHURN_MONOTONE.items() if k != "days_since_last_purchase"}
    return CHURN_MONOTONE


def _try(candidate: Candidate, data: TrainingData, rows: SplitRows, y: np.ndarray,
         priors: SnapshotPriors, config: TrainConfig) -> ChurnTried:
    tr, va = rows.train, rows.valid
    h = config.horizon_days
    m_tr = priors.margin("churn", h, tr) if candidate.use_prior else None
    m_va = priors.margin("churn", h, va) if candidate.use_prior else None
    X = data.X
    model = fit_churn(X[tr], y[tr], X[va], y[va], candidate.boost, margin_train=m_tr,
                      margin_valid=m_va, masked=candidate.masked, monotone=monotone(config))
    choice = choose_calibration(model.raw(X[va], m_va), y[va], seed=config.seed)
    return ChurnTried(candidate, choice.cv_log_loss[choice.calibrator.method], model, choice)


def fit_churn_model(
    data: TrainingData, rows: SplitRows, priors: SnapshotPriors,
    candidates: list[Candidate], config: TrainConfig,
) -> ChurnFit:
    """Fit, choose, evaluate and refit the churn model (see the module docstring)."""
    X, y, h = data.X, data.churned, config.horizon_days
    tr, va, te = rows.train, rows.valid, rows.test
    log.info("fitting churn model on %s rows (%d candidates)", f"{tr.sum():,}", len(candidates))
    tried = [_try(c, data, rows, y, priors, config) for c in candidates]
    metrics = {f"valid_churn_cv_log_loss_{t.candidate.name}": t.loss for t in tried}
    chosen = min(tried, key=lambda t: t.loss)
    cand, base, choice = chosen.candidate, chosen.model, chosen.calibration
    base.calibrator = choice.calibrator

    def margin(mask: np.ndarray) -> np.ndarray | None:
        return priors.margin("churn", h, mask) if cand.use_prior else None

    def refit(mask: np.ndarray) -> ChurnModel:
        model = refit_churn(X[mask], y[mask], base.best_iteration + 1, cand.boost,
                            margin=margin(mask), masked=cand.masked, monotone=monotone(config))
        model.calibrator = choice.calibrator
        return model

    m_te = margin(te)
    metrics.update({f"calib_cv_log_loss_{m}": v for m, v in choice.cv_log_loss.items()})
    metrics["calib_valid_raw_log_loss"] = choice.raw_log_loss
    norefit = evaluate.churn_metrics(y[te], base.predict(X[te], m_te))
    metrics.update(evaluate.run_metrics("test_churn_norefit_", norefit))
    evaluated = base
    if config.refit:
        evaluated = refit(tr | va)
        metrics.update(evaluate.run_metrics("test_churn_refit_", evaluate.churn_metrics(
            y[te], evaluated.predict(X[te], m_te))))
    p_test = evaluated.predict(X[te], m_te)
    # The test snapshot has the freshest labels and the oldest customers: once it has served
    # for evaluation, the shipped model is refitted with it (same trees, same calibrator). The
    # test metrics above are those of the model fitted without it.
    shipped = refit(tr | va | te) if config.refit else evaluated
    if cand.use_prior and priors.final is not None:
        shipped.info.update(prior=priors.final.to_dict(), prior_horizon_days=h)
    shipped.info["kind"] = cand.name
    test = evaluate.churn_metrics(y[te], p_test)
    metrics.update(evaluate.run_metrics("test_churn_", test))
    notes = [
        f"Churn model: {cand.name}, chosen by cross-fitted calibrated log loss on the "
        "validation snapshot (" + ", ".join(f"{t.candidate.name} {t.loss:.4f}" for t in tried)
        + ").",
        f"Churn calibration: {choice.calibrator.method} (cross-fitted validation log loss "
        + ", ".join(f"{m} {v:.4f}" for m, v in choice.cv_log_loss.items()) + ").",
        f"Refit: {'yes' if config.refit else 'no'}; test log loss without refit "
        f"{norefit['log_loss']:.4f}, refitted on train + validation {test['log_loss']:.4f}"
        + ("; the registered model is refitted once more on train + validation + test "
           "(same trees and calibrator), so it has no out-of-sample test score of its own."
           if config.refit else "."),
    ]
    if not shipped.booster.get_score(importance_type="gain"):
        notes.append("The churn model has no split: too few churners for the candidates' leaf "
                     "minimums, so it predicts one probability for everyone (more history or "
                     "customers, or a longer --horizon-days, give it churners to learn from).")
    return ChurnFit(model=shipped, chosen=chosen, tried=tried, n_trees=base.best_iteration + 1,
                    test_pred=p_test, test_metrics=test, metrics=metrics,
                    reliability=evaluate.reliability_table(y[te], p_test),
                    notes=notes)
