"""BTYD fit speed: churnguard's BG/NBD and Pareto/NBD fits against a plain scipy fit, same size.

    .venv/bin/python bench/btyd.py [--repeats 5] [--reference-loops 20]

On the CDNOW 1/10 calibration sample (2,357 customers, ``tests/fixtures/cdnow_sample.txt.gz``:
the data ``tests/code/test_btyd.py`` checks the published estimates on), in one process, rows
round-robin ``--repeats`` times after one warm-up round:

- ``bgnbd``: ``BetaGeoModel().fit`` (L-BFGS-B from three starts, a Nelder-Mead polish, a
  gradient check at the optimum);
- ``pnbd``: ``ParetoNBDModel().fit`` (the same, on the Pareto/NBD likelihood with its
  hypergeometric terms);
- ``reference``: ``scipy.optimize.minimize`` (L-BFGS-B, one start, finite-difference
  gradients) of the plain BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6, in numpy)
  on the same customers: what fitting a four-parameter likelihood of this size costs on this
  machine at this moment.

The machine-independent figure is each fit's median divided by the reference's median,
measured in the same run. Every row also records the highest 1-minute load average seen after
its runs (on a shared 2-core machine, above 2 means the timing was shared). The estimates are
checked against the published ones, so the benchmark cannot time a fit that went wrong.

Writes ``bench/results/btyd.json`` and ``bench/results/btyd.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CDNOW_SAMPLE = ROOT / "tests" / "fixtures" / "cdnow_sample.txt.gz"

# Published estimates (FHL 2005 Marketing Science; FHL 2005 JMR) on the CDNOW 1/10 sample.
BGNBD_PAPER = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PNBD_PAPER = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
BGNBD_LL, PNBD_LL = -9582.4, -9595.0
#: The bound the unit test used to assert on each fit (seconds), reported for continuity.
OLD_TEST_BOUND_S = 10.0


def calibration() -> pd.DataFrame:
    """The CDNOW calibration summary exactly as ``tests/code/test_btyd.py`` builds it."""
    from churnguard.model.btyd import rfm_summary

    raw = pd.read_csv(CDNOW_SAMPLE, sep=r"\s+", header=None,
                      names=["master_id", "customer_id", "date", "cds", "amount"],
                      dtype={"master_id": str, "customer_id": str, "date": str})
    raw["ts"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    summary = rfm_summary(raw, as_of=date(1997, 10, 1), include_zero_amounts=True,
                          T_to_last_day=True)
    assert len(summary) == 2357, len(summary)
    return summary


def plain_bgnbd_fit(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> tuple[dict[str, float],
                                                                          float]:
    """The reference: the BG/NBD log-likelihood as the paper writes it (eq. 6), minimised over
    log-parameters by scipy's L-BFGS-B from one start with finite-difference gradients."""
    from scipy.optimize import minimize
    from scipy.special import betaln, gammaln

    repeat = x > 0

    def neg_ll(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(log_params)
        with np.errstate(all="ignore"):
            a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
            a2 = betaln(a, b + x) - betaln(a, b)
            a3 = -(r + x) * np.log(alpha + T)
            a4 = np.where(repeat, np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0))
                          - (r + x) * np.log(alpha + t_x), -np.inf)
            ll = a1 + a2 + np.logaddexp(a3, a4)
        value = -float(ll.sum())
        return value if math.isfinite(value) else 1e300

    res = minimize(neg_ll, np.zeros(4), method="L-BFGS-B")
    params = dict(zip(("r", "alpha", "a", "b"), np.exp(res.x).tolist(), strict=True))
    return params, -float(res.fun)


