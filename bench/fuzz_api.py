"""Fuzzing the scoring API: schemathesis' whole engine over the OpenAPI schema of a running
``churnguard serve``.

One command (see bench/README.md)::

    .venv/bin/python bench/fuzz_api.py                  # 500 examples per operation
    .venv/bin/python bench/fuzz_api.py --max-examples 1000 --seed 7

prepares (or reuses) demo data, bench/common.py's small trained bundle registered as champion
and its feature snapshot under ``bench/.data/fuzz/``, starts ``churnguard serve`` on a free
loopback port, and runs ``schemathesis run`` against it: every check (``--checks all``), both
generation modes (schema-valid and schema-invalid requests), the examples, coverage, fuzzing
and stateful phases, ``--max-examples`` per operation. The schema is the served one
(serving/docs.py completes it from the model: the inline feature row, the action ids, the
batch limits), so ``positive_data_acceptance`` and ``negative_data_rejection`` hold it to what
the service really accepts. One setting departs from schemathesis' defaults: 413 is an expected
answer to a schema-invalid request (too many customers is 413, README "Scoring API").

Server errors are counted twice: schemathesis' ``not_a_server_error`` failures and the service's
own ``churnguard_http_requests_total`` with a 5xx status (scraped from /metrics at the end).
Writes ``<out-dir>/fuzz.json`` and ``<out-dir>/fuzz.md``; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from processes import free_port, stop, wait_http

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
API_KEY = "fuzz-key-0123456789abcdef"
#: Expected answers to schema-invalid requests: schemathesis' defaults, and 413.
NEGATIVE_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429", "5xx"]
#: Batch limits of the fuzzed service (small, so that the coverage phase's "one more than
#: maxItems" requests stay small).
MAX_BATCH = 20


def prepare(cache: Path) -> Path:
    """A data dir with the small bundle registered as champion and its feature snapshot."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    from common import demo_data, small_bundle

    from churnguard.features.build import write_features
    from churnguard.features.sources import open_source
    from churnguard.model.bundle import ScoringBundle
    from churnguard.model.registry import Tracking

    store = cache / "store"
    tracking = Tracking.resolve(store)
    tracking.activate()
    client = tracking.client()
    try:
        client.get_model_version_by_alias("churnguard", "champion")
        have = True
    except Exception:
        have = False
    saved = cache / "small-bundle"
    if not (saved / "bundle.json").is_file():
        print("fitting bench/common.py's small bundle (about 1.5 minutes) …", flush=True)
        small_bundle(cache).save(saved)
    bundle = ScoringBundle.load(saved)
    if not have:
        import mlflow

        from churnguard.model.pyfunc import log_pyfunc

        with mlflow.start_run(experiment_id=tracking.experiment_id("fuzz")):
            version = log_pyfunc(saved, registered_model_name="churnguard")
        client.set_registered_model_alias("churnguard", "champion",
                                          version)
    snapshot = store / "features.parquet"
    if not snapshot.exists():
        with open_source(demo_data(cache, 3000, 1)) as src:
            write_features(src, bundle.spec, date.fromisoformat(bundle.metadata["as_of"]),
                           snapshot)
    return store


def known_ids(snapshot: Path, n: int = 50) -> list[str]:
    import pandas as pd

    return [str(c) for c in pd.read_parquet(snapshot, columns=["customer_id"])
            ["customer_id"].head(n)]


def _config(snapshot: Path) -> str:
    """schemathesis.toml: 413 expected for schema-invalid requests, and customer ids of the
    snapshot mixed into the generated ones (half of them), so that requests reach the
    scoring, not only the 404 and ``errors`` paths."""
    ids = ", ".join(json.dumps(c) for c in known_ids(snapshot))
    statuses = ", ".join(json.dumps(s) for s in NEGATIVE_STATUSES)
    return (f"[checks.negative_data_rejection]\nexpected-statuses = [{statuses}]\n\n"
            f"[dictionaries.customers]\nvalues = [{ids}]\n\n"
            "[parameters]\n"
            '"path.customer_id" = { dictionary = "customers", probability = 0.5 }\n'
            '"body.customers[*].customer_id" = { dictionary = "customers", probability = 0.5 }\n')


