"""``churnguard train`` and ``churnguard score`` as plain functions.

train: plan purged out-of-time cutoffs (``data.plan_split``) → snapshot grid → churn model
(early stopping, calibration chosen by cross-fitted validation log loss, refit on train +
validation) → CLV hurdle model → baselines (logistic regression, BG/NBD + Gamma-Gamma) →
metrics on the test snapshot → promotion gate against the champion on the same snapshot →
MLflow run + registered pyfunc version + aliases.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnguard.features.build import build_features, infer_spec
from churnguard.features.definitions import FeatureSpec
from churnguard.features.sources import Source
from churnguard.model.bundle import ScoringBundle
from churnguard.model.encode import model_matrix
from churnguard.model.predictors import BtydPrior, ChurnModel
from churnguard.model.registry import Tracking, load_bundle
from churnguard.model.score import score_matrix
from churnguard.training import evaluate
from churnguard.training.data import (
    PlanError,
    SplitPlan,
    build_training_grid,
    category_levels,
    data_fingerprint,
    data_window,
    longest_feasible_window,
    plan_split,
)
from churnguard.training.models import (
    AGE_FEATURES,
    BoostConfig,
    BtydBaseline,
    LogisticBaseline,
    choose_calibration,
    fit_btyd_prior,
    fit_churn,
    fit_clv,
    refit_churn,
    refit_clv,
)
from churnguard.training.registry import (
    CHALLENGER,
    CHAMPION,
    Decision,
    champion_version,
    promotion_decision,
)

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of one training run (the CLI fills them from options and Settings)."""

    horizon_days: int = 90
    clv_horizon_days: int = 365
    #: When the CLV horizon leaves no room for a purged split, fall back to the longest
    #: feasible one (a multiple of 30 days) instead of failing. The CLI sets it when the user
    #: did not pass --clv-horizon-days explicitly.
    clv_horizon_auto: bool = False
    max_train_cutoffs: int = 24
    min_history_days: int = 90
    boost: BoostConfig = field(default_factory=BoostConfig)
    refit: bool = True
    experiment: str = "churnguard"
    model_name: str = "churnguard"
    seed: int = 0


@dataclass
class TrainResult:
    run_id: str
    version: str
    promoted: bool
    reason: str
    as_of: date
    churn_plan: SplitPlan
    clv_plan: SplitPlan
    metrics: dict[str, float]
    model_uri: str


def _quiet(_: str) -> None:
    return None


def _plans(first: date, as_of: date, config: TrainConfig, say: Say) -> tuple[
        SplitPlan, SplitPlan, TrainConfig]:
    kw = {"min_history_days": config.min_history_days,
          "max_train_cutoffs": config.max_train_cutoffs}

    def overlapping(days: int, what: str, error: PlanError) -> SplitPlan:
        # Too short for three disjoint label windows: keep the cutoffs ordered in time but let
        # consecutive windows overlap (data.plan_split, purge=False), and say so.
        try:
            plan = plan_split(first, as_of, days, purge=False, **kw)
        except PlanError:
            raise error from None
        say(f"warning: the data is too short for a purged split with a {days}-day {what} "
            f"horizon; using overlapping label windows (test {plan.test}, validation "
            f"{plan.valid}): validation and test scores are somewhat optimistic")
        return plan

    try:
        churn_plan = plan_split(first, as_of, config.horizon_days, **kw)
    except PlanError as exc:
        churn_plan = overlapping(config.horizon_days, "churn", exc)
    try:
        clv_plan = plan_split(first, as_of, config.clv_horizon_days, **kw)
    except PlanError as exc:
        if not config.clv_horizon_auto:
            clv_plan = overlapping(config.clv_horizon_days, "CLV", exc)
            return churn_plan, clv_plan, config
        # An automatic fallback should leave the CLV model a useful number of cutoffs.
        best = longest_feasible_window(first, as_of, min_history_days=config.min_history_days,
                                       min_train_cutoffs=min(6, config.max_train_cutoffs))
        if best is None:
            raise
        say(f"warning: the data is too short for a purged split with a "
            f"{config.clv_horizon_days}-day CLV horizon; using {best} days "
            "(pass --clv-horizon-days to choose)")
        config = replace(config, clv_horizon_days=best)
        clv_plan = plan_split(first, as_of, best, **kw)
    return churn_plan, clv_plan, config


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(float(v))}