def matches(got: dict[str, float], published: dict[str, float]) -> bool:
    return all(round(got[k], 2) == round(v, 2) for k, v in published.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per row (default 5)")
    ap.add_argument("--reference-loops", type=int, default=20,
                    help="reference fits per timed run (it takes milliseconds; the time per fit "
                    "is reported)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args()
    if args.repeats < 1 or args.reference_loops < 1:
        ap.error("--repeats and --reference-loops must be at least 1")

    from churnguard.model.btyd import BetaGeoModel, ParetoNBDModel

    s = calibration()
    x, t_x, T = (s[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))

    def bgnbd() -> tuple[dict[str, float], float]:
        m = BetaGeoModel().fit(x, t_x, T)
        assert m.params_ is not None and m.log_likelihood_ is not None
        return m.params_, m.log_likelihood_

    def pnbd() -> tuple[dict[str, float], float]:
        m = ParetoNBDModel().fit(x, t_x, T)
        assert m.params_ is not None and m.log_likelihood_ is not None
        return m.params_, m.log_likelihood_

    rows: dict[str, Callable[[], tuple[dict[str, float], float]]] = {
        "bgnbd": bgnbd, "pnbd": pnbd, "reference": lambda: plain_bgnbd_fit(x, t_x, T)}
    what = {"bgnbd": "BetaGeoModel().fit (churnguard)",
            "pnbd": "ParetoNBDModel().fit (churnguard)",
            "reference": "scipy L-BFGS-B, one start, of the plain BG/NBD likelihood (eq. 6); "
                         f"{args.reference_loops} fits per timed run, time per fit"}
    loops = {"bgnbd": 1, "pnbd": 1, "reference": args.reference_loops}
    published = {"bgnbd": (BGNBD_PAPER, BGNBD_LL), "pnbd": (PNBD_PAPER, PNBD_LL),
                 "reference": (BGNBD_PAPER, BGNBD_LL)}

    load_start = os.getloadavg()
    started = datetime.now(UTC)
    fits: dict[str, tuple[dict[str, float], float]] = {}
    for name, fit in rows.items():  # warm-up: imports, caches; also the estimates checked
        fits[name] = fit()
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    loads: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, fit in rows.items():
            t = time.perf_counter()
            for _ in range(loops[name]):
                fit()
            seconds[name].append((time.perf_counter() - t) / loops[name])
            loads[name].append(round(os.getloadavg()[0], 2))

    ref = statistics.median(seconds["reference"])
    results: dict[str, dict[str, Any]] = {}
    for name in rows:
        params, ll = fits[name]
        paper, paper_ll = published[name]
        med = statistics.median(seconds[name])
        results[name] = {
            "what": what[name], "runs_s": seconds[name], "median_s": med,
            "best_s": min(seconds[name]), "x_reference": med / ref,
            "max_load_1m": max(loads[name]), "params": params, "log_likelihood": ll,
            "matches_published": matches(params, paper) and abs(ll - paper_ll) <= 0.05}
    checks = {f"{name} fit < {OLD_TEST_BOUND_S:.0f} s (median; the old unit-test bound)":
              results[name]["median_s"] < OLD_TEST_BOUND_S for name in ("bgnbd", "pnbd")}
    checks |= {f"{name} reaches the published estimates": results[name]["matches_published"]
               for name in rows}
    from importlib.metadata import version

    report = {
        "command": f"python bench/btyd.py --repeats {args.repeats} "
                   f"--reference-loops {args.reference_loops}",
        "data": "CDNOW 1/10 calibration sample (tests/fixtures/cdnow_sample.txt.gz)",
        "customers": len(s), "repeats": args.repeats, "started": started.isoformat(),
        "results": results, "checks": checks,
        "load_average_at_start": load_start, "load_average_at_end": os.getloadavg(),
        "versions": {"python": platform.python_version(), "numpy": version("numpy"),
                     "scipy": version("scipy")},
        "machine": platform.machine(), "cpus": os.cpu_count()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "btyd.json").write_text(json.dumps(report, indent=2))
    lines = [f"`{report['command']}` — {len(s):,} CDNOW customers, {args.repeats} timed run(s) "
             f"per row after a warm-up, {report['cpus']} CPUs, started {started:%Y-%m-%d %H:%M} "
             f"UTC (1-minute load average {load_start[0]:.2f} at start)", "",
             "| row | median s | best s | × reference | max load 1m | log-likelihood | "
             "published estimates |", "|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {k} | {v['median_s']:.3f} | {v['best_s']:.3f} | {v['x_reference']:.1f} | "
              f"{v['max_load_1m']:.2f} | {v['log_likelihood']:.1f} | "
              f"{'yes' if v['matches_published'] else 'NO'} |" for k, v in results.items()]
    lines += ["", *(f"- `{k}`: {v['what']}" for k, v in results.items()), "",
              *(f"- {k}: {'pass' if ok else 'FAIL'}" for k, ok in checks.items())]
    (args.out_dir / "btyd.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
