"""``churnguard monitor``: is the served model still right? (README, "Monitoring").

At an as-of date, from the source and the prediction log:

- **drift**: every feature's PSI and null rate against the bundle's reference profile
  (:mod:`churnguard.model.profile`; features with one value for every reference customer, the
  calendar's, are listed as ``not_compared``), and the PSI of the churn probabilities and CLVs the
  bundle gives the current customers;
- **estimated performance** before any label exists, from the calibrated probabilities
  (confidence-based performance estimation): if the model is calibrated, a customer with
  probability p churns with probability p, so the expected churn rate is mean(p), the expected
  log loss the mean binary entropy, and the ROC AUC is distributed as the AUC of labels drawn
  from p (Monte Carlo, 5-95 % band);
- **realized performance** of every logged batch run (prediction log, ``channel = batch``)
  whose churn label window has closed by the as-of date: ROC AUC, PR AUC, log loss and expected
  calibration error against the labels the data now holds (the bundle's label definition), and
  the CLV total error once the CLV window has closed too;
- **a verdict**: ``ok``, ``warn`` or ``alert`` by the settings' thresholds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from churnguard.features.build import LabelMode, build_features, label_sql
from churnguard.features.io import atomic_output
from churnguard.features.sources import Source
from churnguard.model.bundle import ScoringBundle
from churnguard.model.profile import population_stability_index
from churnguard.model.score import score_matrix
from churnguard.serving.predlog import read_prediction_log

Verdict = Literal["ok", "warn", "alert"]
_ORDER: dict[str, int] = {"ok": 0, "warn": 1, "alert": 2}
#: Labels drawn from the probabilities for the estimated ROC AUC.
ESTIMATE_DRAWS = 200
#: Bins of the expected calibration error.
ECE_BINS = 10


@dataclass(frozen=True)
class Thresholds:
    """When a number turns a verdict to ``warn`` or ``alert`` (README, "Monitoring")."""

    psi_warn: float = 0.1
    psi_alert: float = 0.25
    null_rate_change_warn: float = 0.05
    auc_drop_alert: float = 0.05
    ece_alert: float = 0.05


def _status(psi: float, null_change: float, t: Thresholds) -> Verdict:
    if psi >= t.psi_alert:
        return "alert"
    if psi >= t.psi_warn or null_change >= t.null_rate_change_warn:
        return "warn"
    return "ok"


def _point_mass(entry: dict[str, Any]) -> bool:
    """A reference with one non-null value and no nulls."""
    shares = (list(entry["shares"].values()) if entry["kind"] == "categorical"
              else entry["shares"])
    return bool(shares) and max(shares) >= 1.0 - 1e-12 and float(entry["null_rate"]) == 0.0


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by ranks (ties averaged); NaN with one class only."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(p)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(np.asarray(p, dtype=float), 1e-15, 1 - 1e-15)
    y = np.asarray(y, dtype=float)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ_b (n_b / n) |mean(y_b) − mean(p_b)| over equal-width probability bins."""
    idx = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(float(np.mean(y[m])) - float(np.mean(p[m])))
    return total


def estimated_performance(p: np.ndarray, *, seed: int = 0,
                          draws: int = ESTIMATE_DRAWS) -> dict[str, Any]:
    """Expected churn rate, ROC AUC (mean and 5-95 % band over labels drawn from ``p``) and
    log loss (the mean binary entropy) of calibrated probabilities ``p``."""
    p = np.clip(np.asarray(p, dtype=float), 1e-15, 1 - 1e-15)
    rng = np.random.default_rng(seed)
    aucs = np.array([roc_auc(rng.random(p.size) < p, p) for _ in range(draws)])
    aucs = aucs[np.isfinite(aucs)]
    entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    return {"churn_rate": float(p.mean()),
            "roc_auc": float(aucs.mean()) if aucs.size else None,
            "roc_auc_band": [float(np.quantile(aucs, 0.05)), float(np.quantile(aucs, 0.95))]
            if aucs.size else None,
            "log_loss": float(entropy.mean()), "n": int(p.size)}


