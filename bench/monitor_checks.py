"""Does ``churnguard monitor`` tell the truth? The checks of the monitoring issue, through the
real CLI as a user would run them (README, "Monitoring").

    .venv/bin/python bench/monitor_checks.py                 # demo (3 seeds + faults) and CDNOW
    .venv/bin/python bench/monitor_checks.py --only cdnow

1. **No false alarms**: per seed, ``demo-data`` (undrifted), ``train --as-of T``, ``score --as-of
   T``, then ``monitor`` a month after T: the verdict and every feature's PSI.
2. **Each injected fault is caught**: ``demo-data --drift KIND@D`` (D after T; the rows before D
   are the undrifted ones), monitored with the undrifted seed's model some weeks after D: the
   verdict, the features ranked top by PSI against the ones the ground truth says the fault
   moves (``ground_truth/drift.json``), and whether a broken feed is named as one.
3. **Estimated performance is honest**: at T + horizon the batch run scored at T has its labels;
   its ``estimated`` ROC AUC (from its own probabilities, before any label) against the realized
   one. Also on CDNOW (train and score as of 1998-04-01, 91-day horizon, monitor 1998-07-01).

Writes ``bench/results/monitor_checks.{json,md}`` with the commands, the load average and every
figure. Each scenario runs in ``bench/.data/monitor_checks`` and is reused if its output exists
(``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

EXE = str(Path(sys.executable).parent / "churnguard")
TRAIN_AS_OF = date(2025, 3, 1)
MONTH_AFTER = TRAIN_AS_OF + timedelta(days=31)
HORIZON = 90
DRIFT_DATE = date(2025, 3, 15)
DRIFT_MONITOR = date(2025, 5, 1)
#: Once the run scored at T has its labels: what realized performance adds.
DRIFT_LATE = TRAIN_AS_OF + timedelta(days=HORIZON + 10)
RISE_SCORED = date(2025, 6, 1)
RISE_MONITOR = RISE_SCORED + timedelta(days=HORIZON + 10)
#: The fault kinds of ``demo-data --drift`` and how each is given.
FAULTS = ("broken-feed", "acquisition-shift", "price-change", "churn-rise",
          # The default x3 barely changes a quarter's outcomes (see the results): a shock.
          "churn-rise:smb:10")


def run(cmd: list[str], env: dict[str, str], log: Path, ok: tuple[int, ...] = (0,)) -> int:
    with log.open("a") as fh:
        fh.write(f"$ churnguard {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run([EXE, *cmd], env=env, stdout=fh, stderr=subprocess.STDOUT,
                              check=False)
    if proc.returncode not in ok:
        sys.exit(f"command failed ({proc.returncode}): churnguard {' '.join(cmd)}; see {log}")
    return proc.returncode


def store_env(store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CHURNGUARD_"))}
    env["CHURNGUARD_DATA_DIR"] = str(store)
    return env


def monitor(data: Path, store: Path, as_of: date, out: Path, log: Path) -> dict[str, Any]:
    if not (out / "monitor.json").exists():
        run(["monitor", "--data", str(data), "--as-of", as_of.isoformat(), "--out", str(out)],
            store_env(store), log, ok=(0, 3))
    report: dict[str, Any] = json.loads((out / "monitor.json").read_text())
    return report


def summary(report: dict[str, Any], top: int = 5) -> dict[str, Any]:
    feats = report["features"]
    return {"verdict": report["verdict"], "reasons": report["reasons"][:6],
            "max_feature_psi": max((f["psi"] for f in feats), default=0.0),
            "top_features": [(f["name"], round(f["psi"], 3)) for f in feats[:top]],
            "features_psi_ge_0.1": sum(f["psi"] >= 0.1 for f in feats),
            "score_psi": report["score"]["psi"], "clv_psi": report["clv"]["psi"],
            "broken_feeds": [f["feed"] for f in report.get("feeds", [])
                             if f["status"] == "broken"],
            "order_value_psi": (report.get("order_values") or {}).get("psi")}


def trained_demo(work: Path, seed: int, customers: int, log: Path) -> tuple[Path, Path]:
    data, store = work / f"demo-seed{seed}", work / f"store-seed{seed}"
    if not (data / "customers.parquet").exists():
        run(["demo-data", "--out", str(data), "--customers", str(customers), "--seed",
             str(seed)], store_env(store), log)
    scores = work / f"scores-seed{seed}.parquet"
    if not scores.exists():
        env = store_env(store)
        run(["train", "--data", str(data), "--as-of", TRAIN_AS_OF.isoformat(),
             "--horizon-days", str(HORIZON)], env, log)
        from common import force_champion

        force_champion(store)  # the checks monitor the version trained, whatever the gate said
        run(["score", "--data", str(data), "--as-of", TRAIN_AS_OF.isoformat(), "--out",
             str(scores), "--no-drivers"], env, log)
    return data, store


def realized_vs_estimated(report: dict[str, Any], scored: date = TRAIN_AS_OF
                          ) -> dict[str, Any]:
    """The batch run scored on ``scored``: its estimate (from its own probabilities) beside
    its realized numbers; empty when its label window is still open."""
    runs = [r for r in report["realized"] if r["scored_as_of"] == scored.isoformat()]
    if not runs:
        return {}
    run_ = runs[0]
    est = run_["estimated"]
    return {"n": run_["n"], "estimated_roc_auc": est["roc_auc"],
            "estimated_band": est["roc_auc_band"], "realized_roc_auc": run_["roc_auc"],
            "abs_difference": abs(est["roc_auc"] - run_["roc_auc"]),
            "estimated_churn_rate": est["churn_rate"], "realized_churn_rate": run_["churn_rate"],
            "estimated_log_loss": est["log_loss"], "realized_log_loss": run_["log_loss"],
            "ece": run_["ece"]}


def demo_checks(work: Path, seeds: list[int], customers: int, faults: bool, log: Path
                ) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": {}, "faults": {}}
    for seed in seeds:
        data, store = trained_demo(work, seed, customers, log)
        month = monitor(data, store, MONTH_AFTER, work / f"mon-seed{seed}-month", log)
        later = monitor(data, store, DRIFT_MONITOR, work / f"mon-seed{seed}-later", log)
        closed = monitor(data, store, TRAIN_AS_OF + timedelta(days=HORIZON + 1),
                         work / f"mon-seed{seed}-closed", log)
        out["seeds"][seed] = {"month_after": summary(month), "drift_monitor_date": summary(later),
                              "honesty": realized_vs_estimated(closed)}
    if not faults:
        return out
    # The undrifted seed's champion (monitor's default model in its store): the data drifts
    # after the model shipped.
    _, store0 = trained_demo(work, seeds[0], customers, log)
    for kind in FAULTS:
        data = work / f"demo-seed{seeds[0]}-{kind.replace(':', '-')}"
        if not (data / "customers.parquet").exists():
            run(["demo-data", "--out", str(data), "--customers", str(customers), "--seed",
                 str(seeds[0]), "--drift", f"{kind}@{DRIFT_DATE.isoformat()}"],
                store_env(store0), log)
        tag = kind.replace(":", "-")
        report = monitor(data, store0, DRIFT_MONITOR, work / f"mon-{tag}", log)
        late = monitor(data, store0, DRIFT_LATE, work / f"mon-{tag}-late", log)
        truth = json.loads((data / "ground_truth" / "drift.json").read_text())
        expected = sorted({f for fault in _faults(truth) for f in fault.get(
            "features_expected_to_move", [])})
        s = summary(report, top=8)
        ranked = [f["name"] for f in report["features"]]
        s["expected_features"] = expected
        s["expected_in_top"] = [f for f in expected if f in ranked[:max(5, len(expected))]]
        s["top_is_expected"] = bool(ranked) and ranked[0] in expected
        s["injected"] = _faults(truth)
        s["late"] = {"as_of": DRIFT_LATE.isoformat(), "verdict": late["verdict"],
                     "reasons": late["reasons"][:6]}
        out["faults"][kind] = s
    # A behaviour change shows in outcomes months later: score the churn-rise data on
    # 2025-06-01 (the undrifted model, its own copy of the store so the other scenarios' logs
    # stay as they were) and monitor once that run's labels exist.
    for kind in ("churn-rise", "churn-rise:smb:10"):
        tag = kind.replace(":", "-")
        rise, rise_store = work / f"demo-seed{seeds[0]}-{tag}", work / f"store-{tag}"
        if not rise_store.exists():
            shutil.copytree(store0, rise_store)
            run(["score", "--data", str(rise), "--as-of", RISE_SCORED.isoformat(), "--out",
                 str(work / f"scores-{tag}.parquet"), "--no-drivers"], store_env(rise_store),
                log)
        later = monitor(rise, rise_store, RISE_MONITOR, work / f"mon-{tag}-later", log)
        # The realized groups' reasons first: what speaks of the fault, not of age drift.
        reasons = sorted(later["reasons"], key=lambda r: "scored " not in r)
        out["faults"][kind]["later"] = {"as_of": RISE_MONITOR.isoformat(),
                                        "verdict": later["verdict"], "reasons": reasons[:6]}
    # The undrifted data at the late date too: what the fault's late verdict is compared with.
    data0 = work / f"demo-seed{seeds[0]}"
    clean_late = monitor(data0, store0, DRIFT_LATE, work / "mon-clean-late", log)
    out["clean_late"] = {"as_of": DRIFT_LATE.isoformat(), "verdict": clean_late["verdict"],
                         "reasons": clean_late["reasons"][:6]}
    return out


def _faults(truth: Any) -> list[dict[str, Any]]:
    faults = truth.get("faults", truth) if isinstance(truth, dict) else truth
    return list(faults)


def cdnow_check(work: Path, log: Path) -> dict[str, Any]:
    from cdnow import DEFAULT_MASTER, read_master, write_contract

    data, store = work / "cdnow", work / "store-cdnow"
    as_of, h = date(1998, 4, 1), 91
    if not (data / "transactions.parquet").exists():
        write_contract(read_master(DEFAULT_MASTER), data)
    scores = work / "scores-cdnow.parquet"
    env = store_env(store)
    if not scores.exists():
        run(["train", "--data", str(data), "--as-of", as_of.isoformat(), "--horizon-days",
             str(h), "--clv-horizon-days", str(h), "--experiment", "cdnow-monitor"], env, log)
        from common import force_champion

        force_champion(store)
        run(["score", "--data", str(data), "--as-of", as_of.isoformat(), "--out", str(scores),
             "--no-drivers"], env, log)
    report = monitor(data, store, date(1998, 7, 1), work / "mon-cdnow", log)
    return {**realized_vs_estimated(report, as_of), "verdict": report["verdict"],
            "reasons": report["reasons"][:6]}


def markdown(r: dict[str, Any]) -> str:
    lines = ["# Monitoring checks (`bench/monitor_checks.py`)", "",
             f"Run {r['started']} on {r['machine']}; load average {r['load_start']} at the "
             f"start, {r['load_end']} at the end. Command: `{r['command']}`.", ""]
    demo = r.get("demo")
    if demo:
        lines += [f"Demo: {r['customers']:,} customers per seed, trained and scored as of "
                  f"{TRAIN_AS_OF} ({HORIZON}-day horizon).", "",
                  "## No false alarms (undrifted demo)", "",
                  "| seed | monitored | verdict | max feature PSI | features PSI ≥ 0.1 | "
                  "score PSI | top features |", "|---|---|---|---|---|---|---|"]
        for seed, s in demo["seeds"].items():
            for key, when in (("month_after", MONTH_AFTER), ("drift_monitor_date",
                                                             DRIFT_MONITOR)):
                m = s[key]
                lines.append(f"| {seed} | {when} | {m['verdict']} | {m['max_feature_psi']:.3f} "
                             f"| {m['features_psi_ge_0.1']} | {m['score_psi']:.3f} | "
                             + ", ".join(f"{n} {v}" for n, v in m["top_features"][:3]) + " |")
        lines += ["", "## Estimated against realized (the run scored at T, monitored at "
                  f"T + {HORIZON + 1} days)", "",
                  "| data | n | estimated ROC AUC (5–95 %) | realized ROC AUC | difference | "
                  "estimated / realized churn rate | estimated / realized log loss |",
                  "|---|---|---|---|---|---|---|"]
        rows = [(f"demo seed {k}", s["honesty"]) for k, s in demo["seeds"].items()]
        if r.get("cdnow"):
            rows.append(("CDNOW (1998-04-01, 91 days)", r["cdnow"]))
        for name, h in rows:
            if h:
                lines.append(
                    f"| {name} | {h['n']:,} | {h['estimated_roc_auc']:.3f} "
                    f"({h['estimated_band'][0]:.3f}–{h['estimated_band'][1]:.3f}) | "
                    f"{h['realized_roc_auc']:.3f} | {h['abs_difference']:.3f} | "
                    f"{h['estimated_churn_rate']:.3f} / {h['realized_churn_rate']:.3f} | "
                    f"{h['estimated_log_loss']:.3f} / {h['realized_log_loss']:.3f} |")
        if demo["faults"]:
            lines += ["", f"## Injected faults (seed {next(iter(demo['seeds']))}, from "
                      f"{DRIFT_DATE}, monitored {DRIFT_MONITOR} with the undrifted model)", "",
                      "| fault | verdict | first reason | broken feeds named | top features by "
                      "PSI | expected (ground truth) | top is expected |",
                      "|---|---|---|---|---|---|---|"]
            for kind, s in demo["faults"].items():
                lines.append(
                    f"| {kind} | {s['verdict']} | {(s['reasons'] or ['–'])[0]} | "
                    f"{', '.join(s['broken_feeds']) or '–'} | "
                    + ", ".join(f"{n} {v}" for n, v in s["top_features"][:5])
                    + f" | {', '.join(s['expected_features'])} | {s['top_is_expected']} |")
            lines += ["", f"Monitored again on {DRIFT_LATE}, once the run scored at "
                      f"{TRAIN_AS_OF} has its labels (realized performance):", "",
                      "| data | verdict | reasons |", "|---|---|---|"]
            if demo.get("clean_late"):
                c = demo["clean_late"]
                lines.append(f"| undrifted | {c['verdict']} | {'; '.join(c['reasons']) or '–'} |")
            for kind, s in demo["faults"].items():
                lines.append(f"| {kind} | {s['late']['verdict']} | "
                             f"{'; '.join(s['late']['reasons'][:3]) or '–'} |")
            for kind in ("churn-rise", "churn-rise:smb:10"):
                later = demo["faults"].get(kind, {}).get("later")
                if later:
                    lines += ["", f"{kind}, scored {RISE_SCORED} with the same model and "
                              f"monitored {later['as_of']}: **{later['verdict']}**; "
                              + ("; ".join(later["reasons"][:4]) or "no reason") + "."]
    elif r.get("cdnow"):
        h = r["cdnow"]
        lines += [f"CDNOW: estimated ROC AUC {h['estimated_roc_auc']:.3f}, realized "
                  f"{h['realized_roc_auc']:.3f} (difference {h['abs_difference']:.3f})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", choices=("demo", "cdnow", "no-faults"), default=None)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--work", type=Path, default=HERE / ".data" / "monitor_checks")
    args = ap.parse_args()
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "commands.log"
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_start": [round(x, 2) for x in os.getloadavg()],
        "command": "python bench/monitor_checks.py " + " ".join(sys.argv[1:]),
        "customers": args.customers}
    if args.only in (None, "demo", "no-faults"):
        result["demo"] = demo_checks(args.work, args.seeds, args.customers,
                                     args.only != "no-faults", log)
    if args.only in (None, "cdnow"):
        result["cdnow"] = cdnow_check(args.work, log)
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    results = HERE / "results"
    (results / "monitor_checks.json").write_text(json.dumps(result, indent=2, default=str))
    (results / "monitor_checks.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
