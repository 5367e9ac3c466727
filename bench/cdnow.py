"""The real-data benchmark: churnguard against the classic models on the CDNOW master file.

CDNOW (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way", Marketing Science
24(2)) holds every purchase from 1997-01-01 to 1998-06-30 of the 23,570 customers whose first
purchase at CDNOW was in 1997-Q1. This script

1. converts the master file to churnguard's data contract (``customers``: customer_id,
   signup_date = first purchase day; ``transactions``: one row per master-file row, ts = date,
   amount = dollar_value, quantity = number_of_cds, order_id = the row number, so that two
   identical rows on one day stay two orders instead of being dropped as exact duplicates);
2. for each protocol runs the real CLI as a user would, in a fresh MLflow store:
   ``churnguard train --data D --as-of A --horizon-days H --clv-horizon-days H`` then
   ``churnguard score --data D --as-of A --out S`` (the champion);
3. computes the truth from the rows on/after A: churned = no purchase (a row with a positive
   amount, churnguard's definition) in [A, A + H); spend = total amount in the window;
4. fits the classic anchors on the rows before A only, in the same run: BG/NBD [FHL05] and
   Pareto/NBD [SMC87] with Gamma-Gamma spend [FHL05b] (calibration period = all data before A;
   same-day purchases collapse into one transaction), and logistic regression and plain
   XGBoost [CG16] on RFM features (fitted on the features at A - H with the labels of
   [A - H, A), applied at A);
5. writes ``bench/results/cdnow.json`` and ``bench/results/cdnow.md``: every metric, both
   protocols, churnguard beside each anchor and beside the issue's best-anchor figures, with a
   pass/FAIL per row.

Protocols: F13 (as of 1998-04-01, 13 weeks = 91 days) and F26 (as of 1998-01-01, 26 weeks =
182 days). Run: ``.venv/bin/python bench/cdnow.py`` (a few minutes on 2 cores).

References: [FHL05] Fader, Hardie & Lee (2005), Marketing Science 24(2); [FHL05b] Fader,
Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for Customer Base Analysis", JMR
42(4); [SMC87] Schmittlein, Morrison & Colombo (1987), "Counting Your Customers", Management
Science 33(1); [CG16] Chen & Guestrin (2016), KDD.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_MASTER = HERE / "cdnow_data" / "CDNOW_master.txt.gz"


@dataclass(frozen=True)
class Protocol:
    name: str
    as_of: date
    horizon_days: int


PROTOCOLS = {
    "F13": Protocol("F13", date(1998, 4, 1), 91),
    "F26": Protocol("F26", date(1998, 1, 1), 182),
}

#: The issue's best classic-model figures (best of BG/NBD, Pareto/NBD, logistic regression and
#: XGBoost variants per metric, measured on the same protocols).
ISSUE_BEST: dict[str, dict[str, float]] = {
    "F13": {"roc_auc": 0.840, "pr_auc_active": 0.540, "log_loss": 0.298, "brier": 0.089,
            "normalized_gini": 0.784, "spearman": 0.410, "mae": 11.09, "total_error": 0.097},
    "F26": {"roc_auc": 0.804, "pr_auc_active": 0.617, "log_loss": 0.421, "brier": 0.131,
            "normalized_gini": 0.743, "spearman": 0.484, "mae": 19.01, "total_error": 0.013},
}

#: (key, label, kind, direction): kind says which metric dict it comes from; direction +1 means
#: higher is better, -1 lower is better, 0 means |value| lower is better.
ROWS: list[tuple[str, str, str, int]] = [
    ("roc_auc", "active/churn ROC AUC", "churn", 1),
    ("pr_auc_active", "PR AUC (active)", "churn", 1),
    ("log_loss", "log loss", "churn", -1),
    ("brier", "Brier", "churn", -1),
    ("normalized_gini", "spend normalized Gini", "clv", 1),
    ("spearman", "spend Spearman", "clv", 1),
    ("mae", "spend MAE ($)", "clv", -1),
    ("total_error", "total spend error", "clv", 0),
]
TOTAL_ERROR_TARGET = 0.05


# ---------------------------------------------------------------------------------------------
# Data


def read_master(path: Path) -> pd.DataFrame:
    """The master file as a frame: customer_id (str), day (Timestamp), cds, dollars."""
    raw = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str, "date": str})
    return pd.DataFrame({
        "customer_id": raw["customer_id"].astype(str),
        "day": pd.to_datetime(raw["date"], format="%Y%m%d"),
        "cds": raw["number_of_cds"].astype("int64"),
        "dollars": raw["dollar_value"].astype(float),
    })


def write_contract(master: pd.DataFrame, out: Path) -> None:
    """customers.parquet + transactions.parquet in the data contract."""
    out.mkdir(parents=True, exist_ok=True)
    first = master.groupby("customer_id")["day"].min()
    customers = pd.DataFrame({"customer_id": first.index.to_numpy(),
                              "signup_date": first.dt.date.to_numpy()})
    customers.to_parquet(out / "customers.parquet", index=False)
    txn = pd.DataFrame({
        "customer_id": master["customer_id"],
        "ts": master["day"],
        "amount": master["dollars"],
        "order_id": [f"r{i}" for i in range(len(master))],
        "quantity": master["cds"],
    })
    txn.to_parquet(out / "transactions.parquet", index=False)


def truth(master: pd.DataFrame, as_of: date, horizon_days: int) -> pd.DataFrame:
    """churned / spend in [as_of, as_of + horizon) for every customer who signed up before."""
    a = pd.Timestamp(as_of)
    end = a + pd.Timedelta(days=horizon_days)
    pop = master.loc[master["day"] < a, "customer_id"].unique()
    win = master[(master["day"] >= a) & (master["day"] < end)]
    bought = set(win.loc[win["dollars"] > 0, "customer_id"])
    spend = win.groupby("customer_id")["dollars"].sum()
    out = pd.DataFrame({"customer_id": np.sort(pop)})
    out["churned"] = (~out["customer_id"].isin(bought)).astype(float)
    out["spend"] = out["customer_id"].map(spend).fillna(0.0).clip(lower=0.0)
    return out


# ---------------------------------------------------------------------------------------------
# churnguard through its CLI


def run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def churnguard_scores(data: Path, proto: Protocol, work: Path, log: Path, seed: int = 0
                      ) -> tuple[pd.DataFrame, dict[str, Any]]:
    exe = str(Path(sys.executable).parent / "churnguard")
    store = work / f"store-{proto.name}-seed{seed}"
    shutil.rmtree(store, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CHURNGUARD_"))}
    env["CHURNGUARD_DATA_DIR"] = str(store)
    h = str(proto.horizon_days)
    train_cmd = [exe, "train", "--data", str(data), "--as-of", proto.as_of.isoformat(),
                 "--horizon-days", h, "--clv-horizon-days", h, "--experiment",
                 f"cdnow-{proto.name}", *(["--seed", str(seed)] if seed else [])]
    out = work / f"scores-{proto.name}-seed{seed}.parquet"
    score_cmd = [exe, "score", "--data", str(data), "--as-of", proto.as_of.isoformat(),
                 "--out", str(out)]
    t_train = run(train_cmd, env, log)
    from common import force_champion
    gate = force_champion(store)  # the bench measures the version it trained
    t_score = run(score_cmd, env, log)
    return pd.read_parquet(out), {"train_command": " ".join(train_cmd[1:]),
                                  "score_command": " ".join(score_cmd[1:]),
                                  "train_seconds": round(t_train, 1),
                                  "score_seconds": round(t_score, 1), "gate": gate}


# ---------------------------------------------------------------------------------------------
# Anchors, fitted on the rows before as_of only


def _txn(master: pd.DataFrame) -> pd.DataFrame:
    return master.rename(columns={"day": "ts", "dollars": "amount"})[
        ["customer_id", "ts", "amount"]]


def btyd_anchors(master: pd.DataFrame, as_of: date, horizon_days: int,
                 ids: pd.Series) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(churn probability, expected spend) of BG/NBD and Pareto/NBD, each with Gamma-Gamma."""
    from churnguard.model.btyd import (
        BetaGeoModel,
        GammaGammaModel,
        ParetoNBDModel,
        customer_lifetime_value,
        rfm_summary,
    )

    rfm = rfm_summary(_txn(master), as_of=as_of, include_zero_amounts=True).reindex(
        ids.to_numpy())
    if rfm.isna().any().any():
        raise RuntimeError("a scored customer has no purchase before as_of")
    x, t_x, T = (rfm[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    m = rfm["monetary_value"].to_numpy(float)
    rep = (x > 0) & (m > 0)
    gg = GammaGammaModel().fit(x[rep], m[rep])
    weeks = horizon_days / 7.0
    out = {}
    for name, model in (("BG/NBD", BetaGeoModel()), ("Pareto/NBD", ParetoNBDModel())):
        model.fit(x, t_x, T)
        p0 = np.asarray(model.probability_no_purchase(weeks, x, t_x, T), dtype=float)
        clv = np.asarray(customer_lifetime_value(model, gg, x, t_x, T, m, t=weeks), dtype=float)
        out[f"{name} + GG"] = (p0, clv)
    return out


def btyd_level_by_cutoff(master: pd.DataFrame, as_of: date, horizon_days: int
                         ) -> list[dict[str, Any]]:
    """For every month start c from April 1997 to ``as_of`` (the protocol's own forward window
    last): the total spend in [c, c + horizon), and BG/NBD + Gamma-Gamma's prediction of it when
    fitted on the rows before c (as in :func:`btyd_anchors`). How far the prediction is off
    month by month shows how much of a window's total the history at its cutoff cannot tell."""
    from churnguard.model.btyd import (
        BetaGeoModel,
        GammaGammaModel,
        customer_lifetime_value,
        rfm_summary,
    )

    rows = []
    c = pd.Timestamp(master["day"].min()).normalize() + pd.offsets.MonthBegin(3)
    while c <= pd.Timestamp(as_of):
        rfm = rfm_summary(_txn(master), as_of=c.date(), include_zero_amounts=True)
        x, t_x, T = (rfm[col].to_numpy(float) for col in ("frequency", "recency", "T"))
        m = rfm["monetary_value"].to_numpy(float)
        rep = (x > 0) & (m > 0)
        gg = GammaGammaModel().fit(x[rep], m[rep])
        bg = BetaGeoModel().fit(x, t_x, T)
        pred = float(np.sum(customer_lifetime_value(bg, gg, x, t_x, T, m,
                                                    t=horizon_days / 7.0)))
        actual = float(truth(master, c.date(), horizon_days)["spend"].sum())
        rows.append({"cutoff": c.date().isoformat(), "actual": actual, "predicted": pred,
                     "error": pred / actual - 1.0})
        c += pd.offsets.MonthBegin(1)
    return rows


def rfm_features(master: pd.DataFrame, cutoff: date, ids: pd.Series) -> pd.DataFrame:
    """Plain RFM features at ``cutoff`` (rows before it): the inputs of the LR/XGBoost anchors."""
    c = pd.Timestamp(cutoff)
    past = master[master["day"] < c]
    g = past.groupby("customer_id")
    days = past[past["dollars"] > 0].groupby("customer_id")["day"]
    f = pd.DataFrame({
        "recency_days": (c - days.max()).dt.days,
        "age_days": (c - g["day"].min()).dt.days,
        "purchase_days": days.nunique(),
        "orders": g.size(),
        "spend_total": g["dollars"].sum(),
        "cds_total": g["cds"].sum(),
    })
    recent = past[past["day"] >= c - pd.Timedelta(days=91)].groupby("customer_id")["dollars"]
    f["spend_91d"] = recent.sum()
    f = f.reindex(ids.to_numpy())
    f = f.fillna({"spend_91d": 0.0, "purchase_days": 0, "recency_days": f["age_days"]})
    f["avg_value"] = f["spend_total"] / f["orders"].clip(lower=1)
    for col in ("spend_total", "spend_91d", "avg_value", "purchase_days", "orders", "cds_total"):
        f[f"log_{col}"] = np.log1p(f[col].clip(lower=0))
    return f.astype(float)


def supervised_anchors(master: pd.DataFrame, as_of: date, horizon_days: int,
                       ids: pd.Series) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """Logistic regression (churn) and plain XGBoost (churn, spend) on RFM features, trained on
    the cutoff ``as_of - horizon`` (its labels end at ``as_of``) and applied at ``as_of``."""
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_cut = as_of - timedelta(days=horizon_days)
    lab = truth(master, train_cut, horizon_days)
    Xtr = rfm_features(master, train_cut, lab["customer_id"])
    Xte = rfm_features(master, as_of, ids)
    y = lab["churned"].to_numpy()
    s = lab["spend"].to_numpy()
    out: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
    lr = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    lr.fit(Xtr, y)
    out["logistic regression (RFM)"] = (lr.predict_proba(Xte)[:, 1], None)
    params = {"max_depth": 4, "learning_rate": 0.05, "n_estimators": 300, "subsample": 0.8,
              "colsample_bytree": 0.8, "min_child_weight": 5, "n_jobs": 2, "random_state": 0,
              "tree_method": "hist"}
    clf = xgb.XGBClassifier(objective="binary:logistic", **params).fit(Xtr, y)
    reg = xgb.XGBRegressor(objective="reg:squarederror", **params).fit(Xtr, s)
    out["XGBoost (RFM)"] = (clf.predict_proba(Xte)[:, 1],
                            np.maximum(reg.predict(Xte).astype(float), 0.0))
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation and report


def evaluate_protocol(master: pd.DataFrame, data: Path, proto: Protocol, work: Path,
                      log: Path, skip_cli: bool = False, seeds: int = 1) -> dict[str, Any]:
    """Every metric of churnguard (seed 0, the default) and of each anchor; with ``seeds`` > 1,
    also churnguard's metrics for ``--seed`` 1 .. seeds - 1 (``seed_runs``)."""
    from churnguard.model import evaluate

    t = truth(master, proto.as_of, proto.horizon_days)
    y, spend = t["churned"].to_numpy(), t["spend"].to_numpy()
    models: dict[str, dict[str, float]] = {}
    info: dict[str, Any] = {}
    seed_runs: list[dict[str, float]] = []
    for seed in range(0 if skip_cli else seeds):
        scores, seed_info = churnguard_scores(data, proto, work, log, seed)
        m = t.merge(scores, on="customer_id", how="left")
        if m["churn_probability"].isna().any():
            raise RuntimeError(f"{m['churn_probability'].isna().sum()} customers not scored")
        if len(scores) != len(t):
            raise RuntimeError(f"scored {len(scores)} customers, the population has {len(t)}")
        seed_runs.append({
            **evaluate.churn_metrics(y, m["churn_probability"].to_numpy()),
            **evaluate.clv_metrics(spend, m["clv"].to_numpy())})
        if seed == 0:
            info = {**seed_info, "model_version": str(scores["model_version"].iloc[0])}
            models["churnguard"] = seed_runs[0]
    anchors: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
    anchors.update(btyd_anchors(master, proto.as_of, proto.horizon_days, t["customer_id"]))
    anchors.update(supervised_anchors(master, proto.as_of, proto.horizon_days,
                                      t["customer_id"]))
    for name, (p, clv) in anchors.items():
        row: dict[str, float] = {}
        if p is not None:
            row.update(evaluate.churn_metrics(y, p))
        if clv is not None:
            row.update(evaluate.clv_metrics(spend, clv))
        models[name] = row
    levels = btyd_level_by_cutoff(master, proto.as_of, proto.horizon_days)
    return {"as_of": proto.as_of.isoformat(), "horizon_days": proto.horizon_days,
            "label_window_end": (proto.as_of + timedelta(days=proto.horizon_days - 1)).isoformat(),
            "n_customers": len(t), "churn_rate": float(y.mean()),
            "total_spend": float(spend.sum()), "cli": info, "models": models,
            "seed_runs": seed_runs, "btyd_level_by_cutoff": levels}


def _better(key: str, direction: int, a: float, b: float) -> bool:
    """a at least as good as b."""
    if direction == 1:
        return a >= b
    if direction == -1:
        return a <= b
    return abs(a) <= abs(b)


def _check(proto: str, key: str, direction: int, value: float) -> bool:
    best = ISSUE_BEST[proto][key]
    ok = _better(key, direction, round(value, 3 if key != "mae" else 2), best)
    if key == "total_error":
        ok = abs(value) <= TOTAL_ERROR_TARGET
    return ok


def _fmt(key: str, v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    if key == "mae":
        return f"{v:.2f}"
    if key == "total_error":
        return f"{v:+.1%}"
    return f"{v:.3f}"


def markdown(results: dict[str, Any]) -> str:
    lines = ["# CDNOW benchmark", "",
             f"Produced by `{results['command']}` on {results['when']} "
             f"(churnguard {results['versions']['churnguard']}, xgboost "
             f"{results['versions']['xgboost']}, {results['machine']}).", ""]
    for name, res in results["protocols"].items():
        models = res["models"]
        anchors = [m for m in models if m != "churnguard"]
        lines += [f"## {name}: as of {res['as_of']}, {res['horizon_days']}-day horizon "
                  f"(label window to {res['label_window_end']})", "",
                  f"{res['n_customers']:,} customers, churn rate {res['churn_rate']:.3f}, "
                  f"actual spend in the window ${res['total_spend']:,.0f}."]
        if res["cli"]:
            lines += ["", f"- `churnguard {res['cli']['train_command']}` "
                      f"({res['cli']['train_seconds']} s)",
                      f"- `churnguard {res['cli']['score_command']}` "
                      f"({res['cli']['score_seconds']} s), model version "
                      f"{res['cli'].get('model_version', '?')} (the champion)"]
        header = ["metric", "churnguard", *anchors, "best anchor here", "issue's best anchor",
                  "target"]
        lines += ["", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for key, label, _kind, direction in ROWS:
            vals = {m: models[m].get(key) for m in models}
            av = [(m, v) for m, v in vals.items() if m != "churnguard" and v is not None]
            best_here = None
            if av:
                pick = (max if direction == 1 else min)(
                    av, key=lambda mv: abs(mv[1]) if direction == 0 else mv[1])
                best_here = pick[1]
            cg = vals.get("churnguard")
            verdict = "–" if cg is None else ("pass" if _check(name, key, direction, cg)
                                              else "**FAIL**")
            target = ("|err| ≤ 5 %" if key == "total_error" else
                      ("≥ " if direction == 1 else "≤ ") + _fmt(key, ISSUE_BEST[name][key]))
            lines.append("| " + " | ".join([
                label, _fmt(key, cg), *(_fmt(key, vals[m]) for m in anchors),
                _fmt(key, best_here), _fmt(key, ISSUE_BEST[name][key]),
                f"{target}: {verdict}"]) + " |")
        lines.append("")
        runs = res.get("seed_runs", [])
        if len(runs) > 1:
            lines += [f"Seed spread: the same train and score with `--seed` 0 .. {len(runs) - 1}"
                      " (row and column sampling of the boosters, calibration folds, BTYD fit "
                      "sample). Row 0 is the table above.", "",
                      "| metric | " + " | ".join(f"seed {i}" for i in range(len(runs)))
                      + " | seeds passing |", "|" + "---|" * (len(runs) + 2)]
            for key, label, _kind, direction in ROWS:
                vs = [r[key] for r in runs]
                passing = sum(_check(name, key, direction, v) for v in vs)
                lines.append("| " + " | ".join([label, *(_fmt(key, v) for v in vs),
                                                f"{passing}/{len(runs)}"]) + " |")
            lines.append("")
        levels = res.get("btyd_level_by_cutoff", [])
        if levels:
            lines += [f"Total spend in each {res['horizon_days']}-day window from a month start, "
                      "and BG/NBD + Gamma-Gamma's prediction from the rows before it (fitted "
                      "at that cutoff; the last row is this protocol's forward window):", "",
                      "| cutoff | actual | predicted | error |", "|---|---:|---:|---:|"]
            lines += [f"| {r['cutoff']} | ${r['actual']:,.0f} | ${r['predicted']:,.0f} | "
                      f"{r['error']:+.1%} |" for r in levels]
            lines.append("")
    lines += ["Truth: churned = no purchase (a row with a positive amount) in [as-of, as-of + "
              "horizon); spend = total amount in that window. Anchors are fitted on the rows "
              "before the as-of date only: BG/NBD and Pareto/NBD with Gamma-Gamma on the whole "
              "calibration period (same-day purchases collapsed), logistic regression and "
              "XGBoost on RFM features at as-of − horizon with the labels of [as-of − horizon, "
              "as-of). The verdict compares churnguard with the issue's best-anchor figure "
              "(values rounded as the issue prints them); the total spend error must be within "
              "±5 %.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--master", type=Path, default=DEFAULT_MASTER,
                    help="CDNOW_master.txt(.gz) (default: bench/cdnow_data/)")
    ap.add_argument("--protocols", default="F13,F26", help="comma-separated: F13, F26")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where the contract data, MLflow stores and scores go "
                         "(default: a temporary directory, removed afterwards)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--skip-cli", action="store_true",
                    help="only the anchors (no churnguard train/score)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="train and score churnguard with --seed 0 .. N-1 and report the "
                         "spread (default 1: the default seed only)")
    args = ap.parse_args(argv)
    import xgboost

    import churnguard

    if args.seeds < 1:
        ap.error(f"--seeds must be at least 1, got {args.seeds}")
    names = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        ap.error(f"unknown protocol(s) {unknown}; choose from {sorted(PROTOCOLS)}")
    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cdnow-bench-")
        work = Path(tmp.name)
    else:
        work = args.work_dir
        work.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log = args.out_dir / "cdnow.log"
    log.write_text("")
    try:
        master = read_master(args.master)
        data = work / "contract"
        write_contract(master, data)
        results: dict[str, Any] = {
            "command": " ".join([".venv/bin/python bench/cdnow.py",
                                 *(argv if argv is not None else sys.argv[1:])]).strip(),
            "when": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
            "versions": {"churnguard": getattr(churnguard, "__version__", "dev"),
                         "xgboost": xgboost.__version__, "pandas": pd.__version__,
                         "python": platform.python_version()},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "data": {"rows": len(master), "customers": int(master["customer_id"].nunique())},
            "issue_best_anchor": ISSUE_BEST, "protocols": {}}
        for name in names:
            print(f"{name} …", flush=True)
            res = evaluate_protocol(master, data, PROTOCOLS[name], work, log, args.skip_cli,
                                    seeds=args.seeds)
            results["protocols"][name] = res
            if "churnguard" in res["models"]:
                res["checks"] = {key: _check(name, key, d, res["models"]["churnguard"][key])
                                 for key, _l, _k, d in ROWS}
        (args.out_dir / "cdnow.json").write_text(json.dumps(results, indent=2, default=str))
        md = markdown(results)
        (args.out_dir / "cdnow.md").write_text(md)
        print(md)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