def server_requests(base: str) -> dict[str, dict[str, int]]:
    """Requests the service counted (its own /metrics), by route and status class."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"^churnguard_http_requests_total\{(.*)\} ([0-9.e+]+)$", text,
                         re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        route = f"{labels.get('method', '?')} {labels.get('route', '?')}"
        key = f"{labels.get('status', '?')[0]}xx"
        by = out.setdefault(route, {})
        by[key] = by.get(key, 0) + int(float(m.group(2)))
    return out


def failures(report: dict[str, Any]) -> list[Any]:
    """The failures and errors of schemathesis' JSON run report."""
    return [*report.get("failures", []), *report.get("errors", [])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-examples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1,
                    help="schemathesis workers (the service runs one worker process)")
    ap.add_argument("--data-dir", default=str(HERE / ".data" / "fuzz"))
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args()

    cache = Path(args.data_dir)
    cache.mkdir(parents=True, exist_ok=True)
    store = prepare(cache)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CHURNGUARD_DATA_DIR": str(store), "CHURNGUARD_API_KEYS": API_KEY,
           "CHURNGUARD_MAX_BATCH": str(MAX_BATCH), "CHURNGUARD_MAX_PLAN_CUSTOMERS": str(MAX_BATCH),
           "CHURNGUARD_POLL_SECONDS": "3600", "CHURNGUARD_LOG_LEVEL": "warning"}
    for var in ("MLFLOW_TRACKING_URI", "CHURNGUARD_MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    with tempfile.TemporaryDirectory(prefix="cg-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "schemathesis.toml"
        config.write_text(_config(store / "features.parquet"))
        server_log = tmp / "server.log"
        proc = subprocess.Popen([str(BIN / "churnguard"), "serve", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=ROOT, env=env,
                                stdout=server_log.open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_http(f"{base}/readyz", proc)
            argv = [str(BIN / "schemathesis"), "--no-color", "--config-file", str(config), "run",
                    f"{base}/openapi.json", "--checks", "all", "--mode", "all",
                    "--phases", "examples,coverage,fuzzing,stateful",
                    "--max-examples", str(args.max_examples), "--seed", str(args.seed),
                    "--workers", str(args.workers), "-H", f"X-API-Key: {API_KEY}",
                    "--suppress-health-check", "all", "--generation-database", "none",
                    "--report", "json", "--report-json-path", str(tmp / "report.json")]
            print("+", " ".join(a.replace(API_KEY, "…") for a in argv), flush=True)
            t0 = time.perf_counter()
            run = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            served = server_requests(base)
        finally:
            stop(proc)
        log_text = server_log.read_text(errors="replace")
        report = json.loads((tmp / "report.json").read_text()) \
            if (tmp / "report.json").exists() else {}
    (out / "fuzz.log").write_text(run.stdout + run.stderr)
    found = failures(report)
    summary = {k: report.get(k) for k in ("operations", "phases", "test_cases", "running_time",
                                          "stop_reason", "warnings", "valid_rates")}
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "schemathesis": _version(), "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_after": os.getloadavg()[0]},
        "settings": {"max_examples": args.max_examples, "seed": args.seed, "mode": "all",
                     "phases": "examples,coverage,fuzzing,stateful", "checks": "all",
                     "negative_expected_statuses": NEGATIVE_STATUSES,
                     "max_batch": MAX_BATCH, "max_plan_customers": MAX_BATCH,
                     "workers": args.workers},
        "seconds": round(seconds, 1), "exit_code": run.returncode,
        "summary": summary, "server_requests": served,
        "server_errors": sum(by.get("5xx", 0) for by in served.values()),
        "unhandled_errors_logged": log_text.count("unhandled error"),
        "failures": found,
    }
    (out / "fuzz.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "fuzz.md").write_text(_markdown(result))
    print((out / "fuzz.md").read_text())
    ok = run.returncode == 0 and not found and result["server_errors"] == 0
    return 0 if ok else 1


def _version() -> str:
    from importlib.metadata import version

    return version("schemathesis")


def _markdown(r: dict[str, Any]) -> str:
    s = r["summary"]
    ops, cases = s.get("operations") or {}, s.get("test_cases") or {}
    warned = {k: v for k, v in (s.get("warnings") or {}).items() if v}
    lines = [
        "# API fuzzing (bench/fuzz_api.py)", "",
        f"{r['when']}, schemathesis {r['schemathesis']}, Python {r['python']}, "
        f"{r['machine']['cpus']} CPUs (1-minute load average after the run "
        f"{r['machine']['load_avg_1m_after']:.2f}).", "",
        f"`schemathesis run --checks all --mode all --phases {r['settings']['phases']} "
        f"--max-examples {r['settings']['max_examples']} --seed {r['settings']['seed']}` "
        f"against `churnguard serve` (one worker; CHURNGUARD_MAX_BATCH and "
        f"CHURNGUARD_MAX_PLAN_CUSTOMERS {r['settings']['max_batch']}); 413 added to the "
        "statuses expected for schema-invalid requests.", "",
        "| what | value |", "|---|---|",
        f"| schemathesis exit code | {r['exit_code']} ({s.get('stop_reason')}) |",
        f"| API operations tested | {ops.get('tested')} of {ops.get('total')} |",
        f"| test cases generated | {cases.get('generated', 0):,} |",
        f"| test cases with failures | {cases.get('with_failures')} "
        f"(unique failures {cases.get('unique_failures')}, errored {cases.get('errored')}) |",
        f"| failures and errors (all checks) | {len(r['failures'])} |",
        "| requests the service counted | "
        f"{sum(sum(by.values()) for by in r['server_requests'].values()):,} |",
        f"| server errors (5xx) | {r['server_errors']} |",
        f"| unhandled errors in the service log | {r['unhandled_errors_logged']} |",
        f"| wall time | {r['seconds']:.0f} s |", "",
    ]
    phases = s.get("phases") or {}
    lines += ["Phases: " + ", ".join(
        f"{name} {p.get('status')}" + (f" ({p['skip_reason']})" if p.get("skip_reason") else "")
        for name, p in phases.items()) + ".", ""]
    if warned:
        lines += ["Schemathesis warnings: " + "; ".join(
            f"{k}: {', '.join(map(str, v))}" for k, v in warned.items()) + ".", ""]
    lines += ["Requests the service counted, by route and status (its own metrics):", "",
              "| route | 2xx | 4xx | 5xx |", "|---|---:|---:|---:|"]
    rest: dict[str, int] = {}
    n_rest = 0
    for route, by in sorted(r["server_requests"].items()):
        if sum(by.values()) > 1:
            lines.append(f"| {route} | {by.get('2xx', 0):,} | {by.get('4xx', 0):,} | "
                         f"{by.get('5xx', 0):,} |")
            continue
        n_rest += 1
        for k, v in by.items():
            rest[k] = rest.get(k, 0) + v
    if n_rest:
        lines.append(f"| {n_rest} other method/route pairs, one request each (the methods a "
                     f"route does not have: 405) | {rest.get('2xx', 0):,} | "
                     f"{rest.get('4xx', 0):,} | {rest.get('5xx', 0):,} |")
    lines.append("")
    lines += ["Schema-valid test cases the service accepted / rejected, by operation and "
              "phase (schemathesis' valid rates):", "",
              "| operation | phase | accepted | rejected |", "|---|---|---:|---:|"]
    for op, by_phase in sorted((s.get("valid_rates") or {}).items()):
        for phase, v in by_phase.items():
            lines.append(f"| {op} | {phase} | {v.get('accepted')} | {v.get('rejected')} |")
    lines.append("")
    if r["failures"]:
        lines += ["Failures:", ""] + [f"- {json.dumps(f)[:300]}" for f in r["failures"][:50]] \
            + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
