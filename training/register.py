"""Step 6 of training: gate the new version against the champion, log the MLflow run and
register the pyfunc.

- **gate**: the current champion (if any) is scored, with its own feature spec, on the new
  test snapshots; :func:`churnguard.training.registry.promotion_decision` decides. A champion
  that cannot be scored is not beaten (promote by hand with ``--force``).
- **run**: parameters, metrics (with the champion's, the action effects', the churn ranking
  among customers active at the test cutoff (:func:`add_active_metrics`), every test metric's
  bootstrap interval and churnguard's paired differences to the baselines
  (:func:`add_interval_metrics`) and the run time),
  tags, JSON artifacts (feature spec, cutoffs, data fingerprint, metrics, evaluation tables,
  action effects) and the report (``report/``, README "Reading the model report").
- **model**: the bundle logged as the churnguard pyfunc and registered as a new version of
  ``config.model_name``; the version gets the ``challenger`` alias, the gate tags, and the
  ``champion`` alias when the gate says so.

MLflow is imported inside the functions, so importing this module (and the CLI) stays fast.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churnguard.features.build import build_features
from churnguard.features.sources import Source
from churnguard.model import evaluate
from churnguard.model.predictors import ClvModel
from churnguard.model.registry import Tracking, load_bundle
from churnguard.model.score import score_matrix
from churnguard.training.baselines import BTYD_CHURN, BTYD_CLV, LOGREG, SBG
from churnguard.training.bootstrap import DESCRIPTORS, Bootstrap
from churnguard.training.fitted import Fitted
from churnguard.training.registry import (
    CHALLENGER,
    CHAMPION,
    Comparison,
    Decision,
    baseline_decision,
    champion_version,
    class_count_problem,
    compare_in,
    promotion_decision,
)
from churnguard.training.split import SplitPlan

if TYPE_CHECKING:
    from churnguard.model.bundle import ScoringBundle
    from churnguard.training.uplift import UpliftReport

log = logging.getLogger(__name__)

#: The JSON artifacts of a run, in the order they are logged.
JSON_ARTIFACTS = ("feature_spec.json", "cutoffs.json", "data_fingerprint.json", "metrics.json",
                  "evaluation_tables.json", "action_effects.json", "reference_profile.json")


@dataclass(frozen=True)
class Gate:
    """The promotion decision and what it was based on."""

    decision: Decision
    #: The champion compared with, if there was one.
    champion_version: str | None = None
    #: The champion's scores on the new test snapshots, as ``champion_*`` run metrics.
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Registered:
    run_id: str
    version: str


def baseline_comparisons(fitted: Fitted) -> list[Comparison]:
    """churnguard against each baseline on the test snapshots, paired bootstrap intervals
    (the resamples of ``fitted.churn_bootstrap`` / ``clv_bootstrap``): churn log loss and ROC
    AUC against logistic regression and BG/NBD (sBG for a contractual label), CLV RMSE and
    |total error| against BG/NBD + Gamma-Gamma (baselines that could not be fitted are left
    out; README, "Promotion")."""
    out: list[Comparison] = []
    for name in (LOGREG, BTYD_CHURN, SBG):
        if name in fitted.churn_preds:
            out.append(compare_in(fitted.churn_bootstrap, fitted.churn_table, "churn log loss",
                                  "churnguard", name, "log_loss", higher_is_better=False))
            out.append(compare_in(fitted.churn_bootstrap, fitted.churn_table, "churn ROC AUC",
                                  "churnguard", name, "roc_auc", higher_is_better=True))
    if BTYD_CLV in fitted.clv_preds:
        values = {m: {**t, "abs_total_error": abs(t["total_error"])}
                  for m, t in fitted.clv_table.items()}
        out.append(compare_in(fitted.clv_bootstrap, values, "CLV RMSE", "churnguard", BTYD_CLV,
                              "rmse", higher_is_better=False))
        out.append(compare_in(fitted.clv_bootstrap, values, "CLV |total error|", "churnguard",
                              BTYD_CLV, "abs_total_error", higher_is_better=False))
    return out


def gate_against_baselines(fitted: Fitted) -> tuple[Decision, dict[str, float]]:
    """The part of the gate that needs no registry: enough churners and non-churners (buyers
    and non-buyers) in the test snapshots, then the baselines beaten beyond noise. The
    decision and the comparisons as ``gate_*`` run metrics."""
    config = fitted.config
    y = fitted.grid.loc[fitted.test_rows, "churned"].to_numpy(float)
    spend = fitted.grid.loc[fitted.clv_test_rows, "future_spend"].to_numpy(float)
    problems = [p for p in (
        class_count_problem(y, positive="churners", negative="non-churners", snapshot="churn",
                            min_positives=config.gate_min_positives,
                            min_negatives=config.gate_min_negatives),
        class_count_problem(spend > 0, positive="buyers", negative="non-buyers",
                            snapshot="CLV", min_positives=config.gate_min_positives,
                            min_negatives=config.gate_min_negatives)) if p]
    if problems:
        return Decision(False, "; ".join(problems)), {}
    comparisons = baseline_comparisons(fitted)
    metrics: dict[str, float] = {}
    for c in comparisons:
        key = "gate_" + "".join(ch if ch.isalnum() else "_" for ch in
                                f"{c.baseline}_{c.metric}".lower()).strip("_")
        metrics.update({f"{key}_gain_low": c.low, f"{key}_gain_high": c.high})
    return baseline_decision(comparisons), metrics


def gate_against_champion(source: Source, fitted: Fitted, client: Any) -> Gate:
    """Score the champion on the new test snapshots and decide whether the new version
    replaces it (the ``mlflow`` fluent API must point at the store: ``Tracking.activate``)."""
    against_baselines, gate_metrics = gate_against_baselines(fitted)
    gate = _gate_against_champion(source, fitted, client)
    if against_baselines.promote:
        return replace(gate, decision=Decision(
            gate.decision.promote, f"{against_baselines.reason}; {gate.decision.reason}"),
            metrics={**gate.metrics, **gate_metrics})
    reason = against_baselines.reason
    if gate.champion_version is not None and not gate.decision.promote:
        reason += f"; {gate.decision.reason}"
    return Gate(Decision(False, reason), gate.champion_version,
                {**gate.metrics, **gate_metrics})


def _gate_against_champion(source: Source, fitted: Fitted, client: Any) -> Gate:
    name = fitted.config.model_name
    new = {"churn_log_loss": fitted.churn_table["churnguard"]["log_loss"],
           "clv_mae": fitted.metrics["test_clv_mae"],
           "clv_normalized_gini": fitted.metrics.get("test_clv_normalized_gini", float("nan"))}
    champ_version = _champion_if_registered(client, name)
    if champ_version is None:
        return Gate(promotion_decision(new, None))
    log.info("scoring champion v%s on the same test snapshots", champ_version)
    try:
        champion, _ = load_bundle(f"models:/{name}/{champ_version}")
        mismatch = label_mismatch(champion, fitted.bundle)
        if mismatch:
            return Gate(Decision(False, f"champion v{champ_version} {mismatch}: the two are "
                                 "not compared; to replace it anyway, churnguard promote "
                                 "VERSION --force"), champ_version)
        champ = champion_metrics(source, fitted.grid, champion, fitted.churn_plan,
                                 fitted.clv_plan)
    except Exception as exc:  # a champion that cannot be loaded or scored is not beaten
        return Gate(Decision(False, f"champion v{champ_version} could not be scored on the new "
                             f"test snapshot ({type(exc).__name__}: {exc}); promote by hand "
                             "with --force"), champ_version)
    return Gate(promotion_decision(new, champ), champ_version,
                evaluate.run_metrics("champion_", champ))


def log_and_register(source: Source, fitted: Fitted, effects: UpliftReport, gate: Gate,
                     tracking: Tracking, client: Any, *, started: float) -> Registered:
    """Log the run (``train_seconds`` counts from ``started``, a ``time.perf_counter()``),
    register the bundle as a new version, set its aliases and tags.

    ``fitted.metrics`` gets the champion's metrics and ``train_seconds``; the bundle's
    metadata gets the run id.
    """
    import mlflow

    config, spec, bundle, decision = fitted.config, fitted.spec, fitted.bundle, gate.decision
    churn_plan, clv_plan, metrics = fitted.churn_plan, fitted.clv_plan, fitted.metrics
    assert bundle.churn.calibrator is not None
    add_active_metrics(fitted)
    add_interval_metrics(fitted)
    metrics.update(gate.metrics)
    log.info("logging the MLflow run, the report and the model, registering %s",
             config.model_name)
    with mlflow.start_run(experiment_id=tracking.experiment_id(config.experiment)) as run, \
            tempfile.TemporaryDirectory() as tmp:
        params = run_params(source, fitted)
        mlflow.log_params(params)
        mlflow.set_tags({"as_of": fitted.as_of.isoformat(), "model_name": config.model_name,
                         "gate_decision": CHAMPION if decision.promote else CHALLENGER,
                         "gate_reason": decision.reason})
        metrics["train_seconds"] = time.perf_counter() - started
        mlflow.log_metrics(metrics)
        mlflow.log_params({"uplift_min_customers": effects.min_customers,
                           "uplift_max_ci_width": effects.max_ci_width,
                           "uplift_actions_estimated": len(effects.estimated())})
        mlflow.log_metrics(effects.metrics())
        out = Path(tmp)
        _write_json_artifacts(out, fitted, effects)
        for name in JSON_ARTIFACTS:
            mlflow.log_artifact(str(out / name))
        _log_report(
            out, fitted,
            context={"as of": fitted.as_of, "churn horizon (days)": config.horizon_days,
                     "CLV horizon (days)": config.clv_horizon_days,
                     "churn test cutoff": churn_plan.test, "CLV test cutoff": clv_plan.test,
                     "training cutoffs": params["churn_train_cutoffs"],
                     "calibration": bundle.churn.calibrator.method,
                     "MLflow run": run.info.run_id,
                     "promotion": decision.reason})
        bundle.metadata["run_id"] = run.info.run_id
        version = _log_pyfunc(bundle.save(out / "bundle"), fitted)
    client.set_registered_model_alias(config.model_name, CHALLENGER, version)
    tags = {"as_of": fitted.as_of.isoformat(), "test_cutoff": churn_plan.test.isoformat(),
            "clv_test_cutoff": clv_plan.test.isoformat(),
            "gate_decision": CHAMPION if decision.promote else CHALLENGER,
            "gate_reason": decision.reason,
            "compared_with": f"v{gate.champion_version}" if gate.champion_version else "none",
            "spec_fingerprint": spec.fingerprint(),
            "data_fingerprint": fitted.fingerprint["fingerprint"],
            "churn_label": churn_label(bundle)}
    for key, value in tags.items():
        client.set_model_version_tag(config.model_name, version, key, value)
    if decision.promote:
        client.set_registered_model_alias(config.model_name, CHAMPION, version)
    log.info("registered %s v%s: %s (%s)", config.model_name, version,
             "champion" if decision.promote else "challenger", decision.reason)
    return Registered(run_id=run.info.run_id, version=version)


#: Run-metric prefix of each model of the churn table and of the CLV table.
_CHURN_PREFIXES = {"churnguard": "test_churn_", LOGREG: "test_baseline_logreg_churn_",
                   BTYD_CHURN: "test_baseline_btyd_churn_", SBG: "test_baseline_sbg_churn_"}
_CLV_PREFIXES = {"churnguard": "test_clv_", BTYD_CLV: "test_baseline_btyd_clv_"}
#: The baselines' short names in the run metrics of differences (``_diff_logreg_lo``).
_SHORT = {LOGREG: "logreg", BTYD_CHURN: "btyd", SBG: "sbg", BTYD_CLV: "btyd"}


def bootstrap_run_metrics(table: dict[str, dict[str, float]], boot: Bootstrap,
                          prefixes: dict[str, str]) -> dict[str, float]:
    """The bootstrap intervals of a metric table as run metrics beside the metrics they
    qualify: ``<metric>_lo`` / ``<metric>_hi`` for every model and metric (e.g.
    ``test_churn_roc_auc_lo``), and churnguard minus each baseline on the same resamples as
    ``<churnguard metric>_diff_<baseline>_lo`` / ``_hi`` (e.g.
    ``test_churn_log_loss_diff_logreg_hi``). Descriptions of the customers (base rate,
    shares, the actual total) are the same for every model and have no difference."""
    out: dict[str, float] = {}
    for model, prefix in prefixes.items():
        if model not in table or model not in boot.draws:
            continue
        for key in table[model]:
            if key in boot.draws[model]:
                low, high = boot.interval(model, key)
                out.update({f"{prefix}{key}_lo": low, f"{prefix}{key}_hi": high})
            if (model == "churnguard" or key in DESCRIPTORS or key not in boot.draws[model]
                    or key not in boot.draws["churnguard"]):
                continue
            low, high = boot.difference("churnguard", model, key)
            out.update({f"{prefixes['churnguard']}{key}_diff_{_SHORT[model]}_lo": low,
                        f"{prefixes['churnguard']}{key}_diff_{_SHORT[model]}_hi": high})
    return {k: v for k, v in out.items() if np.isfinite(v)}


def add_interval_metrics(fitted: Fitted) -> None:
    """:func:`bootstrap_run_metrics` of the churn and the CLV tables into ``fitted.metrics``."""
    fitted.metrics.update(bootstrap_run_metrics(fitted.churn_table, fitted.churn_bootstrap,
                                                _CHURN_PREFIXES))
    fitted.metrics.update(bootstrap_run_metrics(fitted.clv_table, fitted.clv_bootstrap,
                                                _CLV_PREFIXES))


def add_active_metrics(fitted: Fitted) -> None:
    """Churn ranking among the customers active at the churn test cutoff
    (:func:`churnguard.model.evaluate.active_churn_metrics`), for churnguard and each
    baseline: into ``fitted.churn_table`` (the report) and ``fitted.metrics`` (e.g.
    ``test_churn_roc_auc_active_365d``, ``churnguard train``'s table)."""
    test = fitted.grid.loc[fitted.test_rows]
    y = test["churned"].to_numpy(float)
    recency = test["days_since_last_purchase"].to_numpy(float)
    for name, pred in fitted.churn_preds.items():
        active = evaluate.active_churn_metrics(y, pred, recency)
        fitted.churn_table.setdefault(name, {}).update(active)
        if name in _CHURN_PREFIXES:
            fitted.metrics.update(evaluate.run_metrics(_CHURN_PREFIXES[name], active))


def run_params(source: Source, fitted: Fitted) -> dict[str, Any]:
    """The run's parameters: cutoffs, horizons, tree counts, fingerprints, booster settings."""
    config, spec, grid = fitted.config, fitted.spec, fitted.grid
    churn_plan, clv_plan = fitted.churn_plan, fitted.clv_plan
    churn, clv = fitted.bundle.churn, fitted.bundle.clv
    assert churn.calibrator is not None
    return {
        "as_of": fitted.as_of.isoformat(), "horizon_days": config.horizon_days,
        "churn_label": config.label, "grace_days": fitted.bundle.metadata.get("grace_days", 0),
        "clv_horizon_days": config.clv_horizon_days, "refit": config.refit,
        "seed": config.seed, "calibration": churn.calibrator.method,
        "churn_trees": fitted.churn_trees,
        **({"clv_buy_trees": clv.info["buy_trees"], "clv_spend_trees": clv.info["spend_trees"],
            "clv_smear": round(clv.smear, 6)} if isinstance(clv, ClvModel) else
           {"clv_sbg_alpha": round(clv.alpha, 6), "clv_sbg_beta": round(clv.beta, 6),
            "clv_daily_hazard": clv.daily_hazard}),
        "clv_model": clv.info.get("kind"), "clv_scale": round(clv.scale, 6),
        "churn_test_cutoff": churn_plan.test.isoformat(),
        "churn_valid_cutoff": churn_plan.valid.isoformat(),
        "churn_train_cutoffs": _cutoff_range(churn_plan),
        "clv_test_cutoff": clv_plan.test.isoformat(),
        "clv_valid_cutoff": clv_plan.valid.isoformat(),
        "clv_train_cutoffs": _cutoff_range(clv_plan),
        "data_fingerprint": fitted.fingerprint["fingerprint"],
        "feature_set_version": spec.version, "spec_fingerprint": spec.fingerprint(),
        "n_features": len(spec.feature_names()),
        "n_train_rows": int(grid["as_of"].isin(churn_plan.train).sum()),
        "source": source.location,
        **{f"xgb_{k}": v for k, v in config.boost.params().items()},
        "xgb_early_stopping_rounds": config.boost.early_stopping_rounds,
    }


def _cutoff_range(plan: SplitPlan) -> str:
    return f"{plan.train[0]}..{plan.train[-1]} ({len(plan.train)})"


def _write_json_artifacts(out: Path, fitted: Fitted, effects: UpliftReport) -> None:
    texts = {
        "feature_spec.json": json.dumps(fitted.spec.to_dict(), indent=2),
        "cutoffs.json": json.dumps({"as_of": fitted.as_of.isoformat(),
                                    "churn": fitted.churn_plan.to_dict(),
                                    "clv": fitted.clv_plan.to_dict()}, indent=2),
        "data_fingerprint.json": json.dumps(fitted.fingerprint, indent=2),
        "metrics.json": json.dumps(fitted.metrics, indent=2),
        "evaluation_tables.json": json.dumps(fitted.extra, indent=2, default=str),
        "action_effects.json": json.dumps(effects.to_dict(), indent=2),
        "reference_profile.json": json.dumps(
            fitted.bundle.metadata.get("reference_profile"), indent=2),
    }
    for name in JSON_ARTIFACTS:
        (out / name).write_text(texts[name])


def _log_pyfunc(bundle_dir: Path, fitted: Fitted) -> str:
    """Log the bundle as the churnguard pyfunc, registered under the model name; its version."""
    from churnguard.model.pyfunc import input_example, log_pyfunc

    return log_pyfunc(bundle_dir, registered_model_name=fitted.config.model_name,
                      input_example=input_example(fitted.bundle, fitted.grid[fitted.test_rows]),
                      pip_requirements=_requirements())


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


def churn_label(bundle: ScoringBundle) -> str:
    """What the bundle's churn probability is about, for people: ``contractual, 30 days +
    14 grace`` or ``noncontractual, 90 days``."""
    kind = str(bundle.metadata.get("label", "noncontractual"))
    grace = int(bundle.metadata.get("grace_days", 0))
    return f"{kind}, {bundle.horizon_days} days" + (f" + {grace} grace" if grace else "")


def label_mismatch(champion: ScoringBundle, candidate: ScoringBundle) -> str | None:
    """Why two bundles' churn scores are not comparable (their labels differ: kind, horizon,
    grace period), or None. A bundle trained before labels were recorded is non-contractual."""
    def label(b: ScoringBundle) -> tuple[str, int, int]:
        return (str(b.metadata.get("label", "noncontractual")), b.horizon_days,
                int(b.metadata.get("grace_days", 0)))

    (ck, ch, cg), (nk, nh, ng) = label(champion), label(candidate)
    if ck != nk:
        return f"predicts a {ck} churn label and this version a {nk} one"
    if (ch, cg) != (nh, ng):
        return (f"predicts churn over {ch} days (grace {cg}) and this version over {nh} days "
                f"(grace {ng})")
    if champion.clv_horizon_days != candidate.clv_horizon_days:
        return (f"predicts CLV over {champion.clv_horizon_days} days and this version over "
                f"{candidate.clv_horizon_days} days")
    return None


def champion_metrics(
    source: Source, grid: pd.DataFrame, champion: ScoringBundle, churn_plan: SplitPlan,
    clv_plan: SplitPlan
) -> dict[str, float]:
    """Score the champion (with its own feature spec) on the new test snapshots."""
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


def gain_importance(booster: Any) -> dict[str, float]:
    """Gain importance per feature of a single-output booster."""
    out: dict[str, float] = {}
    for name, value in booster.get_score(importance_type="gain").items():
        if isinstance(value, list):  # one value per output: multi-output trees only
            raise TypeError(f"feature {name!r} has one importance per output; expected one")
        out[name] = float(value)
    return out


def _log_report(out: Path, fitted: Fitted, *, context: dict[str, object]) -> None:
    """ROC/PR/reliability/gains, CLV deciles, importance plots and the one-page HTML report,
    logged under ``report/`` of the active run."""
    import mlflow

    from churnguard.training import report

    plots = out / "report"
    y = fitted.grid.loc[fitted.test_rows, "churned"].to_numpy(float)
    spend = fitted.grid.loc[fitted.clv_test_rows, "future_spend"].to_numpy(float)
    churn_imgs = report.churn_plots(y, fitted.churn_preds, plots)
    clv_imgs = report.clv_plots(spend, fitted.clv_preds, plots)
    gains = gain_importance(fitted.bundle.churn.booster)
    # A booster without a split (too few churners for the leaf minimum) predicts one number:
    # it has no importance to plot, and the notes say so.
    imp_imgs = [report.importance_plot(gains, plots, fitted.spec.descriptions(),
                                       title="Churn model: feature importance (gain)")
                ] if gains else []
    sections = report.standard_sections(churn=fitted.churn_table, clv=fitted.clv_table,
                                        churn_images=churn_imgs, clv_images=clv_imgs,
                                        importance_images=imp_imgs,
                                        clv_tables=[report.decile_table(
                                            fitted.extra["clv_deciles"])],
                                        churn_bootstrap=fitted.churn_bootstrap,
                                        clv_bootstrap=fitted.clv_bootstrap)
    report.write_html_report(plots / "report.html", "churnguard model report", sections,
                             context=context, notes=fitted.notes)
    mlflow.log_artifacts(str(plots), artifact_path="report")
