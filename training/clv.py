"""Step 3 of training: fit the CLV model — the hurdle model P(buy) × E[spend | buy], or for a
contractual label the contract model (:func:`fit_contract_clv_model`).

Every candidate (:func:`churnguard.training.priors.candidates`) is fitted on the CLV training
snapshots with early stopping on the validation snapshot; the one with the lowest cross-fitted
validation MAE (the total scale fitted on the other half) is kept and evaluated on the test
snapshot. With ``refit`` the shipped boosters are refitted on train + validation + test with
the early-stopped tree counts, and the total scale is the one measured on the test snapshot,
out of sample (by the model fitted without it), the latest such measurement.

The CLV interval (``clv_low`` .. ``clv_high``, the 80 % prediction interval) needs the
distribution of a buyer's spend around E[spend | buy]: it is measured the same way, on the
validation snapshot for the evaluated model (whose interval coverage the test snapshot
measures) and on the test snapshot for the shipped one
(:class:`~churnguard.model.predictors.SpendQuantiles`). The contract model's interval comes
from the model itself (the renewals paid are its random variable).

A subscription's revenue follows its contract, not a purchase process: for a contractual label
the CLV is the fee times the sBG retention curve over the renewals in the horizon
(:class:`~churnguard.model.predictors.ContractClvModel`), its total scale pooled over the
training and validation snapshots (every snapshot for the shipped model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from churnguard.model import evaluate
from churnguard.model.predictors import (
    CLV_INTERVAL_LEVEL,
    AnyClvModel,
    ClvModel,
    ContractClvModel,
    SpendQuantiles,
)
from churnguard.training.baselines import SbgBaseline
from churnguard.training.config import TrainConfig
from churnguard.training.data import SplitRows, TrainingData
from churnguard.training.models import fit_clv, refit_clv
from churnguard.training.priors import Candidate, SnapshotPriors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClvTried:
    """One fitted CLV candidate and its cross-fitted validation MAE."""

    candidate: Candidate
    mae: float
    model: AnyClvModel


@dataclass
class ClvFit:
    """The CLV step's result."""

    #: The shipped model (refitted on every split with ``refit``).
    model: AnyClvModel
    chosen: ClvTried
    tried: list[ClvTried]
    #: Test-snapshot predictions of the evaluated model and their metrics.
    test_pred: np.ndarray
    test_metrics: dict[str, float]
    #: Run metrics (``valid_clv_cv_mae_*``, ``test_clv_*`` with the deciles'
    #: ``test_clv_decile_NN_mean_predicted`` / ``_mean_actual``).
    metrics: dict[str, float]
    #: Decile calibration table of the test predictions.
    deciles: pd.DataFrame
    notes: list[str]
    #: The test predictions' intervals and nominal coverage per customer, max(level,
    #: P(spend = 0)) (:func:`churnguard.model.evaluate.interval_metrics`), for their bootstrap.
    test_interval: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def cross_fitted_scaled_mae(y: np.ndarray, pred: np.ndarray, *, seed: int = 0,
                            n_folds: int = 2) -> float:
    """MAE of ``pred`` after the total calibration, cross-fitted [CCD18]: the scale factor
    (actual total / predicted total) of each fold comes from the other folds."""
    folds = np.random.default_rng(seed).permutation(y.size) % n_folds
    total = 0.0
    for k in range(n_folds):
        fit, ev = folds != k, folds == k
        den = float(pred[fit].sum())
        scale = float(y[fit].sum()) / den if den > 0 else 1.0
        total += float(np.abs(scale * pred[ev] - y[ev]).sum())
    return total / max(y.size, 1)


def spend_quantiles(model: ClvModel, X: pd.DataFrame, spend: np.ndarray,
                    margins: tuple[np.ndarray, np.ndarray] | None, *,
                    snapshot: date) -> SpendQuantiles:
    """The hurdle's spend distribution (:class:`SpendQuantiles`) measured on one held-out
    snapshot: the buyers' actual spend against ``model``'s log-spend regression exp(f(x)),
    E[spend | buy] before its smear and scale."""
    _, expected = model.components(X, margins)
    buyers = spend > 0
    return SpendQuantiles.measure(spend[buyers], expected[buyers] / model.smear,
                                  snapshot=snapshot.isoformat())


