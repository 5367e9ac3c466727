"""Monitoring at scale: ``churnguard monitor`` against ``churnguard features build`` on the same
data, in the same run (README, "Monitoring").

    .venv/bin/python bench/monitor.py --customers 1000000

On demo data (``churnguard demo-data``, generated once into ``bench/.data``) with a model fitted
on 3,000 demo customers (``bench/common.py``; what is measured is monitoring, not fitting):

1. setup, not timed: ``churnguard score`` of every customer as of ``--as-of`` minus 91 days,
   into a prediction log, so that ``monitor`` has a batch run whose label window has closed;
2. ``build``: ``churnguard features build --as-of A`` (the real CLI, with its data checks);
3. ``monitor``: ``churnguard monitor --as-of A`` (features as of A, feeds, drift, scores,
   estimate and the realized run), same data, same machine, each in a fresh process with its
   wall time and peak RSS (wait4's rusage).

The issue's targets: monitor within 2 x the build's time, peak memory <= 2 GiB. Writes
``bench/results/monitor.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from features import GIB, Run, churnguard_exe, ensure_demo_data, run_child, table_rows  # noqa: E402

RATIO_MAX = 2.0
PEAK_MAX = 2 * GIB


def model_dir(cache: Path) -> Path:
    """The small fitted bundle as a local pyfunc model (what ``--model`` takes), made once."""
    target = cache / "monitor-model"
    if (target / "MLmodel").exists():
        return target
    import mlflow.pyfunc
    from common import small_bundle

    from churnguard.model.pyfunc import ChurnguardPyfunc

    bundle = small_bundle(cache)
    raw = cache / "monitor-bundle"
    shutil.rmtree(raw, ignore_errors=True)
    bundle.save(raw)
    mlflow.pyfunc.save_model(str(target), python_model=ChurnguardPyfunc(),
                             artifacts={"bundle": str(raw)})
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--as-of", type=date.fromisoformat, default=date(2025, 7, 1))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=HERE / ".data")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()

    cache = args.data_dir
    data = ensure_demo_data(cache, args.customers, args.seed)
    model = model_dir(cache)
    scratch = cache / "monitor-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    log_dir = cache / f"monitor-predlog-{args.customers}"
    env_log = scratch / "commands.log"
    cg = str(churnguard_exe())
    os.environ["CHURNGUARD_PREDICTION_LOG_DIR"] = str(log_dir)
    os.environ.setdefault("CHURNGUARD_DATA_DIR", str(scratch / "store"))
    scored = args.as_of - timedelta(days=91)
    if not log_dir.exists():
        setup = run_child([cg, "score", "--data", str(data), "--as-of", scored.isoformat(),
                           "--model", str(model), "--no-drivers", "--out",
                           str(scratch / "scores.parquet")], env_log, args.timeout, scratch)
        if setup.returncode != 0:
            sys.exit(f"setup scoring failed; see {env_log}")
    load_start = [round(x, 2) for x in os.getloadavg()]
    runs: dict[str, list[Run]] = {"build": [], "monitor": []}
    commands = {
        "build": [cg, "features", "build", "--data", str(data), "--as-of",
                  args.as_of.isoformat(), "--out", str(scratch / "f.parquet")],
        "monitor": [cg, "monitor", "--data", str(data), "--as-of", args.as_of.isoformat(),
                    "--model", str(model), "--out", str(scratch / "monitor"), "--no-mlflow"],
    }
    for _ in range(args.repeats):
        for name, argv in commands.items():  # alternate, so load changes hit both
            run = run_child(argv, env_log, args.timeout, scratch)
            if run.returncode not in (0, 3):
                sys.exit(f"{name} failed ({run.returncode}); see {env_log}")
            runs[name].append(run)
    report = json.loads((scratch / "monitor" / "monitor.json").read_text())
    best = {k: min(r.seconds for r in v) for k, v in runs.items()}
    peak = {k: max(r.peak_rss_bytes for r in v) for k, v in runs.items()}
    ratio = best["monitor"] / best["build"]
    result: dict[str, Any] = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python bench/monitor.py " + " ".join(sys.argv[1:]),
        "customers": args.customers, "rows": table_rows(data), "as_of": args.as_of.isoformat(),
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "runs": {k: [vars(r) for r in v] for k, v in runs.items()},
        "best_seconds": best, "peak_rss_gib": {k: v / GIB for k, v in peak.items()},
        "ratio_monitor_to_build": ratio,
        "targets": {"ratio <= 2": ratio <= RATIO_MAX,
                    "monitor peak <= 2 GiB": peak["monitor"] <= PEAK_MAX},
        "monitor_verdict": report["verdict"], "realized_runs": len(report["realized"]),
        "commands": {k: " ".join(v[1:]) for k, v in commands.items()},
    }
    out = HERE / "results"
    (out / "monitor.json").write_text(json.dumps(result, indent=2))
    md = [
        "# Monitoring at scale (`bench/monitor.py`)", "",
        f"Demo data: {args.customers:,} customers, "
        + ", ".join(f"{n:,} {t}" for t, n in result["rows"].items())
        + f"; as of {args.as_of}; {result['machine']}; generated {result['generated']}; load "
        f"average {load_start} at the start, {result['load_average_end']} at the end.", "",
        f"Command: `{result['command']}`", "",
        "| measurement | best s | peak RSS | x build | load avg at its end |",
        "|---|---:|---:|---:|---:|"]
    for name in ("build", "monitor"):
        r = min(runs[name], key=lambda x: x.seconds)
        md.append(f"| {name} | {best[name]:.1f} | {peak[name] / GIB:.2f} GiB | "
                  f"{best[name] / best['build']:.2f} | {r.load_average_1min} |")
    md += ["", "| target | measured | result |", "|---|---:|---|",
           f"| monitor within 2 x features build | {ratio:.2f} x | "
           f"{'pass' if ratio <= RATIO_MAX else 'FAIL'} |",
           f"| monitor peak memory <= 2 GiB | {peak['monitor'] / GIB:.2f} GiB | "
           f"{'pass' if peak['monitor'] <= PEAK_MAX else 'FAIL'} |", "",
           f"The monitor run compared {report['customers']:,} customers, with "
           f"{len(report['realized'])} realized batch run(s) (scored as of {scored}); verdict "
           f"`{report['verdict']}` (the 3,000-customer model against 1M customers)."]
    (out / "monitor.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
