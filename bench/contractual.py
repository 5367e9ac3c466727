"""Contractual churn, forward in time: churnguard against logistic regression, sBG and the
demo's oracle on a subscription business.

    .venv/bin/python bench/contractual.py --customers 5000 --seed 1

On the contractual demo (``churnguard demo-data --subscriptions``, generated once into
``bench/.data``), at ``--months`` consecutive month starts T (the last one leaves room for the
label window inside the data):

1. **train as a user would** with the data truncated at T: ``fit_models(as_of=T)`` (what
   ``churnguard train --as-of T`` runs before MLflow; it reads no row from T on) with a
   ``--horizon-days`` contractual label (grace period ``--grace-days``), and once more with the
   non-contractual label forced (``--noncontractual``);
2. **score forward** every account subscribed at T, with features as of T (rows before T);
3. **the outcome**: the contractual label at T (no subscription active after the horizon and
   grace period), from the rows after T;
4. beside churnguard, on the same accounts: logistic regression fitted on the same training
   snapshots and features (``training/models.py: LogisticBaseline``), the shifted-beta-
   geometric model (Fader & Hardie 2007; ``training/baselines.py: SbgBaseline``) fitted on the
   same training snapshots, and the **oracle**: the generator's own probability
   (``features.demo_data.contractual_oracle``), which no model can see.

Metrics are pooled over the month starts (and given per month). CLV: the total error of the
contract CLV model on each fit's test snapshot, and on the whole demo with the default CLV
horizon (what ``churnguard train`` ships). Writes
``bench/results/contractual.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def months_from(first: date, n: int) -> list[date]:
    out = []
    y, m = first.year, first.month
    for _ in range(n):
        out.append(date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first", type=date.fromisoformat, default=date(2025, 5, 1),
                    help="The first month start T (default 2025-05-01).")
    ap.add_argument("--months", type=int, default=6)
    ap.add_argument("--horizon-days", type=int, default=30)
    ap.add_argument("--grace-days", type=int, default=14)
    ap.add_argument("--max-train-cutoffs", type=int, default=12)
    ap.add_argument("--no-noncontractual", dest="noncontractual", action="store_false",
                    help="Skip the run with the non-contractual label forced.")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--cache", type=Path, default=HERE / ".data")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from churnguard.features.build import build_features, label_sql
    from churnguard.features.demo_data import contractual_oracle, generate_demo_data
    from churnguard.features.sources import open_source
    from churnguard.model import evaluate
    from churnguard.model.encode import model_matrix
    from churnguard.model.score import score_matrix
    from churnguard.training.baselines import SbgBaseline
    from churnguard.training.models import BoostConfig, LogisticBaseline
    from churnguard.training.pipeline import TrainConfig, fit_models

    load_start = os.getloadavg()
    data = args.cache / f"contractual-{args.customers}-seed{args.seed}"
    if not (data / "customers.parquet").exists():
        generate_demo_data(data, n_customers=args.customers, seed=args.seed, subscriptions=True)
    cutoffs = months_from(args.first, args.months)
    rows: list[pd.DataFrame] = []
    clv_totals: dict[str, dict[str, float]] = {}
    chosen: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    with open_source(data) as source:
        for T in cutoffs:
            labels = source.con.sql(label_sql(
                T, args.horizon_days, args.horizon_days, "contractual",
                grace_days=args.grace_days)).to_df()[["customer_id", "churned"]]
            frame = labels.rename(columns={"churned": "y"})
            kinds = ("contractual", "noncontractual") if args.noncontractual else (
                "contractual",)
            for kind in kinds:
                t0 = time.perf_counter()
                fitted = fit_models(source, as_of=T, config=TrainConfig(
                    horizon_days=args.horizon_days, clv_horizon_days=90, label=kind,
                    grace_days=args.grace_days, max_train_cutoffs=args.max_train_cutoffs,
                    seed=0, boost=BoostConfig(seed=0)))
                seconds[f"{T}/{kind}"] = time.perf_counter() - t0
                bundle = fitted.bundle
                feats = build_features(source, bundle.spec, T).to_pandas()
                feats = feats.merge(labels[["customer_id"]], on="customer_id", how="inner")
                scores = score_matrix(bundle, bundle.encode(feats), drivers=False)
                p = pd.Series(scores.churn_probability, index=feats["customer_id"])
                name = "churnguard" if kind == "contractual" else "churnguard --noncontractual"
                frame[name] = frame["customer_id"].map(p)
                if kind != "contractual":
                    continue
                clv_totals[str(T)] = fitted.clv_table["churnguard"]
                chosen[str(T)] = {"churn_model": bundle.churn.info.get("kind"),
                                  "calibration": bundle.metadata.get("calibration")}
                # The baselines, fitted on the same training snapshots (all churn cutoffs of
                # the plan: train, validation and test, as the shipped model is refitted).
                grid = fitted.grid
                train = grid["churned"].notna().to_numpy()
                X_grid = model_matrix(grid, bundle.spec, bundle.levels)
                y_grid = grid["churned"].to_numpy(float)
                X_now = model_matrix(feats, bundle.spec, bundle.levels)
                lr = LogisticBaseline().fit(X_grid[train], y_grid[train])
                frame["logistic regression"] = frame["customer_id"].map(
                    pd.Series(lr.predict(X_now), index=feats["customer_id"]))
                sbg = SbgBaseline(args.horizon_days + args.grace_days).fit(
                    X_grid[train], y_grid[train])
                frame["sBG"] = frame["customer_id"].map(
                    pd.Series(sbg.predict(X_now), index=feats["customer_id"]))
            # The generator's probability of no subscription active at T + horizon (it knows
            # no grace period: lapses shorter than it are rare, ~0.1 % of account-days).
            oracle = contractual_oracle(data, T, args.horizon_days)
            frame["oracle"] = frame["customer_id"].map(
                oracle.set_index("customer_id")["churn_probability"])
            frame["as_of"] = T
            rows.append(frame)
            print(f"{T}: {len(frame):,} subscribed accounts, churn rate {frame['y'].mean():.2%}",
                  flush=True)
        # CLV for contracts as `churnguard train` ships it: the whole demo, the default CLV
        # horizon, judged on the fit's own (out-of-time) test snapshot.
        t0 = time.perf_counter()
        full = fit_models(source, config=TrainConfig(
            horizon_days=args.horizon_days, label="contractual", grace_days=args.grace_days,
            max_train_cutoffs=args.max_train_cutoffs, seed=0, boost=BoostConfig(seed=0)))
        seconds["full/contractual"] = time.perf_counter() - t0
        clv_full = {"test_cutoff": str(full.clv_plan.test),
                    "horizon_days": full.config.clv_horizon_days,
                    **full.clv_table["churnguard"]}
    pooled = pd.concat(rows, ignore_index=True)
    models = ["churnguard", "logistic regression", "sBG", "oracle"]
    if args.noncontractual:
        models.append("churnguard --noncontractual")
    missing = {m: int(pooled[m].isna().sum()) for m in models}
    table: dict[str, dict[str, float]] = {}
    for m in models:
        ok = pooled[m].notna()
        table[m] = evaluate.churn_metrics(pooled.loc[ok, "y"].to_numpy(float),
                                          pooled.loc[ok, m].to_numpy(float))
    per_month = {str(T): {m: evaluate.churn_metrics(g["y"].to_numpy(float),
                                                    g[m].fillna(g[m].mean()).to_numpy(float)
                                                    )["roc_auc"] for m in models}
                 for T, g in pooled.groupby("as_of")}
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/contractual.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": load_start, "load_average_at_end": os.getloadavg()},
        "data": {"customers": args.customers, "seed": args.seed, "cutoffs": [str(c) for c in
                                                                              cutoffs],
                 "horizon_days": args.horizon_days, "grace_days": args.grace_days,
                 "account_months": len(pooled), "churners": int(pooled["y"].sum())},
        "pooled": table, "roc_auc_per_month": per_month, "missing_predictions": missing,
        "clv_test_snapshot": clv_full, "clv_per_month_start_90d": clv_totals,
        "chosen": chosen, "fit_seconds": seconds,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "contractual.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out_dir / "contractual.md").write_text(markdown(report, models))
    print(markdown(report, models))


def markdown(report: dict[str, Any], models: list[str]) -> str:
    d = report["data"]
    lines = [
        "# Contractual churn forward in time (bench/contractual.py)", "",
        f"{report['when']}, `{report['command']}`; {report['machine']['cpus']} CPUs, load "
        f"average {report['machine']['load_average_at_start'][0]:.2f} at start, "
        f"{report['machine']['load_average_at_end'][0]:.2f} at the end.", "",
        f"Contractual demo, {d['customers']:,} accounts (seed {d['seed']}); month starts "
        f"{', '.join(d['cutoffs'])}; {d['horizon_days']}-day horizon, {d['grace_days']}-day "
        f"grace period; {d['account_months']:,} account-months, {d['churners']:,} churners. "
        "Each month: trained on rows before it, scored forward, judged on what happened.", "",
        "| model | ROC AUC | PR AUC | log loss | Brier | ECE | lift@10 | capture@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        t = report["pooled"][m]
        lines.append(f"| {m} | {t['roc_auc']:.3f} | {t['pr_auc']:.3f} | {t['log_loss']:.4f} | "
                     f"{t['brier']:.4f} | {t['ece']:.4f} | {t['lift_at_10']:.2f} | "
                     f"{t['capture_at_10']:.3f} |")
    lines += ["", "ROC AUC per month start:", "",
              "| month | " + " | ".join(models) + " |",
              "|---|" + "---:|" * len(models)]
    for month, aucs in report["roc_auc_per_month"].items():
        lines.append(f"| {month} | " + " | ".join(f"{aucs[m]:.3f}" for m in models) + " |")
    c = report["clv_test_snapshot"]
    lines += ["", "CLV for contracts (fee × sBG retention, `ContractClvModel`): the whole demo "
              f"trained as `churnguard train` does, {c['horizon_days']}-day CLV horizon, its "
              f"test snapshot {c['test_cutoff']} ({int(c['n']):,} accounts): total predicted "
              f"{c['total_pred']:,.0f} vs actual {c['total_actual']:,.0f}, total error "
              f"**{c['total_error']:+.1%}**; Gini {c['normalized_gini']:.3f}, Spearman "
              f"{c['spearman']:.3f}, RMSE {c['rmse']:,.0f}.", "",
              "The month-start fits above (90-day CLV horizon), each on its own test snapshot:",
              "", "| month start | total error | Gini | Spearman |", "|---|---:|---:|---:|"]
    for month, t in report["clv_per_month_start_90d"].items():
        lines.append(f"| {month} | {t['total_error']:+.1%} | {t['normalized_gini']:.3f} | "
                     f"{t['spearman']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