def realized_performance(source: Source, bundle: ScoringBundle, log_root: Path,
                         as_of: date) -> list[dict[str, Any]]:
    """One entry per logged batch run (as-of date, model version) whose churn label window
    ends by ``as_of``, oldest first."""
    logged = read_prediction_log(log_root).to_pandas()
    logged = logged[logged["channel"] == "batch"]
    if logged.empty:
        return []
    label = str(bundle.metadata.get("label", "noncontractual"))
    grace = int(bundle.metadata.get("grace_days", 0))
    h, hc = bundle.horizon_days, bundle.clv_horizon_days
    out: list[dict[str, Any]] = []
    for (scored, version), run in logged.groupby(["scored_as_of", "model_version"], sort=True):
        t0 = pd.Timestamp(scored).date()
        if t0 + timedelta(days=h + grace) > as_of:
            continue  # the label window is still open
        mode: LabelMode = "contractual" if label == "contractual" else "noncontractual"
        labels = source.con.sql(label_sql(t0, h, hc, mode, grace_days=grace)).to_df()
        joined = run.merge(labels, on="customer_id", how="inner")
        y = joined["churned"].to_numpy(dtype=float)
        p = joined["churn_probability"].to_numpy(dtype=float)
        entry: dict[str, Any] = {
            "scored_as_of": t0.isoformat(), "model_version": str(version), "n": len(y),
            "n_logged": len(run), "churn_rate": float(y.mean()) if len(y) else None,
            "roc_auc": roc_auc(y, p), "pr_auc": _pr_auc(y, p), "log_loss": log_loss(y, p),
            "ece": expected_calibration_error(y, p), "clv_total_error": None}
        if t0 + timedelta(days=hc) <= as_of and "future_spend" in joined:
            actual = float(joined["future_spend"].sum())
            predicted = float(joined["clv"].sum())
            entry["clv_total_error"] = (predicted - actual) / actual if actual > 0 else None
        out.append(entry)
    return out


def _pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p)) if 0 < y.sum() < y.size else float("nan")


def monitor(source: Source, bundle: ScoringBundle, model_version: str, *, as_of: date,
            log_root: Path, thresholds: Thresholds | None = None) -> dict[str, Any]:
    """The monitoring report of ``bundle`` at ``as_of`` (the keys of ``monitor.json``)."""
    t = thresholds or Thresholds()
    reference = bundle.metadata.get("reference_profile")
    if not reference:
        raise ValueError("this model version has no reference profile (trained before "
                         "churnguard stored one): retrain it to monitor it")
    current = build_features(source, bundle.spec, as_of).to_pandas()
    full = score_matrix(bundle, bundle.encode(current), drivers=False)
    features = []
    constant: list[str] = []
    for name, entry in reference["features"].items():
        if _point_mass(entry):
            # The same value for every reference customer (a calendar feature such as the
            # season): any other date moves all of it, which says nothing about the data.
            constant.append(name)
            continue
        col = current[name] if name in current else pd.Series([None] * len(current))
        null_rate = float(col.isna().mean()) if len(col) else 0.0
        psi = population_stability_index(entry, col)
        change = abs(null_rate - float(entry["null_rate"]))
        features.append({"name": name, "psi": psi, "null_rate": null_rate,
                         "reference_null_rate": float(entry["null_rate"]),
                         "status": _status(psi, change, t)})
    features.sort(key=lambda f: -f["psi"])
    score_psi = population_stability_index(reference["churn_probability"],
                                           full.churn_probability)
    clv_psi = population_stability_index(reference["clv"], full.clv)
    realized = realized_performance(source, bundle, log_root, as_of)
    test_auc = bundle.metadata.get("test_roc_auc")
    reasons: list[str] = []
    verdict: Verdict = "ok"

    def raise_to(level: Verdict, why: str) -> None:
        nonlocal verdict
        reasons.append(f"{level}: {why}")
        if _ORDER[level] > _ORDER[verdict]:
            verdict = level

    for f in features:
        if f["status"] != "ok":
            raise_to(f["status"], f"{f['name']} PSI {f['psi']:.3f}, null rate "
                     f"{f['reference_null_rate']:.1%} -> {f['null_rate']:.1%}")
    for what, psi in (("churn probability", score_psi), ("CLV", clv_psi)):
        if psi >= t.psi_warn:
            raise_to("alert" if psi >= t.psi_alert else "warn", f"{what} PSI {psi:.3f}")
    for r in realized:
        if r["ece"] is not None and r["ece"] >= t.ece_alert:
            raise_to("alert", f"scored {r['scored_as_of']}: calibration error {r['ece']:.3f}")
        if test_auc is not None and np.isfinite(r["roc_auc"]) and (
                float(test_auc) - r["roc_auc"] >= t.auc_drop_alert):
            raise_to("alert", f"scored {r['scored_as_of']}: ROC AUC {r['roc_auc']:.3f} vs "
                     f"{float(test_auc):.3f} at training")
    return {"verdict": verdict, "reasons": reasons, "as_of": as_of.isoformat(),
            "model_version": model_version, "reference_snapshot": reference["snapshot"],
            "customers": len(current), "features": features, "not_compared": constant,
            "score": {"psi": score_psi}, "clv": {"psi": clv_psi},
            "estimated": estimated_performance(full.churn_probability),
            "realized": realized,
            "thresholds": {k: getattr(t, k) for k in t.__dataclass_fields__}}


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """``out_dir/monitor.json`` (NaN written as null)."""
    path = out_dir / "monitor.json"

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(clean(report), indent=2))
    return path
