"""Feature-build benchmark: churnguard against a DuckDB scan floor and a pandas reference.

One command (see bench/README.md)::

    .venv/bin/python bench/features.py --customers 1000000

generates (or reuses) demo data with ``churnguard demo-data``, then measures on the same data in
the same run, each measurement in a fresh subprocess (wall time and that process's peak RSS):

- ``scan_floor``: DuckDB reads every column the features need, one GROUP BY customer per table;
- ``feature_query``: churnguard's feature SQL straight over the Parquet files (no data checks);
- ``build``: ``churnguard features build`` end to end (the real CLI, with its data checks);
- ``pandas``: ``bench/pandas_features.py``, the same features in idiomatic pandas;
- ``grid``: ``churnguard features grid`` with 12 monthly cutoffs (features + labels);
- ``separate_builds`` (``--separate-builds``): 12 ``features build`` runs, one per cutoff.

Writes ``<out-dir>/features.json`` and ``<out-dir>/features.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GIB = 1024**3
TABLES = ("customers", "transactions", "events")

# Targets from the issue, at 1M customers / ~20M transactions / ~50M events on 2 cores.
FLOOR_RATIO_MAX = 1.3
PANDAS_SPEEDUP_MIN = 2.0
PEAK_RSS_MAX = 2 * GIB
GRID_RATIO_MAX = 3.0

SCAN_FLOOR = """
import sys, duckdb
data, memory_limit = sys.argv[1], sys.argv[2]
# Options as DuckDB config, never as SQL text (as churnguard.features.sources.connect does).
con = duckdb.connect(":memory:", config={"memory_limit": memory_limit, "TimeZone": "UTC",
                                          "preserve_insertion_order": False})
attrs = [r[0] for r in con.execute(
    "DESCRIBE SELECT * FROM read_parquet(?)", [f"{data}/customers.parquet"]).fetchall()
    if r[0] not in ("customer_id", "signup_date") and str(r[1]).startswith(("VARCHAR", "BOOL"))]
# One GROUP BY customer per table touching every column the features read. The outer query
# consumes every aggregate, so that DuckDB's optimizer cannot prune a column away.
tables = {
    "customers": ["max(signup_date)"] + [f'max("{a}")' for a in attrs],
    "transactions": ["sum(amount)", "max(ts)"],
    "events": ['sum("count")', "max(ts)", "max(event_type)"],
}
for name, aggs in tables.items():
    inner = ", ".join(f"{a} AS a{i}" for i, a in enumerate(aggs))
    outer = ", ".join(f"max(a{i})" for i in range(len(aggs)))
    row = con.execute(
        f"SELECT count(*), sum(n), {outer} FROM (SELECT customer_id, count(*) AS n, {inner} "
        "FROM read_parquet(?) GROUP BY customer_id)", [f"{data}/{name}.parquet"]).fetchone()
    print(f"{name}: {row[0]:,} customers, {row[1]:,} rows, {row[2:]}")
"""

FEATURE_QUERY = """
import sys
from datetime import date, datetime
from pathlib import Path
from churnguard.features.build import infer_spec, write_features
from churnguard.features.sources import Source, connect
from churnguard.features.sql import literal
data, as_of, out, memory_limit = sys.argv[1], date.fromisoformat(sys.argv[2]), sys.argv[3], \\
    sys.argv[4]
con = connect(memory_limit)
for t in ("customers", "transactions", "events"):
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet({literal(f'{data}/{t}.parquet')})")
con.execute("CREATE VIEW raw_customers AS SELECT * FROM customers")
cols = {t: tuple(r[0] for r in con.execute(f"DESCRIBE {t}").fetchall())
        for t in ("customers", "transactions", "events")}
attrs = tuple(r[0] for r in con.execute("DESCRIBE customers").fetchall()
              if r[0] not in ("customer_id", "signup_date")
              and str(r[1]).startswith(("VARCHAR", "BOOL", "ENUM")))
source = Source(con=con, location=data, tables=frozenset(cols), columns=cols,
                attribute_columns=attrs, reference_time=datetime.now())