@dataclass
class Fitted:
    """Everything :func:`fit_models` produced, before anything is logged or registered."""

    as_of: date
    config: TrainConfig
    churn_plan: SplitPlan
    clv_plan: SplitPlan
    spec: FeatureSpec
    grid: pd.DataFrame
    bundle: ScoringBundle
    metrics: dict[str, float]
    extra: dict[str, Any]
    notes: list[str]
    churn_preds: dict[str, np.ndarray]
    churn_table: dict[str, dict[str, float]]
    clv_preds: dict[str, np.ndarray]
    clv_table: dict[str, dict[str, float]]
    fingerprint: dict[str, Any]
    churn_trees: int
    test_rows: np.ndarray
    clv_test_rows: np.ndarray


def fit_models(
    source: Source,
    *,
    as_of: date | None = None,
    config: TrainConfig | None = None,
    say: Say = _quiet,
    progress: Callable[[int, int], None] | None = None,
) -> Fitted:
    """Plan the split, build the grid, fit churn + CLV models and baselines, evaluate on test.

    Only rows strictly before ``as_of`` (default: the day after the last row) are read.
    """
    config = config or TrainConfig()
    first, default_as_of = data_window(source)
    as_of = as_of or default_as_of
    churn_plan, clv_plan, config = _plans(first, as_of, config, say)
    spec = infer_spec(source, as_of=as_of)
    say(f"as of {as_of}: churn test {churn_plan.test}, validation {churn_plan.valid}, "
        f"{len(churn_plan.train)} training cutoffs; CLV ({config.clv_horizon_days} days) test "
        f"{clv_plan.test}, validation {clv_plan.valid}, {len(clv_plan.train)} training cutoffs")
    grid = build_training_grid(
        source, spec, as_of=as_of, churn_cutoffs=churn_plan.all,
        horizon_days=config.horizon_days, clv_cutoffs=clv_plan.all,
        clv_horizon_days=config.clv_horizon_days, progress=progress)
    levels = category_levels(spec, grid)
    X = model_matrix(grid, spec, levels)

    def rows(cutoffs: tuple[date, ...]) -> np.ndarray:
        return grid["as_of"].isin(cutoffs).to_numpy()

    tr, va, te = rows(churn_plan.train), rows((churn_plan.valid,)), rows((churn_plan.test,))
    y = grid["churned"].to_numpy(dtype=float)
    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {}

    # --- BTYD priors ---------------------------------------------------------------------
    # One BG/NBD + Gamma-Gamma per snapshot, fitted on that snapshot's own feature rows (what
    # was known at its cutoff), and one on the rows as of ``as_of`` for the shipped bundle.
    priors = _snapshot_priors(source, spec, levels, grid, X, as_of, config, say)
    final_prior = priors.pop(as_of) if priors else None

    def prior_margin(kind: str, horizon: int, mask: np.ndarray) -> np.ndarray:
        cut = grid["as_of"].to_numpy()[mask]
        Xm = X[mask]
        out = np.zeros(int(mask.sum()))
        for c in np.unique(cut):
            sel = cut == c
            out[sel] = priors[c].margins(Xm[sel], horizon)[kind]
        return out

    # Candidates: plain XGBoost; XGBoost boosting from the BTYD prior, with and without splits
    # on raw customer age; the prior alone (no trees: learning rate 0), recalibrated. The one
    # with the best cross-fitted score on the out-of-time validation snapshot is shipped.
    no_trees = replace(config.boost, learning_rate=0.0, n_estimators=2, early_stopping_rounds=1)
    candidates: list[tuple[str, bool, tuple[str, ...], BoostConfig]] = [
        ("xgboost", False, (), config.boost)]
    if final_prior is not None:
        candidates += [("btyd_prior_xgboost", True, (), config.boost),
                       ("btyd_prior_xgboost_no_age", True, AGE_FEATURES, config.boost),
                       ("btyd_prior", True, (), no_trees)]

    # --- churn ----------------------------------------------------------------------------
    say(f"fitting churn model on {tr.sum():,} rows ({len(candidates)} candidates)")
    tried = []
    for name, use_prior, masked, boost in candidates:
        m_tr = prior_margin("churn", config.horizon_days, tr) if use_prior else None
        m_va = prior_margin("churn", config.horizon_days, va) if use_prior else None
        cand = fit_churn(X[tr], y[tr], X[va], y[va], boost, margin_train=m_tr,
                         margin_valid=m_va, masked=masked)
        cand_choice = choose_calibration(cand.raw(X[va], m_va), y[va], seed=config.seed)
        loss = cand_choice.cv_log_loss[cand_choice.calibrator.method]
        metrics[f"valid_churn_cv_log_loss_{name}"] = loss
        tried.append((loss, name, use_prior, masked, boost, cand, cand_choice))
    _, churn_kind, churn_prior, churn_masked, churn_boost, base, choice = min(
        tried, key=lambda t: t[0])
    base.calibrator = choice.calibrator
    m_te = prior_margin("churn", config.horizon_days, te) if churn_prior else None
    metrics.update({f"calib_cv_log_loss_{m}": v for m, v in choice.cv_log_loss.items()})
    metrics["calib_valid_raw_log_loss"] = choice.raw_log_loss
    norefit = evaluate.churn_metrics(y[te], base.predict(X[te], m_te))
    metrics.update(_prefixed("test_churn_norefit_", norefit))
    churn: ChurnModel = base
    if config.refit:
        both = tr | va
        refit = refit_churn(X[both], y[both], base.best_iteration + 1, churn_boost,
                            margin=prior_margin("churn", config.horizon_days, both)
                            if churn_prior else None, masked=churn_masked)
        refit.calibrator = choice.calibrator
        churn = refit
        metrics.update(_prefixed("test_churn_refit_", evaluate.churn_metrics(
            y[te], refit.predict(X[te], m_te))))
    p_test = churn.predict(X[te], m_te)
    if config.refit:
        # The test snapshot has the freshest labels and the oldest customers: once it has
        # served for evaluation, the shipped model is refitted with it (same trees, same
        # calibrator). The test metrics above are those of the model fitted without it.
        final = tr | va | te
        churn = refit_churn(X[final], y[final], base.best_iteration + 1, churn_boost,
                            margin=prior_margin("churn", config.horizon_days, final)
                            if churn_prior else None, masked=churn_masked)
        churn.calibrator = choice.calibrator
    if churn_prior and final_prior is not None:
        churn.info.update(prior=final_prior.to_dict(), prior_horizon_days=config.horizon_days)
    churn.info["kind"] = churn_kind
    churn_test = evaluate.churn_metrics(y[te], p_test)
    metrics.update(_prefixed("test_churn_", churn_test))
    churn_preds: dict[str, np.ndarray] = {"churnguard": p_test}
    churn_table: dict[str, dict[str, float]] = {"churnguard": churn_test}
    extra["churn_reliability"] = evaluate.reliability_table(y[te], p_test).to_dict("list")
    notes = [f"Churn model: {churn_kind}, chosen by cross-fitted calibrated log loss on the "
             "validation snapshot (" + ", ".join(f"{t[1]} {t[0]:.4f}" for t in tried) + ").",
             f"Churn calibration: {choice.calibrator.method} (cross-fitted validation log loss "
             + ", ".join(f"{m} {v:.4f}" for m, v in choice.cv_log_loss.items()) + ").",
             f"Refit: {'yes' if config.refit else 'no'}; test log loss without refit "
             f"{norefit['log_loss']:.4f}, refitted on train + validation "
             f"{churn_test['log_loss']:.4f}"
             + ("; the registered model is refitted once more on train + validation + test "
                "(same trees and calibrator), so it has no out-of-sample test score of its "
                "own." if config.refit else ".")]

    # --- CLV ------------------------------------------------------------------------------
    ctr, cva, cte = rows(clv_plan.train), rows((clv_plan.valid,)), rows((clv_plan.test,))
    spend = grid["future_spend"].to_numpy(dtype=float)
    say(f"fitting CLV model on {ctr.sum():,} rows ({len(candidates)} candidates)")

    def clv_margins(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (prior_margin("buy", config.clv_horizon_days, mask),
                prior_margin("spend", config.clv_horizon_days, mask))

    clv_tried = []
    for name, use_prior, masked, boost in candidates:
        mg_tr = clv_margins(ctr) if use_prior else None
        mg_va = clv_margins(cva) if use_prior else None
        cand_clv = fit_clv(X[ctr], spend[ctr], X[cva], spend[cva], boost,
                           margins_train=mg_tr, margins_valid=mg_va, masked=masked)
        mae = _cross_fitted_scaled_mae(spend[cva], cand_clv.predict(X[cva], mg_va)
                                       / cand_clv.scale, seed=config.seed)
        metrics[f"valid_clv_cv_mae_{name}"] = mae
        clv_tried.append((mae, name, use_prior, boost, cand_clv))
    _, clv_kind, clv_prior, clv_boost, clv = min(clv_tried, key=lambda t: t[0])
    clv_pred = clv.predict(X[cte], clv_margins(cte) if clv_prior else None)
    if config.refit:
        # As for churn: refit on train + validation + test with the early-stopped tree counts;
        # the total calibration is measured on the test snapshot, out of sample (by the model
        # fitted without it), the latest such measurement.
        unscaled = float(clv_pred.sum()) / clv.scale
        test_scale = float(spend[cte].sum()) / unscaled if unscaled > 0 else clv.scale
        cfinal = ctr | cva | cte
        clv_masked = tuple(clv.info.get("masked", ()))
        clv = refit_clv(X[cfinal], spend[cfinal], int(clv.info["buy_trees"]),
                        int(clv.info["spend_trees"]), clv_boost, scale=test_scale,
                        margins=clv_margins(cfinal) if clv_prior else None, masked=clv_masked)
    if clv_prior and final_prior is not None:
        clv.info.update(prior=final_prior.to_dict(), prior_horizon_days=config.clv_horizon_days)
    clv.info["kind"] = clv_kind
    clv_test = evaluate.clv_metrics(spend[cte], clv_pred)
    metrics.update(_prefixed("test_clv_", clv_test))
    clv_preds: dict[str, np.ndarray] = {"churnguard": clv_pred}
    clv_table: dict[str, dict[str, float]] = {"churnguard": clv_test}
    extra["clv_deciles"] = evaluate.decile_calibration(spend[cte], clv_pred).to_dict("list")
    notes.append(f"CLV model: {clv_kind}, chosen by cross-fitted MAE (total scale fitted on "
                 "the other half) on the validation snapshot ("
                 + ", ".join(f"{t[1]} {t[0]:.2f}" for t in clv_tried) + ").")
    notes.append(f"CLV total on the test snapshot ({clv_plan.test}): predicted "
                 f"{clv_test['total_pred']:,.0f} vs actual {clv_test['total_actual']:,.0f}"
                 + (f"; the shipped models are refitted on train + validation + test, with "
                    f"the total scale {clv.scale:.3f} measured on the test snapshot."
                    if config.refit else "."))

    # --- baselines ------------------------------------------------------------------------
    say("fitting baselines")
    lr = LogisticBaseline().fit(X[tr], y[tr])
    churn_preds["logistic regression"] = lr.predict(X[te])
    churn_table["logistic regression"] = evaluate.churn_metrics(
        y[te], churn_preds["logistic regression"])
    metrics.update(_prefixed("test_baseline_logreg_churn_", churn_table["logistic regression"]))
    try:
        no_buy = X["purchase_days_total"].fillna(0).to_numpy() == 0
        fb_churn = float(y[tr & no_buy].mean()) if (tr & no_buy).any() else 1.0
        fb_clv = float(spend[ctr & no_buy].mean()) if (ctr & no_buy).any() else 0.0
        kw = {"fallback_churn": fb_churn, "fallback_clv": fb_clv, "seed": config.seed}
        btyd = BtydBaseline(config.horizon_days, config.clv_horizon_days, **kw).fit(X[te])
        churn_preds["BG/NBD"] = btyd.predict(X[te])[0]
        churn_table["BG/NBD"] = evaluate.churn_metrics(y[te], churn_preds["BG/NBD"])
        metrics.update(_prefixed("test_baseline_btyd_churn_", churn_table["BG/NBD"]))
        btyd_c = BtydBaseline(config.horizon_days, config.clv_horizon_days, **kw).fit(X[cte])
        clv_preds["BG/NBD + Gamma-Gamma"] = btyd_c.predict(X[cte])[1]
        clv_table["BG/NBD + Gamma-Gamma"] = evaluate.clv_metrics(
            spend[cte], clv_preds["BG/NBD + Gamma-Gamma"])
        metrics.update(_prefixed("test_baseline_btyd_clv_", clv_table["BG/NBD + Gamma-Gamma"]))
        notes.append("BG/NBD + Gamma-Gamma are fitted on the test snapshot's own history "
                     "(features as of the cutoff); customers without a purchase get the "
                     "training rates of such customers.")
    except (ValueError, RuntimeError) as exc:  # ConvergenceError is a RuntimeError
        say(f"warning: BG/NBD + Gamma-Gamma baseline skipped: {exc}")
        notes.append(f"BG/NBD + Gamma-Gamma baseline skipped: {exc}")

    # --- bundle ---------------------------------------------------------------------------
    fingerprint = data_fingerprint(source, as_of)
    bundle = ScoringBundle(
        spec=spec, levels=levels, churn=churn, clv=clv, horizon_days=config.horizon_days,
        clv_horizon_days=config.clv_horizon_days,
        metadata={"as_of": as_of.isoformat(), "churn_plan": churn_plan.to_dict(),
                  "clv_plan": clv_plan.to_dict(), "data_fingerprint": fingerprint["fingerprint"],
                  "spec_fingerprint": spec.fingerprint(), "feature_set_version": spec.version,
                  "calibration": choice.calibrator.method, "refit": config.refit,
                  "trained_at": pd.Timestamp.now(tz="UTC").isoformat()})

    return Fitted(
        as_of=as_of, config=config, churn_plan=churn_plan, clv_plan=clv_plan, spec=spec,
        grid=grid, bundle=bundle, metrics=metrics, extra=extra, notes=notes,
        churn_preds=churn_preds, churn_table=churn_table, clv_preds=clv_preds,
        clv_table=clv_table, fingerprint=fingerprint, churn_trees=base.best_iteration + 1,
        test_rows=te, clv_test_rows=cte)


def _snapshot_priors(
    source: Source, spec: FeatureSpec, levels: dict[str, list[str]], grid: pd.DataFrame,
    X: pd.DataFrame, as_of: date, config: TrainConfig, say: Say,
) -> dict[date, BtydPrior]:
    """A :class:`BtydPrior` per grid cutoff (its own rows) and for ``as_of`` (the feature rows
    as of it, all known at training time); empty, with a warning, if any fit fails."""
    cuts = grid["as_of"].to_numpy()
    priors: dict[date, BtydPrior] = {}
    try:
        # BG/NBD: its fit takes seconds; Pareto/NBD (fit_btyd_prior(family=None) picks by
        # likelihood) can take minutes per snapshot on young customer bases.
        now = model_matrix(build_features(source, spec, as_of).to_pandas(), spec, levels)
        priors[as_of] = fit_btyd_prior(now, family="bgnbd", seed=config.seed)
        for c in sorted(set(cuts)):
            priors[c] = fit_btyd_prior(X[cuts == c], family=priors[as_of].family,
                                      seed=config.seed)
    except (ValueError, RuntimeError, KeyError) as exc:  # ConvergenceError is a RuntimeError
        say(f"warning: BG/NBD + Gamma-Gamma prior skipped: {exc}")
        return {}
    return priors


def _cross_fitted_scaled_mae(y: np.ndarray, pred: np.ndarray, *, seed: int = 0,
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


def train(
    source: Source,
    tracking: Tracking,
    *,
    as_of: date | None = None,
    config: TrainConfig | None = None,
    say: Say = _quiet,
    progress: Callable[[int, int], None] | None = None,
    actions_catalog: str | Path | None = None,
    uplift_min_customers: int | None = None,
    uplift_max_ci_width: float | None = None,
) -> TrainResult:
    """Train, evaluate, log and register one version; promote it if it beats the champion.

    ``actions_catalog``: the action catalog YAML put in the bundle (default: actions.yaml).
    When the source has a ``campaigns`` table, each action's effect is estimated from its
    randomised hold-outs (:mod:`churnguard.training.uplift`, contacts whose churn window ends
    by ``as_of``) and replaces the catalog's prior when at least ``uplift_min_customers``
    customers are in each arm and the confidence interval is no wider than
    ``uplift_max_ci_width`` (defaults: ``uplift.MIN_CUSTOMERS``, ``uplift.MAX_CI_WIDTH``).
    """
    import mlflow

    from churnguard.model.policy import load_catalog
    from churnguard.training import uplift as uplift_mod

    t0 = time.perf_counter()
    # The catalog and the campaign log are checked before the long fit, so bad input fails fast.
    catalog = load_catalog(actions_catalog)
    uplift_kw: dict[str, Any] = {
        "min_customers": uplift_mod.MIN_CUSTOMERS if uplift_min_customers is None
        else uplift_min_customers,
        "max_ci_width": uplift_mod.MAX_CI_WIDTH if uplift_max_ci_width is None
        else uplift_max_ci_width}
    effects_key = (as_of or data_window(source)[1], (config or TrainConfig()).horizon_days)
    policy, effects = uplift_mod.estimate_from_source(
        source, catalog, as_of=effects_key[0], horizon_days=effects_key[1], **uplift_kw)
    fitted = fit_models(source, as_of=as_of, config=config, say=say, progress=progress)
    if (fitted.as_of, fitted.config.horizon_days) != effects_key:
        policy, effects = uplift_mod.estimate_from_source(
            source, catalog, as_of=fitted.as_of, horizon_days=fitted.config.horizon_days,
            **uplift_kw)
    if source.has("campaigns"):
        say(effects.summary())
    as_of, config, spec, grid = fitted.as_of, fitted.config, fitted.spec, fitted.grid
    churn_plan, clv_plan, bundle = fitted.churn_plan, fitted.clv_plan, fitted.bundle
    metrics, extra, notes, fingerprint = (fitted.metrics, fitted.extra, fitted.notes,
                                          fitted.fingerprint)
    churn, clv, te = bundle.churn, bundle.clv, fitted.test_rows
    assert churn.calibrator is not None
    churn_test = fitted.churn_table["churnguard"]
    # The action policy (catalog + campaign-log effects) travels in the bundle; value tiers are
    # CLV quantiles of the latest (test) snapshot's predictions, fixed now so every scorer tiers
    # customers the same way.
    bundle.policy = policy.fit_value_tiers(fitted.clv_preds["churnguard"]).to_dict()

    # --- gate -----------------------------------------------------------------------------
    tracking.activate()
    client = tracking.client()
    new_gate = {"churn_log_loss": churn_test["log_loss"],
                "clv_mae": metrics["test_clv_mae"],
                "clv_normalized_gini": metrics.get("test_clv_normalized_gini", math.nan)}
    champ_version = _champion_if_registered(client, config.model_name)
    champ_gate: dict[str, float] | None = None
    if champ_version is not None:
        say(f"scoring champion v{champ_version} on the same test snapshots")
        try:
            champ_gate = _champion_metrics(source, grid, config.model_name, churn_plan,
                                           clv_plan)
        except Exception as exc:  # a champion that cannot be loaded or scored is not beaten
            decision = Decision(False, f"champion v{champ_version} could not be scored on the "
                                f"new test snapshot ({type(exc).__name__}: {exc}); promote "
                                "by hand with --force")
        else:
            metrics.update(_prefixed("champion_", champ_gate))
            decision = promotion_decision(new_gate, champ_gate)
    else:
        decision = promotion_decision(new_gate, None)

    # --- MLflow ---------------------------------------------------------------------------
    exp_id = tracking.experiment_id(config.experiment)
    with mlflow.start_run(experiment_id=exp_id) as run, \
            tempfile.TemporaryDirectory() as tmp:
        params = {
            "as_of": as_of.isoformat(), "horizon_days": config.horizon_days,
            "clv_horizon_days": config.clv_horizon_days, "refit": config.refit,
            "seed": config.seed, "calibration": churn.calibrator.method,
            "churn_trees": fitted.churn_trees,
            "clv_buy_trees": clv.info["buy_trees"], "clv_spend_trees": clv.info["spend_trees"],
            "clv_scale": round(clv.scale, 6), "clv_smear": round(clv.smear, 6),
            "churn_test_cutoff": churn_plan.test.isoformat(),
            "churn_valid_cutoff": churn_plan.valid.isoformat(),
            "churn_train_cutoffs": f"{churn_plan.train[0]}..{churn_plan.train[-1]} "
                                   f"({len(churn_plan.train)})",
            "clv_test_cutoff": clv_plan.test.isoformat(),
            "clv_valid_cutoff": clv_plan.valid.isoformat(),
            "clv_train_cutoffs": f"{clv_plan.train[0]}..{clv_plan.train[-1]} "
                                 f"({len(clv_plan.train)})",
            "data_fingerprint": fingerprint["fingerprint"],
            "feature_set_version": spec.version, "spec_fingerprint": spec.fingerprint(),
            "n_features": len(spec.feature_names()),
            "n_train_rows": int(grid["as_of"].isin(churn_plan.train).sum()),
            "source": source.location,
            **{f"xgb_{k}": v for k, v in config.boost.params().items()},
            "xgb_early_stopping_rounds": config.boost.early_stopping_rounds,
        }
        mlflow.log_params(params)
        mlflow.set_tags({"as_of": as_of.isoformat(), "model_name": config.model_name,
                         "gate_decision": CHAMPION if decision.promote else CHALLENGER,
                         "gate_reason": decision.reason})
        metrics["train_seconds"] = time.perf_counter() - t0
        mlflow.log_metrics(metrics)
        mlflow.log_params({"uplift_min_customers": effects.min_customers,
                           "uplift_max_ci_width": effects.max_ci_width,
                           "uplift_actions_estimated": len(effects.estimated())})
        mlflow.log_metrics(effects.metrics())
        out = Path(tmp)
        (out / "feature_spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
        (out / "cutoffs.json").write_text(json.dumps(
            {"as_of": as_of.isoformat(), "churn": churn_plan.to_dict(),
             "clv": clv_plan.to_dict()}, indent=2))
        (out / "data_fingerprint.json").write_text(json.dumps(fingerprint, indent=2))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "evaluation_tables.json").write_text(json.dumps(extra, indent=2, default=str))
        (out / "action_effects.json").write_text(json.dumps(effects.to_dict(), indent=2))
        for name in ("feature_spec.json", "cutoffs.json", "data_fingerprint.json",
                     "metrics.json", "evaluation_tables.json", "action_effects.json"):
            mlflow.log_artifact(str(out / name))
        _log_report(
            out, y=grid.loc[te, "churned"].to_numpy(float), churn_preds=fitted.churn_preds,
            churn_table=fitted.churn_table,
            spend=grid.loc[fitted.clv_test_rows, "future_spend"].to_numpy(float),
            clv_preds=fitted.clv_preds, clv_table=fitted.clv_table,
            importance={k: float(v) for k, v in
                        churn.booster.get_score(importance_type="gain").items()},
            descriptions=spec.descriptions(),
            context={"as of": as_of, "churn horizon (days)": config.horizon_days,
                     "CLV horizon (days)": config.clv_horizon_days,
                     "churn test cutoff": churn_plan.test, "CLV test cutoff": clv_plan.test,
                     "training cutoffs": params["churn_train_cutoffs"],
                     "calibration": churn.calibrator.method, "MLflow run": run.info.run_id,
                     "promotion": decision.reason},
            notes=notes)

        bundle.metadata["run_id"] = run.info.run_id
        bundle_dir = bundle.save(out / "bundle")
        from mlflow.models import ModelSignature, infer_signature

        from churnguard.model.pyfunc import (
            ChurnguardPyfunc,
            input_example,
            input_schema,
            predict_frame,
        )

        example = input_example(bundle, grid[te])
        output = predict_frame(bundle, example)

        signature = ModelSignature(inputs=input_schema(spec),
                                   outputs=infer_signature(example, output).outputs)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ChurnguardPyfunc(),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature, input_example=example,
            registered_model_name=config.model_name, pip_requirements=_requirements(),
        )
        version = str(info.registered_model_version)

    client.set_registered_model_alias(config.model_name, CHALLENGER, version)
    tags = {"as_of": as_of.isoformat(), "test_cutoff": churn_plan.test.isoformat(),
            "clv_test_cutoff": clv_plan.test.isoformat(),
            "gate_decision": CHAMPION if decision.promote else CHALLENGER,
            "gate_reason": decision.reason,
            "compared_with": f"v{champ_version}" if champ_version else "none",
            "spec_fingerprint": spec.fingerprint(),
            "data_fingerprint": fingerprint["fingerprint"]}
    for key, value in tags.items():
        client.set_model_version_tag(config.model_name, version, key, value)
    if decision.promote:
        client.set_registered_model_alias(config.model_name, CHAMPION, version)
    say(f"registered {config.model_name} v{version}: "
        f"{'champion' if decision.promote else 'challenger'} ({decision.reason})")
    return TrainResult(run_id=run.info.run_id, version=version, promoted=decision.promote,
                       reason=decision.reason, as_of=as_of, churn_plan=churn_plan,
                       clv_plan=clv_plan, metrics=metrics,
                       model_uri=f"models:/{config.model_name}/{version}")


def _requirements() -> list[str]:
    import mlflow
    import sklearn
    import xgboost

    return [f"mlflow=={mlflow.__version__}", f"xgboost=={xgboost.__version__}",
            f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}",
            f"numpy=={np.__version__}", "churnguard"]