def interval_note(interval: dict[str, float], evaluated: AnyClvModel, shipped: AnyClvModel,
                  test_cutoff: date) -> str:
    """The report's line on the CLV interval: how it is made, where it was measured, how
    often it held on the test snapshot."""
    level = f"{CLV_INTERVAL_LEVEL:.0%}"
    held = (f"it held for {interval['interval_coverage']:.1%} of the customers at the test "
            f"snapshot ({test_cutoff}; the model expects {interval['interval_nominal']:.1%}: "
            f"buyers {interval['interval_coverage_buyers']:.1%}, non-buyers "
            f"{interval['interval_coverage_nonbuyers']:.1%}), mean width "
            f"{interval['interval_width']:,.0f}")
    if isinstance(evaluated, ClvModel) and isinstance(shipped, ClvModel):
        assert evaluated.quantiles is not None and shipped.quantiles is not None
        return (f"CLV interval (clv_low .. clv_high): the {level} prediction interval of a "
                "point mass at 0 (no purchase, 1 - P(buy)) and a buyer's spend exp(f(x)) x the "
                "ratio actual / exp(f(x)) of the log-spend regression f, measured on "
                f"{evaluated.quantiles.n:,} buyers of the validation snapshot "
                f"({evaluated.quantiles.snapshot}); {held}. The shipped model's ratio is "
                f"measured on the {shipped.quantiles.n:,} buyers of the snapshot "
                f"{shipped.quantiles.snapshot}.")
    return (f"CLV interval (clv_low .. clv_high): the {level} prediction interval of the "
            "contract's revenue, fee x the renewals paid, from the sBG retention curve; "
            f"{held}.")


