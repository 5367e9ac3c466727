"""Batch scoring throughput: churnguard's batch path against the XGBoost floor and MLflow pyfunc.

    .venv/bin/python bench/batch.py --customers 200000

In one run, on the same precomputed feature matrix (built once with DuckDB from demo data):

- ``churnguard``: the batch job's scoring + writing path (``serving.batch``: Arrow chunks →
  ``score_table`` without drivers: churn, CLV, tiers, lifecycle stage, recommended actions with
  their reasons, in the fixed output schema → Parquet through a temp file and an atomic
  rename), then ``churnguard_drivers``: the same with drivers (the default job);
- ``floor``: ``inplace_predict`` of the churn booster and the two CLV boosters on the encoded
  float32 matrix in memory (no calibration, no policy, no output): nothing scores faster;
  ``floor_drivers``: the same plus the churn booster's exact TreeSHAP (``pred_contribs``),
  the booster work the drivers need;
- ``pyfunc``: ``mlflow.pyfunc`` ``predict`` on a pandas frame of the same rows.

Writes ``bench/results/batch.json`` and ``bench/results/batch.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import xgboost as xgb

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--as-of", default="2025-07-01")
    ap.add_argument("--chunk-size", type=int, default=100_000)
    ap.add_argument("--pyfunc-rows", type=int, default=50_000,
                    help="rows scored through mlflow.pyfunc (it is slow; the rate is per row)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args()

    import mlflow.pyfunc

    from churnguard.features.build import write_features
    from churnguard.features.sources import open_source

    # The pyfunc as training logs it (models from code, README "Training and the model registry").
    from churnguard.model.pyfunc import code_path
    from churnguard.serving.batch import FileSink, score_table

    sys.path.insert(0, str(HERE))
    from common import demo_data, small_bundle

    as_of = date.fromisoformat(args.as_of)
    cache = HERE / ".data"
    data = demo_data(cache, args.customers, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    bundle = small_bundle(cache)
    bundle_dir = bundle.save(work / "bundle")
    feats_file = work / "features.parquet"
    with open_source(data) as src:
        write_features(src, bundle.spec, as_of, feats_file)
    n = pq.ParquetFile(feats_file).metadata.num_rows

    results: dict[str, dict[str, float]] = {}

    def batch_path(drivers: bool) -> float:
        t = time.perf_counter()
        sink = FileSink(work / "scores.parquet", "parquet")
        sink.prepare()
        at = datetime.now(UTC)
        chunks = pq.ParquetFile(feats_file).iter_batches(batch_size=args.chunk_size)
        for chunk in chunks:
            sink.write(score_table(bundle, chunk, drivers=drivers, as_of=as_of,
                                   model_version="bench", scored_at=at))
        sink.commit(lambda _: None)
        return time.perf_counter() - t

    # (a) churnguard batch path, no drivers, then with drivers (the default)
    load = {"before": os.getloadavg()[0]}
    sec = batch_path(False)
    results["churnguard"] = {"rows": n, "seconds": sec, "per_s": n / sec}
    sec = batch_path(True)
    results["churnguard_drivers"] = {"rows": n, "seconds": sec, "per_s": n / sec}

    # (b) floor: inplace_predict of the three boosters on the encoded matrix in memory
    X = np.concatenate([bundle.encode_arrow(b) for b in
                        pq.ParquetFile(feats_file).iter_batches(batch_size=args.chunk_size)])
    t = time.perf_counter()
    for booster in bundle.boosters():
        booster.inplace_predict(X)
    sec = time.perf_counter() - t
    results["floor"] = {"rows": n, "seconds": sec, "per_s": n / sec}
    # (b') the same with the churn booster's exact TreeSHAP (pred_contribs), which the
    # drivers need: the floor of the default job
    t = time.perf_counter()
    for booster in bundle.boosters():
        booster.inplace_predict(X)
    bundle.churn.booster.predict(xgb.DMatrix(X, feature_types=bundle.encoder().types,
                                             enable_categorical=True), pred_contribs=True,
                                 validate_features=False)
    sec = time.perf_counter() - t
    results["floor_drivers"] = {"rows": n, "seconds": sec, "per_s": n / sec}
    del X

    # (c) mlflow.pyfunc predict on a pandas frame
    mlflow.pyfunc.save_model(str(work / "pyfunc"), python_model=code_path(),
                             artifacts={"bundle": str(bundle_dir)})
    model = mlflow.pyfunc.load_model(str(work / "pyfunc"))
    frame = pq.read_table(feats_file).slice(0, args.pyfunc_rows).to_pandas()
    m = len(frame)
    t = time.perf_counter()
    model.predict(frame)
    sec = time.perf_counter() - t
    results["pyfunc"] = {"rows": m, "seconds": sec, "per_s": m / sec}

    load["after"] = os.getloadavg()[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    a, b, c = (results[k]["per_s"] for k in ("churnguard", "floor", "pyfunc"))
    d, e = (results[k]["per_s"] for k in ("churnguard_drivers", "floor_drivers"))
    checks = {"churnguard >= 50% of floor": a >= 0.5 * b, "churnguard >= 5x pyfunc": a >= 5 * c,
              "churnguard >= 40% of floor (issue 17)": a >= 0.4 * b,
              "churnguard with drivers >= 20,000 customers/s (issue 17)": d >= 20_000}
    report = {"command": f"python bench/batch.py --customers {args.customers}",
              "customers": n, "results": results, "ratio_to_floor": a / b,
              "ratio_to_pyfunc": a / c, "drivers_ratio_to_floor_drivers": d / e,
              "load_1m": load, "checks": checks, "peak_rss_mib": peak,
              "python": platform.python_version(), "machine": platform.machine(),
              "cpus": os.cpu_count()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "batch.json").write_text(json.dumps(report, indent=2))
    lines = [f"`{report['command']}` — {n:,} customers, peak RSS {peak:,.0f} MiB, load "
             f"average (1 min) {load['before']:.1f} before, {load['after']:.1f} after", "",
             "| row | rows | seconds | customers/s |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['rows']:,} | {v['seconds']:.2f} | {v['per_s']:,.0f} |"
              for k, v in results.items()]
    lines += ["", f"- churnguard / floor: {a / b:.1%}; with drivers / floor with drivers: "
              f"{d / e:.1%}",
              *(f"- {k}: {'pass' if ok else 'FAIL'}" for k, ok in checks.items())]
    (args.out_dir / "batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
