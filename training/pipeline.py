"""``churnguard train`` as plain functions: the training steps, in order.

1. **plan split** (:mod:`~churnguard.training.split`): purged out-of-time cutoffs per target;
   then the snapshot grid and its model matrix (:mod:`~churnguard.training.data`) and the BTYD
   priors the candidates can boost from (:mod:`~churnguard.training.priors`);
2. **fit churn** (:mod:`~churnguard.training.churn`): candidates with early stopping,
   calibration chosen by cross-fitted validation log loss, refits;
3. **fit CLV** (:mod:`~churnguard.training.clv`): hurdle-model candidates, cross-fitted MAE,
   refit, total scale; for a contractual label the fee times the sBG retention curve;
4. **baselines** (:mod:`~churnguard.training.baselines`): logistic regression, BG/NBD +
   Gamma-Gamma;
5. **evaluate**: every step measures its models on the test snapshots with
   :mod:`~churnguard.model.evaluate`; :func:`fit_models` collects the results (:class:`Fitted`)
   and bootstraps every model's metrics on the same resamples of the test customers
   (:func:`bootstrap_test_snapshots`);
6. **register** (:mod:`~churnguard.training.register`): promotion gate against the champion on
   the same snapshots, MLflow run, registered pyfunc version, aliases and tags.

:func:`fit_models` runs steps 1-5 (no MLflow); :func:`train` adds the action effects measured
on the campaign log and step 6. Progress notes and warnings go to the ``churnguard`` logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from churnguard.features.build import build_features, infer_spec
from churnguard.features.sources import Source
from churnguard.model.bundle import ScoringBundle
from churnguard.model.profile import reference_profile
from churnguard.model.registry import Tracking
from churnguard.model.score import score_matrix
from churnguard.training.baselines import fit_baselines
from churnguard.training.bootstrap import (
    CHURN_METRICS,
    CLV_METRICS,
    Bootstrap,
    active_churn_metrics,
    bootstrap,
    interval_metrics,
)
from churnguard.training.churn import fit_churn_model
from churnguard.training.clv import fit_clv_model, fit_contract_clv_model
from churnguard.training.config import TrainConfig
from churnguard.training.data import data_fingerprint, data_window, training_data
from churnguard.training.fitted import Fitted
from churnguard.training.priors import (
    Candidate,
    candidates,
    fit_snapshot_priors,
    sbg_snapshot_priors,
)
from churnguard.training.register import gate_against_champion, log_and_register
from churnguard.training.split import PlanError, SplitPlan, plan_targets

__all__ = ["Fitted", "TrainConfig", "TrainResult", "fit_models", "train"]

log = logging.getLogger(__name__)


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


def fit_models(
    source: Source,
    *,
    as_of: date | None = None,
    config: TrainConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Fitted:
    """Plan the split, build the grid, fit churn + CLV models and baselines, evaluate on test.

    Only rows strictly before ``as_of`` (default: the day after the last row) are read.
    ``progress(done, total)`` is called after each snapshot of the grid.
    """
    config = config or TrainConfig()
    first, default_as_of = data_window(source)
    as_of = as_of or default_as_of

    # 1. plan split, grid, priors
    if config.label == "contractual" and not source.has("subscriptions"):
        raise PlanError("a contractual churn model needs a subscriptions table in the source")
    # A contractual label reads the grace period after the horizon too.
    grace = config.grace_days if config.label == "contractual" else 0
    plans = plan_targets(first, as_of, horizon_days=config.horizon_days + grace,
                         clv_horizon_days=config.clv_horizon_days,
                         clv_horizon_auto=config.clv_horizon_auto,
                         min_history_days=config.min_history_days,
                         max_train_cutoffs=config.max_train_cutoffs)
    churn_plan, clv_plan = plans.churn, plans.clv
    if clv_plan.label_days != config.clv_horizon_days:
        config = replace(config, clv_horizon_days=clv_plan.label_days)
    spec = infer_spec(source, as_of=as_of)
    log.info("as of %s: churn test %s, validation %s, %d training cutoffs; CLV (%d days) test "
             "%s, validation %s, %d training cutoffs", as_of, churn_plan.test, churn_plan.valid,
             len(churn_plan.train), config.clv_horizon_days, clv_plan.test, clv_plan.valid,
             len(clv_plan.train))
    data = training_data(source, spec, as_of=as_of, churn_plan=churn_plan, clv_plan=clv_plan,
                         label=config.label, grace_days=grace, progress=progress)
    churn_rows, clv_rows = data.split_rows(churn_plan), data.split_rows(clv_plan)
    if config.label == "contractual":
        # BG/NBD describes purchases at will; a subscription's invoices follow its terms, so
        # the churn model boosts from the sBG's renewal calendar instead.
        priors = sbg_snapshot_priors(data, churn_rows.train, churn_rows.all,
                                     config.horizon_days + grace)
        log.info("contractual label: the sBG prior (renewal decisions), no BG/NBD prior")
    else:
        priors = fit_snapshot_priors(source, spec, data, as_of, seed=config.seed)
    tried = candidates(config.boost, priors)
    if config.label == "contractual":
        # Churners are few in a subscription book (1-3 % a month): a shallower, more
        # regularised booster competes, chosen like the others by validation log loss.
        tried.append(Candidate("xgboost_shallow", False, (),
                               replace(config.boost, max_depth=2, min_child_weight=20.0)))

    # 2.-4. fit churn, fit CLV, baselines (each evaluated on its test snapshot)
    churn = fit_churn_model(data, churn_rows, priors, tried, config)
    if config.label == "contractual":
        clv = fit_contract_clv_model(data, churn_rows, clv_rows, replace(config, grace_days=grace),
                                     test_cutoff=clv_plan.test)
    else:
        clv = fit_clv_model(data, clv_rows, priors, tried, config, valid_cutoff=clv_plan.valid,
                            test_cutoff=clv_plan.test)
    base = fit_baselines(data, churn_rows, clv_rows, config)

    # 5. collect
    fingerprint = data_fingerprint(source, as_of)
    bundle = ScoringBundle(
        spec=spec, levels=data.levels, churn=churn.model, clv=clv.model,
        horizon_days=config.horizon_days, clv_horizon_days=config.clv_horizon_days,
        metadata={"as_of": as_of.isoformat(), "churn_plan": churn_plan.to_dict(),
                  "label": config.label, "grace_days": grace,
                  "clv_plan": clv_plan.to_dict(), "data_fingerprint": fingerprint["fingerprint"],
                  "spec_fingerprint": spec.fingerprint(), "feature_set_version": spec.version,
                  "calibration": churn.chosen.calibration.calibrator.method,
                  "refit": config.refit, "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
                  "test_roc_auc": churn.test_metrics["roc_auc"],
                  # What monitoring's estimate corrects its probabilities by (serving/monitor).
                  "test_reliability": {
                      k: churn.reliability[k].tolist()
                      for k in ("mean_predicted", "observed_rate", "count")}})
    # The reference the monitoring of this version compares later data with: the customers as
    # of the training date and the shipped bundle's outputs on them (model/profile.py). Not the
    # test snapshot: it is a label window (and grace period) older, so ages, tenures and the
    # season drift from it by construction and every monitor run would start with a warning.
    reference = build_features(source, spec, as_of).to_pandas()
    outputs = score_matrix(bundle, bundle.encode(reference), drivers=False)
    bundle.metadata["reference_profile"] = reference_profile(
        reference, {f.name: f.kind for f in spec.features()}, data.levels,
        churn_probability=outputs.churn_probability, clv=outputs.clv,
        snapshot=as_of.isoformat())
    churn_preds = {"churnguard": churn.test_pred, **base.churn_preds}
    clv_preds = {"churnguard": clv.test_pred, **base.clv_preds}
    churn_boot, clv_boot = bootstrap_test_snapshots(data.grid, churn_rows.test, clv_rows.test,
                                                    churn_preds, clv_preds, clv.test_interval)
    return Fitted(
        as_of=as_of, config=config, churn_plan=churn_plan, clv_plan=clv_plan, spec=spec,
        grid=data.grid, bundle=bundle, metrics={**churn.metrics, **clv.metrics, **base.metrics},
        extra={"churn_reliability": churn.reliability.to_dict("list"),
               "clv_deciles": clv.deciles.to_dict("list")},
        notes=[*churn.notes, *clv.notes, *base.notes],
        churn_preds=churn_preds,
        churn_table={"churnguard": churn.test_metrics, **base.churn_table},
        clv_preds=clv_preds,
        clv_table={"churnguard": clv.test_metrics, **base.clv_table},
        fingerprint=fingerprint, churn_trees=churn.n_trees,
        test_rows=churn_rows.test, clv_test_rows=clv_rows.test,
        churn_bootstrap=churn_boot, clv_bootstrap=clv_boot)


def bootstrap_test_snapshots(
    grid: pd.DataFrame, churn_test: np.ndarray, clv_test: np.ndarray,
    churn_preds: dict[str, np.ndarray], clv_preds: dict[str, np.ndarray],
    interval: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> tuple[Bootstrap, Bootstrap]:
    """Every model's test metrics on the same bootstrap resamples of the churn test
    customers, and of the CLV test customers (:mod:`~churnguard.training.bootstrap`, Efron &
    Tibshirani 1993): intervals of each metric and paired differences to the baselines for
    the gate, the run metrics and the report."""
    started = time.perf_counter()
    test = grid.loc[churn_test]
    y = test["churned"].to_numpy(float)
    churn = bootstrap(y, churn_preds, {
        **CHURN_METRICS, **active_churn_metrics(test["days_since_last_purchase"].to_numpy(float))})
    spend = grid.loc[clv_test, "future_spend"].to_numpy(float)
    clv = bootstrap(spend, clv_preds, CLV_METRICS,
                    extra={"churnguard": interval_metrics(spend, *interval)} if interval else None)
    log.info("bootstrap intervals: %d resamples of %d churn and %d CLV test customers in %.1f s",
             churn.resamples, y.size, spend.size, time.perf_counter() - started)
    return churn, clv


def train(
    source: Source,
    tracking: Tracking,
    *,
    as_of: date | None = None,
    config: TrainConfig | None = None,
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
    from churnguard.model.policy import load_catalog
    from churnguard.training import uplift

    started = time.perf_counter()
    # The catalog and the campaign log are checked before the long fit, so bad input fails
    # fast. The effects need only the as-of date and the churn horizon, which the fit keeps.
    catalog = load_catalog(actions_catalog)
    policy, effects = uplift.estimate_from_source(
        source, catalog, as_of=as_of or data_window(source)[1],
        horizon_days=(config or TrainConfig()).horizon_days,
        min_customers=uplift.MIN_CUSTOMERS if uplift_min_customers is None
        else uplift_min_customers,
        max_ci_width=uplift.MAX_CI_WIDTH if uplift_max_ci_width is None
        else uplift_max_ci_width)
    fitted = fit_models(source, as_of=as_of, config=config, progress=progress)
    if source.has("campaigns"):
        log.info("%s", effects.summary())
    # The action policy (catalog + campaign-log effects) travels in the bundle; value tiers are
    # CLV quantiles of the latest (test) snapshot's predictions, fixed now so every scorer tiers
    # customers the same way.
    fitted.bundle.policy = policy.model_copy(update={"label": fitted.config.label}).fit_value_tiers(
        fitted.clv_preds["churnguard"]).to_dict()

    # 6. register
    tracking.activate()
    client = tracking.client()
    gate = gate_against_champion(source, fitted, client)
    registered = log_and_register(source, fitted, effects, gate, tracking, client,
                                  started=started)
    name = fitted.config.model_name
    return TrainResult(run_id=registered.run_id, version=registered.version,
                       promoted=gate.decision.promote, reason=gate.decision.reason,
                       as_of=fitted.as_of, churn_plan=fitted.churn_plan,
                       clv_plan=fitted.clv_plan, metrics=fitted.metrics,
                       model_uri=f"models:/{name}/{registered.version}")