def fit_clv_model(
    data: TrainingData, rows: SplitRows, priors: SnapshotPriors,
    candidates: list[Candidate], config: TrainConfig, *, valid_cutoff: date, test_cutoff: date,
) -> ClvFit:
    """Fit, choose, evaluate and refit the CLV model (see the module docstring);
    ``valid_cutoff`` and ``test_cutoff`` name the snapshots in the notes and the interval's
    spend distribution."""
    X, spend, h = data.X, data.future_spend, config.clv_horizon_days
    tr, va, te = rows.train, rows.valid, rows.test
    log.info("fitting CLV model on %s rows (%d candidates)", f"{tr.sum():,}", len(candidates))

    def margins(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return priors.margin("buy", h, mask), priors.margin("spend", h, mask)

    mono: dict[str, int] | None = None
    tried = []
    for cand in candidates:
        mg_tr = margins(tr) if cand.use_prior else None
        mg_va = margins(va) if cand.use_prior else None
        model = fit_clv(X[tr], spend[tr], X[va], spend[va], cand.boost,
                        margins_train=mg_tr, margins_valid=mg_va, masked=cand.masked,
                        monotone=mono)
        mae = cross_fitted_scaled_mae(spend[va], model.predict(X[va], mg_va) / model.scale,
                                      seed=config.seed)
        tried.append(ClvTried(cand, mae, model))
    metrics = {f"valid_clv_cv_mae_{t.candidate.name}": t.mae for t in tried}
    chosen = min(tried, key=lambda t: t.mae)
    cand, clv = chosen.candidate, chosen.model
    assert isinstance(clv, ClvModel)  # every candidate here is a hurdle model (fit_clv)
    mg_va, mg_te = (margins(va), margins(te)) if cand.use_prior else (None, None)
    # The spend distribution of the interval, measured out of sample like the total scale:
    # the evaluated model's on the validation snapshot, so that its coverage on the test
    # snapshot is an honest forecast of the shipped one's.
    clv.quantiles = spend_quantiles(clv, X[va], spend[va], mg_va, snapshot=valid_cutoff)
    pred = clv.predict(X[te], mg_te)
    p_te, s_te = clv.components(X[te], mg_te)
    bounds = clv.interval(X[te], p_te, s_te)
    assert bounds is not None  # the quantiles were just measured
    interval = evaluate.interval_metrics(spend[te], *bounds, 1.0 - p_te, clv.quantiles.level)
    test_interval = (*bounds, np.maximum(clv.quantiles.level, 1.0 - p_te))
    if config.refit:
        unscaled = float(pred.sum()) / clv.scale
        test_scale = float(spend[te].sum()) / unscaled if unscaled > 0 else clv.scale
        # As the scale: the latest out-of-sample measurement, the test snapshot by the model
        # fitted without it.
        test_quantiles = spend_quantiles(clv, X[te], spend[te], mg_te, snapshot=test_cutoff)
        final = rows.all
        clv = refit_clv(X[final], spend[final], int(clv.info["buy_trees"]),
                        int(clv.info["spend_trees"]), cand.boost, scale=test_scale,
                        margins=margins(final) if cand.use_prior else None,
                        masked=tuple(clv.info.get("masked", ())), monotone=mono)
        clv.quantiles = test_quantiles
    if cand.use_prior and priors.final is not None:
        clv.info.update(prior=priors.final.to_dict(), prior_horizon_days=h)
    clv.info["kind"] = cand.name
    test = {**evaluate.clv_metrics(spend[te], pred), **interval}
    deciles = evaluate.decile_calibration(spend[te], pred)
    metrics.update(evaluate.run_metrics("test_clv_", test))
    metrics.update(evaluate.run_metrics("test_clv_", evaluate.decile_metrics(deciles)))
    notes = [
        f"CLV model: {cand.name}, chosen by cross-fitted MAE (total scale fitted on the other "
        "half) on the validation snapshot ("
        + ", ".join(f"{t.candidate.name} {t.mae:.2f}" for t in tried) + ").",
        f"CLV total on the test snapshot ({test_cutoff}): predicted {test['total_pred']:,.0f} "
        f"vs actual {test['total_actual']:,.0f}"
        + (f"; the shipped models are refitted on train + validation + test, with the total "
           f"scale {clv.scale:.3f} measured on the test snapshot." if config.refit else "."),
        interval_note(interval, chosen.model, clv, test_cutoff),
    ]
    return ClvFit(model=clv, chosen=chosen, tried=tried, test_pred=pred, test_metrics=test,
                  metrics=metrics, deciles=deciles, notes=notes, test_interval=test_interval)


def _total_scale(actual: np.ndarray, pred: np.ndarray, fallback: float) -> float:
    den = float(pred.sum())
    return float(actual.sum()) / den if den > 0 else fallback


def fit_contract_clv_model(
    data: TrainingData, churn_rows: SplitRows, rows: SplitRows, config: TrainConfig, *,
    test_cutoff: date,
) -> ClvFit:
    """The contract CLV model (:class:`ContractClvModel`): the sBG's α and β and the daily
    hazard between renewals from the churn label's training snapshots (the renewal decisions
    :class:`~churnguard.training.baselines.SbgBaseline` fits), the total scale from the CLV
    training and validation snapshots; evaluated on the CLV test snapshot. With ``refit`` the
    shipped model's α, β and hazard come from every churn snapshot and its scale from every
    CLV snapshot."""
    X, spend, h = data.X, data.future_spend, config.clv_horizon_days
    window = config.horizon_days + config.grace_days
    churned = data.churned

    def retention(mask: np.ndarray) -> ContractClvModel:
        sbg = SbgBaseline(window).fit(X[mask], churned[mask])
        assert sbg.model is not None
        hazard = -float(np.log1p(-min(sbg.between_renewals, 1.0 - 1e-9))) / window
        return ContractClvModel(alpha=sbg.model.alpha, beta=sbg.model.beta,
                                daily_hazard=hazard, horizon_days=h,
                                info={"kind": "sbg_contract", "window_days": window})

    log.info("fitting the contract CLV model (sBG retention x fee) on %s renewal-window rows",
             f"{churn_rows.train.sum():,}")
    tr, va, te = rows.train, rows.valid, rows.test
    model = retention(churn_rows.train)
    # The scale is pooled over the training and validation snapshots: a single snapshot's
    # total swings with a few large accounts' renewals, and the model has three parameters
    # besides it, fitted on other rows (the churn label's renewal decisions).
    fit_scale = tr | va
    model.scale = _total_scale(spend[fit_scale], model.predict(X[fit_scale]), 1.0)
    mae = float(np.abs(model.predict(X[va]) - spend[va]).mean()) if va.any() else float("nan")
    cand = Candidate("sbg_contract", False, (), config.boost)
    chosen = ClvTried(cand, mae, model)
    pred = model.predict(X[te])
    p_te, s_te = model.components(X[te])
    bounds = model.interval(X[te], p_te, s_te)
    assert bounds is not None  # a contract model's interval comes from the model itself
    interval = evaluate.interval_metrics(spend[te], *bounds, 1.0 - p_te, CLV_INTERVAL_LEVEL)
    test_interval = (*bounds, np.maximum(CLV_INTERVAL_LEVEL, 1.0 - p_te))
    shipped = model
    if config.refit:
        labelled = churn_rows.all & np.isfinite(churned)
        shipped = retention(labelled)
        every = rows.all
        shipped.scale = _total_scale(spend[every], shipped.predict(X[every]), model.scale)
    test = {**evaluate.clv_metrics(spend[te], pred), **interval}
    deciles = evaluate.decile_calibration(spend[te], pred)
    metrics = {"valid_clv_mae_sbg_contract": mae,
               **evaluate.run_metrics("test_clv_", test),
               **evaluate.run_metrics("test_clv_", evaluate.decile_metrics(deciles))}
    notes = [
        f"CLV model: contract (fee x sBG retention over the renewals in {h} days; "
        f"alpha {model.alpha:.3f}, beta {model.beta:.3f}, cancellations between renewals "
        f"{model.daily_hazard * 30:.4f} a month), total scale {model.scale:.3f} from the "
        "training and validation snapshots.",
        f"CLV total on the test snapshot ({test_cutoff}): predicted {test['total_pred']:,.0f} "
        f"vs actual {test['total_actual']:,.0f} ({test['total_error']:+.1%})"
        + (f"; the shipped model's sBG is refitted on every churn snapshot, its total scale "
           f"({shipped.scale:.3f}) on every CLV snapshot." if config.refit else "."),
        interval_note(interval, model, shipped, test_cutoff),
    ]
    return ClvFit(model=shipped, chosen=chosen, tried=[chosen], test_pred=pred,
                  test_metrics=test, metrics=metrics, deciles=deciles, notes=notes,
                  test_interval=test_interval)