spec = infer_spec(source)
summary = write_features(source, spec, as_of, Path(out))
print(f"wrote {summary.n_rows:,} rows x {summary.n_features} features in {summary.seconds:.1f}s")
"""


@dataclass
class Run:
    seconds: float
    peak_rss_bytes: int
    returncode: int
    timed_out: bool = False
    load_average_1min: float | None = None  # other work on the machine while this ran


@dataclass
class Measurement:
    name: str
    description: str
    commands: Callable[[Path], list[list[str]]]  # given a scratch dir; run in sequence
    runs: list[Run] = field(default_factory=list)
    shown_command: str = ""

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.returncode == 0 and not r.timed_out]

    def median(self) -> float | None:
        ok = self.ok_runs
        return statistics.median(r.seconds for r in ok) if ok else None

    def best(self) -> float | None:
        ok = self.ok_runs
        return min(r.seconds for r in ok) if ok else None

    def peak_rss(self) -> int | None:
        return max((r.peak_rss_bytes for r in self.runs), default=None)


def run_child(argv: list[str], log: Path, timeout: float, cwd: Path) -> Run:
    """Run ``argv``; wall time and the child's own peak RSS (from wait4's rusage).

    The child runs in the scratch directory so that DuckDB's default spill directory (``.tmp``
    under the working directory) is private to the benchmark.
    """
    with open(log, "ab") as sink:
        sink.write(f"$ {shlex.join(argv)}\n".encode())
        sink.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux.
    return Run(seconds, int(usage.ru_maxrss) * 1024, proc.returncode, killed.is_set(),
               round(os.getloadavg()[0], 2))


def run_measurement(m: Measurement, scratch: Path, log: Path, timeout: float) -> Run:
    total, peak, code, timed_out, loads = 0.0, 0, 0, False, []
    deadline = time.perf_counter() + timeout
    for argv in m.commands(scratch):
        left = deadline - time.perf_counter()
        if left <= 0:
            timed_out = True
            break
        run = run_child(argv, log, left, scratch)
        total += run.seconds
        peak = max(peak, run.peak_rss_bytes)
        code = code or run.returncode
        timed_out = timed_out or run.timed_out
        loads.append(run.load_average_1min or 0.0)
        if code or timed_out:
            break
        clear(scratch)
    return Run(total, peak, code, timed_out, max(loads, default=None))


def clear(scratch: Path) -> None:
    for leftover in scratch.iterdir():
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink()


def ensure_demo_data(data_dir: Path, customers: int, seed: int) -> Path:
    """``<data_dir>/demo-<customers>-seed<seed>``, generated by ``churnguard demo-data`` once."""
    target = data_dir / f"demo-{customers}-seed{seed}"
    if all((target / f"{t}.parquet").is_file() for t in TABLES):
        print(f"reusing demo data in {target}", flush=True)
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(churnguard_exe()), "demo-data", "--out", str(target),
            "--customers", str(customers), "--seed", str(seed)]
    print(f"generating demo data: {shlex.join(argv)}", flush=True)
    subprocess.run(argv, check=True, cwd=ROOT)
    return target


def churnguard_exe() -> Path:
    exe = Path(sys.executable).with_name("churnguard")
    return exe if exe.exists() else Path("churnguard")


def warm_cache(data: Path) -> None:
    """Read every input file once so that all measurements start from a warm page cache."""
    for t in TABLES:
        with open(data / f"{t}.parquet", "rb") as fh:
            while fh.read(1 << 24):
                pass


def table_rows(data: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {t: pq.ParquetFile(data / f"{t}.parquet").metadata.num_rows for t in TABLES}


def months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def measurements(args: argparse.Namespace, data: Path) -> list[Measurement]:
    py, cg = sys.executable, str(churnguard_exe())
    as_of = args.as_of.isoformat()
    first = months_before(args.as_of, 11)
    cutoffs = [months_before(args.as_of, k) for k in range(11, -1, -1)]
    mem = args.memory_limit
    out: list[Measurement] = [
        Measurement(
            "scan_floor",
            "DuckDB scan floor: read every column the features need, one GROUP BY customer "
            "per table (no features, no output file)",
            lambda s: [[py, "-c", SCAN_FLOOR, str(data), mem]],
            shown_command="python -c SCAN_FLOOR (bench/features.py)",
        ),
        Measurement(
            "feature_query",
            "churnguard's feature SQL (write_features) straight over the Parquet files: no "
            "contract checks, no duplicate removal",
            lambda s: [[py, "-c", FEATURE_QUERY, str(data), as_of, str(s / "q.parquet"), mem]],
            shown_command="python -c FEATURE_QUERY (bench/features.py)",
        ),
        Measurement(
            "build",
            "`churnguard features build` end to end (the real CLI, with its data checks)",
            lambda s: [[cg, "features", "build", "--data", str(data), "--as-of", as_of,
                        "--out", str(s / "f.parquet")]],
            shown_command=f"churnguard features build --data DATA --as-of {as_of} "
            "--out f.parquet",
        ),
    ]
    if not args.skip_pandas:
        out.append(Measurement(
            "pandas",
            "bench/pandas_features.py: the same features in idiomatic pandas (pyarrow reads, "
            "vectorised groupby), written to Parquet; no data checks",
            lambda s: [[py, str(HERE / "pandas_features.py"), "--data", str(data),
                        "--as-of", as_of, "--out", str(s / "p.parquet")]],
            shown_command=f"python bench/pandas_features.py --data DATA --as-of {as_of} "
            "--out p.parquet",
        ))
    if not args.skip_grid:
        out.append(Measurement(
            "grid",
            f"`churnguard features grid`: 12 monthly cutoffs {first}..{as_of}, features + "
            "labels, one process",
            lambda s: [[cg, "features", "grid", "--data", str(data), "--first",
                        first.isoformat(), "--last", as_of, "--out", str(s / "g.parquet")]],
            shown_command=f"churnguard features grid --data DATA --first {first} --last {as_of} "
            "--out g.parquet",
        ))
    if args.separate_builds:
        out.append(Measurement(
            "separate_builds",
            "12 separate `churnguard features build` runs, one per grid cutoff (summed)",
            lambda s: [[cg, "features", "build", "--data", str(data), "--as-of", c.isoformat(),
                        "--out", str(s / f"f{c}.parquet")] for c in cutoffs],
            shown_command="12 x churnguard features build --as-of <cutoff>",
        ))
    return out


def target_checks(by_name: dict[str, Measurement]) -> list[dict[str, Any]]:
    def med(name: str) -> float | None:
        m = by_name.get(name)
        return m.median() if m else None

    floor, build, pandas, grid = med("scan_floor"), med("build"), med("pandas"), med("grid")
    checks: list[dict[str, Any]] = []

    def add(target: str, measured: float | None, threshold: str, ok: bool | None,
            unit: str) -> None:
        checks.append({"target": target, "measured": measured, "unit": unit,
                       "threshold": threshold,
                       "status": "n/a" if ok is None else ("pass" if ok else "FAIL")})

    ratio = build / floor if build and floor else None
    add("build within 1.3x of the scan floor", ratio, f"<= {FLOOR_RATIO_MAX}",
        None if ratio is None else ratio <= FLOOR_RATIO_MAX, "x floor")
    speedup = pandas / build if pandas and build else None
    add(">= 2x faster than pandas", speedup, f">= {PANDAS_SPEEDUP_MIN}",
        None if speedup is None else speedup >= PANDAS_SPEEDUP_MIN, "x (pandas / build)")
    peaks = [p for n in ("build", "grid") if n in by_name
             for p in [by_name[n].peak_rss()] if p is not None]
    peak = max(peaks) / GIB if peaks else None
    add("peak memory <= 2 GiB (build and grid)", peak, "<= 2.0",
        None if peak is None else peak <= PEAK_RSS_MAX / GIB, "GiB")
    grid_ratio = grid / build if grid and build else None
    add("12 monthly snapshots < 3x one build", grid_ratio, f"< {GRID_RATIO_MAX}",
        None if grid_ratio is None else grid_ratio < GRID_RATIO_MAX, "x (grid / build)")
    return checks


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def write_reports(out_dir: Path, meta: dict[str, Any], ms: list[Measurement],
                  checks: list[dict[str, Any]]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    floor = next((m.median() for m in ms if m.name == "scan_floor"), None)

    def ratio(m: Measurement) -> float | None:
        med = m.median()
        return med / floor if med is not None and floor else None

    payload = {
        "meta": meta,
        "measurements": {
            m.name: {
                "description": m.description,
                "command": m.shown_command,
                "median_seconds": m.median(),
                "best_seconds": m.best(),
                "peak_rss_bytes": m.peak_rss(),
                "ratio_to_floor": ratio(m),
                "runs": [vars(r) for r in m.runs],
            }
            for m in ms
        },
        "targets": checks,
    }
    json_path = out_dir / "features.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")

    rows = meta["rows"]
    lines = [
        "# Feature-build benchmark",
        "",
        f"Demo data: {rows['customers']:,} customers, {rows['transactions']:,} transactions, "
        f"{rows['events']:,} events (seed {meta['seed']}); cutoff {meta['as_of']}; "
        f"{meta['cpus']} CPUs; {meta['repeats']} run(s) each, median shown; "
        f"generated {meta['finished']}.",
        "",
        "churnguard code: git {git_head}, sources sha256 {sources_sha256} (uncommitted edits: "
        "{sources_dirty}).".format(**meta["code_at_start"])
        + (" **The churnguard sources changed during this run: rows mix versions.**"
           if meta["code_changed_during_run"] else ""),
        "",
        f"Command: `{meta['command']}`",
        "",
        "| measurement | median s | best s | peak RSS | x floor | runs | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in ms:
        med = m.median()
        peak = m.peak_rss()
        failed = len(m.runs) - len(m.ok_runs)
        loads = [r.load_average_1min for r in m.runs if r.load_average_1min is not None]
        lines.append(
            f"| {m.name} | {_fmt(med)} | {_fmt(m.best())} | "
            f"{_fmt(peak / GIB if peak else None, '.2f')} GiB | "
            f"{_fmt(med / floor if med and floor else None, '.2f')} | "
            f"{len(m.ok_runs)}{f' ({failed} failed)' if failed else ''} | "
            f"{_fmt(max(loads) if loads else None)} |"
        )
    lines += ["", "| target | measured | threshold | result |", "|---|---:|---:|---|"]
    for c in checks:
        lines.append(f"| {c['target']} | {_fmt(c['measured'], '.2f')} {c['unit']} | "
                     f"{c['threshold']} | {c['status']} |")
    lines += ["", "Rows (load avg: the highest 1-minute load average seen at the end of a run, "
              f"on {meta['cpus']} CPUs; above that the machine was shared):", ""]
    lines += [f"- `{m.name}`: {m.description}." for m in ms]
    md_path = out_dir / "features.md"
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def code_fingerprint() -> dict[str, str]:
    """Git HEAD and a hash of the churnguard sources on disk (edits during a run show up)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("features/*.py"), *ROOT.glob("features/*.sql"),
                        *ROOT.glob("churnguard/*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "features", "churnguard"],
                           cwd=ROOT, text=True, capture_output=True).stdout.strip()
    return {"git_head": head or "unknown", "sources_dirty": str(bool(dirty)).lower(),
            "sources_sha256": digest.hexdigest()[:16]}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for pkg in ("churnguard", "duckdb", "pandas", "pyarrow", "numpy"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            found[pkg] = "missing"
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=HERE / ".data",
                        help="Cache of generated demo data (one folder per size and seed).")
    parser.add_argument("--data", type=Path, default=None,
                        help="Use this existing data directory instead of demo data.")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2025, 7, 1),
                        help="Cutoff of the single build; the grid's last cutoff (month start).")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Runs of each measurement (interleaved); the median is reported.")
    parser.add_argument("--grid-repeats", type=int, default=None,
                        help="Runs of the grid (default: --repeats).")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--separate-builds", action="store_true",
                        help="Also time 12 separate builds, one per grid cutoff.")
    parser.add_argument("--memory-limit", default="1536MB",
                        help="DuckDB memory limit for the scan floor and the feature query "
                        "(the CLI uses CHURNGUARD_DUCKDB_MEMORY_LIMIT, default 1536MB).")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="Seconds after which one measurement run is killed.")
    args = parser.parse_args(argv)
    if args.as_of.day != 1:
        parser.error("--as-of must be a month start (it is the grid's last cutoff)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now().isoformat(timespec="seconds")
    data = args.data or ensure_demo_data(args.data_dir, args.customers, args.seed)
    data = data.resolve()
    rows = table_rows(data)
    print(f"data {data}: {rows}", flush=True)
    warm_cache(data)

    ms = measurements(args, data)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log = args.out_dir / "features.log"
    log.write_text(f"# bench/features.py started {started}\n")
    grid_repeats = args.grid_repeats if args.grid_repeats is not None else args.repeats
    meta: dict[str, Any] = {
        "command": shlex.join([".venv/bin/python", "bench/features.py",
                               *(argv if argv is not None else sys.argv[1:])]),
        "data": str(data),
        "demo_data": args.data is None,
        "customers": args.customers,
        "seed": args.seed,
        "rows": rows,
        "as_of": args.as_of.isoformat(),
        "repeats": args.repeats,
        "grid_repeats": grid_repeats,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "versions": versions(),
        "code_at_start": code_fingerprint(),
        "started": started,
    }
    args.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=args.data_dir) as tmp:
        scratch = Path(tmp)
        for rep in range(max(args.repeats, grid_repeats)):
            for m in ms:
                wanted = grid_repeats if m.name == "grid" else args.repeats
                if rep >= wanted:
                    continue
                run = run_measurement(m, scratch, log, args.timeout)
                m.runs.append(run)
                status = ("timeout" if run.timed_out else
                          f"exit {run.returncode}" if run.returncode else "ok")
                print(f"[{rep + 1}] {m.name:16s} {run.seconds:8.1f}s  peak RSS "
                      f"{run.peak_rss_bytes / GIB:5.2f} GiB  load {run.load_average_1min}  "
                      f"{status}", flush=True)
                clear(scratch)
    meta["finished"] = datetime.now().isoformat(timespec="seconds")
    meta["load_average_at_end"] = os.getloadavg()
    meta["code_at_end"] = code_fingerprint()
    meta["code_changed_during_run"] = meta["code_at_end"] != meta["code_at_start"]
    checks = target_checks({m.name: m for m in ms})
    json_path, md_path = write_reports(args.out_dir, meta, ms, checks)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return 0 if all(m.ok_runs for m in ms) else 1


if __name__ == "__main__":
    sys.exit(main())