def _champion_if_registered(client: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return None
    return champion_version(client, name)


def _champion_metrics(
    source: Source, grid: pd.DataFrame, name: str, churn_plan: SplitPlan, clv_plan: SplitPlan
) -> dict[str, float]:
    """Score the champion (with its own feature spec) on the new test snapshots."""
    champion, _ = load_bundle(f"models:/{name}@{CHAMPION}")
    out: dict[str, float] = {}
    for cutoff, label, kind in ((churn_plan.test, "churned", "churn"),
                                (clv_plan.test, "future_spend", "clv")):
        feats = build_features(source, champion.spec, cutoff).to_pandas()
        labels = grid.loc[grid["as_of"] == cutoff, ["customer_id", label]]
        merged = feats.merge(labels, on="customer_id", how="inner")
        scores = score_matrix(champion, champion.encode(merged), drivers=False)
        if kind == "churn":
            m = evaluate.churn_metrics(merged[label].to_numpy(float),
                                       scores.churn_probability)
            out["churn_log_loss"] = m["log_loss"]
            out["churn_roc_auc"] = m["roc_auc"]
        else:
            m = evaluate.clv_metrics(merged[label].to_numpy(float), scores.clv)
            out["clv_mae"] = m["mae"]
            out["clv_normalized_gini"] = m["normalized_gini"]
    return out


def _log_report(
    out: Path,
    *,
    y: np.ndarray,
    churn_preds: dict[str, np.ndarray],
    churn_table: dict[str, dict[str, float]],
    spend: np.ndarray,
    clv_preds: dict[str, np.ndarray],
    clv_table: dict[str, dict[str, float]],
    importance: dict[str, float],
    descriptions: dict[str, str],
    context: dict[str, object],
    notes: list[str],
) -> None:
    """ROC/PR/reliability/gains, CLV deciles, importance plots and the one-page HTML report,
    logged under ``report/`` of the active run."""
    import mlflow

    from churnguard.training import report

    plots = out / "report"
    churn_imgs = report.churn_plots(y, churn_preds, plots)
    clv_imgs = report.clv_plots(spend, clv_preds, plots)
    imp_imgs = [report.importance_plot(importance, plots, descriptions,
                                       title="Churn model: feature importance (gain)")]
    sections = report.standard_sections(churn=churn_table, clv=clv_table,
                                        churn_images=churn_imgs, clv_images=clv_imgs,
                                        importance_images=imp_imgs)
    report.write_html_report(plots / "report.html", "churnguard model report", sections,
                             context=context, notes=notes)
    mlflow.log_artifacts(str(plots), artifact_path="report")
