"""Spark scale-out: the same batch job on ``local[1]`` and ``local[2]``.

    .venv/bin/python bench/spark.py --customers 1000000 --repeats 1

The job is what ``churnguard score --engine spark`` runs (``serving.batch.run_batch`` with a
Spark source): the contract checks and the feature SQL on Spark, scoring with the bundle in
``mapInArrow``, the sorted Parquet staging write and the streamed, atomic output file. Each run
is a fresh subprocess with its own JVM (a Spark master cannot change inside one), the masters
alternate (``--repeats`` rounds), and the job is timed from the moment the session exists, so
JVM start-up (reported separately) is not in the job time. The speed-up is the ratio of the
median job times. Target (issue 5): ``local[2]`` ≥ 1.6 × faster than ``local[1]``.

Writes ``bench/results/spark.json`` and ``bench/results/spark.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
MASTERS = ("local[1]", "local[2]")


def worker(args: argparse.Namespace) -> None:
    """One timed job in this process; prints a JSON line."""
    from churnguard.features.spark import open_spark_source, spark_session
    from churnguard.model.bundle import ScoringBundle
    from churnguard.serving.batch import (
        BatchJob,
        SparkEngine,
        parse_destination,
        run_batch,
    )

    bundle = ScoringBundle.load(args.bundle)
    t0 = time.perf_counter()
    spark = spark_session(args.master, conf={"spark.sql.shuffle.partitions": str(
        args.shuffle_partitions)})
    started = time.perf_counter() - t0
    t = time.perf_counter()
    src = open_spark_source(spark, str(args.data))
    summary = run_batch(BatchJob(bundle, date.fromisoformat(args.as_of), "bench", drivers=False),
                        SparkEngine(src, staging_dir=args.out.parent),
                        parse_destination(str(args.out)))
    job = time.perf_counter() - t
    spark.stop()
    print(json.dumps({"master": args.master, "session_s": started, "job_s": job,
                      "rows": summary.n_scored}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--as-of", default="2025-07-01")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shuffle-partitions", type=int, default=8)
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--master", help=argparse.SUPPRESS)
    ap.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    sys.path.insert(0, str(HERE))
    from common import demo_data, small_bundle

    cache = HERE / ".data"
    data = demo_data(cache, args.customers, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    bundle_dir = small_bundle(cache).save(work / "bundle")
    runs: list[dict[str, object]] = []
    for r in range(args.repeats):
        for master in MASTERS:
            out = work / f"scores-{r}-{master[6]}.parquet"
            cmd = [sys.executable, __file__, "--worker", "--master", master, "--bundle",
                   str(bundle_dir), "--data", str(data), "--out", str(out), "--as-of",
                   args.as_of, "--shuffle-partitions", str(args.shuffle_partitions)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"{master} run failed:\n{proc.stderr[-4000:]}")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            run["load_1m"] = os.getloadavg()[0]
            runs.append(run)
            print(f"{master}: job {run['job_s']:.1f}s (session {run['session_s']:.1f}s), "
                  f"load {run['load_1m']:.1f}", flush=True)
    med = {m: statistics.median(float(str(r["job_s"])) for r in runs if r["master"] == m)
           for m in MASTERS}
    speedup = med["local[1]"] / med["local[2]"]
    rows = int(str(runs[0]["rows"]))
    report = {"command": f"python bench/spark.py --customers {args.customers}",
              "customers": rows, "runs": runs, "median_job_s": med, "speedup": speedup,
              "target": 1.6, "pass": speedup >= 1.6, "python": platform.python_version(),
              "cpus": os.cpu_count()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "spark.json").write_text(json.dumps(report, indent=2))
    lines = [f"`{report['command']}` — {rows:,} customers scored per run, {args.repeats} "
             f"run(s) per master, {os.cpu_count()} CPUs", "",
             "| master | median job s | customers/s | runs (job s) |", "|---|---:|---:|---|"]
    for m in MASTERS:
        jobs = ", ".join(f"{float(str(r['job_s'])):.1f}" for r in runs if r["master"] == m)
        lines.append(f"| {m} | {med[m]:.1f} | {rows / med[m]:,.0f} | {jobs} |")
    lines += ["", f"- local[2] speed-up over local[1]: {speedup:.2f}× (target ≥ 1.6×): "
              f"{'pass' if speedup >= 1.6 else 'FAIL'}"]
    (args.out_dir / "spark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
