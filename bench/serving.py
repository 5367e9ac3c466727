"""Serving benchmark: churnguard's API against ``mlflow models serve`` and a minimal endpoint.

One command (see bench/README.md)::

    .venv/bin/python bench/serving.py

prepares (or reuses) demo data, a trained and registered model and its feature snapshot under
``bench/.data/serving/``, then, in the same run, starts each server on 127.0.0.1 with the same
number of workers and loads it with ``wrk`` (bounded runs):

- ``churnguard``: ``churnguard serve``, ``POST /v1/scores`` with one customer (inline features,
  and by id from the in-memory snapshot), full response (tiers, stage, drivers, actions);
- ``mlflow``: ``mlflow models serve`` on the same registered version (``--env-manager local``),
  ``POST /invocations`` with the same row as ``dataframe_records``;
- ``minimal``: a FastAPI endpoint that only parses the same payload into a preallocated numpy
  row and runs the churn booster's ``inplace_predict`` (no calibration, CLV, drivers, actions);
- ``floor``: the same-work floor, a FastAPI endpoint that parses the same payload the same way
  and makes exactly the booster calls churnguard makes for one customer (``model/score.py``:
  churn, P(buy) and spend ``inplace_predict`` with the BTYD prior's base margins, and the
  churn booster's ``pred_contribs`` on a one-row DMatrix for the drivers) and returns their
  raw numbers: churnguard's req/s as a share of it is what churnguard's own work costs
  (request checks, encoding, prior, calibration, policy, reasons, response, metrics, log);
- ``churnguard batch``: 100 customers per request (customers/s);
- ``churnguard-nolog``: ``churnguard serve`` with the prediction log switched off
  (``CHURNGUARD_PREDICTION_LOG=false``), to measure what logging costs in the same run; after
  the ``churnguard`` rows, every scored customer must be in the log or counted as dropped.

Writes ``<out-dir>/serving.json`` and ``<out-dir>/serving.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from processes import free_port, stop, wait_http

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent

# Targets from issue 17 ("serving hot path"), single customer with the full response.
VS_MLFLOW_MIN = 15.0  # churnguard rps >= 15x mlflow models serve (32 connections)
VS_FLOOR_MIN = 0.70  # churnguard rps >= 70 % of the same-work floor (32 connections)
P50_1_MAX_MS = 1.5  # 1 connection
P99_1_MAX_MS = 10.0
BATCH_CUSTOMERS_PER_S_MIN = 20_000  # 100-customer batches, drivers included
#: The prediction log may cost at most 10 % of the single-customer p50 (README, "Prediction log").
LOG_P50_MAX_RATIO = 1.10

# What both bare endpoints share: the request's feature values into the preallocated ``row``
# (the encoder's numbers and category codes), and the uvicorn settings of `churnguard serve`.
APP_ROW = '''
def fill_row(f):
    for j, n in enumerate(names):
        v = f[n]
        if kinds[j] == "category":
            row[0, j] = codes[n].get(v, np.nan) if v is not None else np.nan
        else:
            row[0, j] = np.nan if v is None else v
'''

APP_MAIN = '''
if __name__ == "__main__":
    import uvicorn
    # The same uvicorn settings as `churnguard serve` (uvloop + httptools from
    # uvicorn[standard], no access log, no proxy headers) and the same number of workers.
    workers = int(sys.argv[2])
    uvicorn.run("{module}:app" if workers > 1 else app, host="127.0.0.1",
                port=int(sys.argv[1]), workers=workers, log_level="warning", access_log=False,
                proxy_headers=False, app_dir=os.path.dirname(os.path.abspath(__file__)))
'''

MINIMAL_APP = '''
import os, sys, numpy as np, xgboost as xgb
from fastapi import FastAPI, Request
from fastapi.responses import Response
import orjson
from churnguard.model.bundle import ScoringBundle
bundle = ScoringBundle.load(os.environ["CG_MINIMAL_BUNDLE"])
enc = bundle.encoder()
names, kinds, codes = enc.names, enc.kinds, enc.codes
booster = bundle.churn.booster
booster.set_param({"nthread": 1})
row = np.empty((1, len(names)), dtype=np.float32)
app = FastAPI()

@app.post("/predict")
async def predict(request: Request) -> Response:
    body = orjson.loads(await request.body())
    out = []
    for c in body["customers"]:
        fill_row(c["features"])
        out.append({"customer_id": c["customer_id"],
                    "churn_score": float(booster.inplace_predict(row)[0])})
    return Response(orjson.dumps({"scores": out}), media_type="application/json")

'''

FLOOR_APP = '''
import os, sys, numpy as np, orjson, xgboost as xgb
from fastapi import FastAPI, Request
from fastapi.responses import Response
from churnguard.model.bundle import ScoringBundle
from churnguard.model.predictors import ClvModel
bundle = ScoringBundle.load(os.environ["CG_MINIMAL_BUNDLE"]).set_threads(1)
enc = bundle.encoder()
names, kinds, types, codes = enc.names, enc.kinds, enc.types, enc.codes
churn, clv = bundle.churn, bundle.clv
assert isinstance(clv, ClvModel), "the floor knows the hurdle CLV model's two boosters"
# What the boosters read besides the request's row, as model/score.py hands it to them: each
# model's masked columns set to missing, and the BTYD prior's base margins. The margins are
# closed-form numpy (model/predictors.py, BtydPrior.margins), not booster calls, and like the
# calibration (np.interp on the raw churn score) they are left out of the floor: computed
# once here for the benchmark's row (CG_FLOOR_ROW), so the floor does the booster work only.
with open(os.environ["CG_FLOOR_ROW"], "rb") as fh:
    X0 = enc.encode_records([orjson.loads(fh.read())])
m_churn = churn.margin(X0, names)
m_clv = clv.margins(X0, names) or (None, None)
churn_masked = [names.index(c) for c in churn.masked if c in names]
clv_masked = [names.index(c) for c in clv.info.get("masked", []) if c in names]
row = np.empty((1, len(names)), dtype=np.float64)
x_churn = np.empty_like(row)
x_clv = np.empty_like(row)
app = FastAPI()

@app.post("/predict")
async def predict(request: Request) -> Response:
    body = orjson.loads(await request.body())
    out = []
    for c in body["customers"]:
        fill_row(c["features"])
        x_churn[:] = row
        x_churn[0, churn_masked] = np.nan
        x_clv[:] = row
        x_clv[0, clv_masked] = np.nan
        raw = churn.booster.inplace_predict(x_churn, base_margin=m_churn)
        p_buy = clv.buy.inplace_predict(x_clv, base_margin=m_clv[0])
        log_spend = clv.spend.inplace_predict(x_clv, base_margin=m_clv[1])
        d = xgb.DMatrix(x_churn, feature_types=types, enable_categorical=True, nthread=1)
        contribs = churn.booster.predict(d, pred_contribs=True, validate_features=False)
        out.append({"customer_id": c["customer_id"], "churn_raw": float(raw[0]),
                    "p_buy": float(p_buy[0]), "log_spend": float(log_spend[0]),
                    "contributions": contribs[0].tolist()})
    return Response(orjson.dumps({"scores": out}), media_type="application/json")

'''

WRK_LUA = '''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "{key}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
'''

API_KEY = "bench-key-0123456789abcdef"


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, cwd=ROOT, env=env)


def prepare(args: argparse.Namespace) -> tuple[Path, Path, dict[str, str]]:
    """Demo data, a trained + registered model (champion) and the feature snapshot."""
    base = Path(args.data_dir)
    demo = base / f"demo-{args.customers}-seed{args.seed}"
    store = base / f"store-{args.customers}-seed{args.seed}"
    env = {**os.environ, "CHURNGUARD_DATA_DIR": str(store)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cli = str(BIN / "churnguard")
    if not (demo / "customers.parquet").exists():
        run([cli, "demo-data", "--out", str(demo), "--customers", str(args.customers),
             "--seed", str(args.seed), "--end", args.end], env)
    if args.bundle and not _has_champion(store):
        NOTES.append(f"model: the existing bundle {args.bundle} (--bundle), registered as the "
                     "churnguard pyfunc")
        register_bundle(Path(args.bundle), store)
    if not _has_champion(store):
        try:
            run([cli, "train", "--data", str(demo), "--max-train-cutoffs",
                 str(args.train_cutoffs)], env)
            from common import force_champion
            NOTES.append(f"model: the trained {force_champion(store)}")
        except subprocess.CalledProcessError:
            NOTES.append("`churnguard train` failed in this checkout; the model was fitted with "
                         "training.pipeline.fit_models and registered as the same pyfunc")
            register_fallback(demo, store, args.train_cutoffs)
    snapshot = store / "features.parquet"
    if not snapshot.exists():
        run([cli, "features", "build", "--data", str(demo), "--as-of", args.as_of,
             "--out", str(snapshot)], env)
    return store, snapshot, env


NOTES: list[str] = []


def _has_champion(store: Path) -> bool:
    if not (store / "mlflow.db").exists():
        return False
    try:
        champion_version(store)
    except Exception:
        return False
    return True


def champion_version(store: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from churnguard.model.registry import Tracking

    tracking = Tracking.resolve(store)
    tracking.activate()
    return str(tracking.client().get_model_version_by_alias("churnguard", "champion").version)


def register_fallback(demo: Path, store: Path, cutoffs: int) -> None:
    """fit_models + the default policy, logged as the churnguard pyfunc and made champion."""
    sys.path.insert(0, str(ROOT))

    from churnguard.features.sources import open_source
    from churnguard.model.policy import load_catalog
    from churnguard.training.pipeline import TrainConfig, fit_models

    source = open_source(demo)
    fitted = fit_models(source, config=TrainConfig(max_train_cutoffs=cutoffs,
                                                   clv_horizon_auto=True))
    bundle = fitted.bundle
    bundle.policy = load_catalog().fit_value_tiers(fitted.clv_preds["churnguard"]).to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        register_bundle(bundle.save(Path(tmp) / "bundle"), store)
    source.close()


def register_bundle(bundle_dir: Path, store: Path) -> None:
    """Log a saved bundle directory as the churnguard pyfunc and make it champion."""
    sys.path.insert(0, str(ROOT))
    import mlflow

    from churnguard.model.pyfunc import log_pyfunc
    from churnguard.model.registry import Tracking

    tracking = Tracking.resolve(store)
    tracking.activate()
    with mlflow.start_run(experiment_id=tracking.experiment_id("bench")):
        version = log_pyfunc(bundle_dir, registered_model_name="churnguard")
    tracking.client().set_registered_model_alias("churnguard", "champion",
                                                 version)


def champion(store: Path) -> tuple[str, Path]:
    """(version, local bundle directory) of the champion."""
    sys.path.insert(0, str(ROOT))
    import mlflow

    from churnguard.model.registry import Tracking

    tracking = Tracking.resolve(store)
    tracking.activate()
    version = str(tracking.client().get_model_version_by_alias("churnguard", "champion").version)
    local = Path(mlflow.artifacts.download_artifacts(
        f"models:/churnguard/{version}", dst_path=tempfile.mkdtemp(prefix="cg-bench-")))
    found = sorted(local.glob("artifacts/*/bundle.json"))
    if not found:
        raise RuntimeError(f"no bundle.json under {local}/artifacts")
    return version, found[0].parent


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    print("+", " ".join(argv), flush=True)
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in the process group (the server and
    its workers): CPU time per request, unlike wall-clock latency, does not depend on how busy
    the rest of the machine is."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "pid (comm)": state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, body: Path, connections: int, seconds: int, threads: int,
        tmp: Path) -> dict[str, Any]:
    script = tmp / f"post-{body.stem}.lua"
    script.write_text(WRK_LUA.format(key=API_KEY, body=body))
    argv = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s",
            "--timeout", "10s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"connections": connections, "seconds": seconds, "rps": rps, "requests": total,
            "p50_ms": lat.get("50"), "p90_ms": lat.get("90"), "p99_ms": lat.get("99"),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else "", "raw": out}


def payloads(snapshot: Path, tmp: Path) -> dict[str, Path]:
    import pandas as pd

    frame = pd.read_parquet(snapshot)
    row = frame.iloc[len(frame) // 2]
    cid = str(row["customer_id"])
    feats = json.loads(row.drop(["customer_id", "as_of"]).to_json())
    batch = [{"customer_id": str(c)} for c in frame["customer_id"].head(100)]
    files = {
        "inline": {"customers": [{"customer_id": cid, "features": feats}]},
        "by_id": {"customers": [{"customer_id": cid}]},
        "batch100": {"customers": batch},
        "mlflow": {"dataframe_records": [{"customer_id": cid, **feats}]},
        "floor_row": feats,
    }
    out = {}
    for name, body in files.items():
        out[name] = tmp / f"{name}.json"
        out[name].write_text(json.dumps(body))
    return out


def check_response(url: str, body: Path) -> dict[str, Any]:
    req = urllib.request.Request(url, data=body.read_bytes(), method="POST", headers={
        "Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=30) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    store, snapshot, env = prepare(args)
    version, bundle_dir = champion(store)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "serving.log"
    log.write_text("")
    tmp = Path(tempfile.mkdtemp(prefix="cg-bench-serving-"))
    bodies = payloads(snapshot, tmp)
    env = {**env, "CHURNGUARD_API_KEYS": API_KEY, "CHURNGUARD_LOG_LEVEL": "warning",
           "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for module, text in (("minimal_app", MINIMAL_APP), ("floor_app", FLOOR_APP)):
        (tmp / f"{module}.py").write_text(text + APP_ROW + APP_MAIN.format(module=module))
    results: dict[str, Any] = {"runs": [], "notes": list(NOTES)}
    samples: dict[str, Any] = {}
    load_before = os.getloadavg()
    servers = {
        "churnguard": ([str(BIN / "churnguard"), "serve", "--workers", str(args.workers)],
                       "/readyz", "/v1/scores"),
        "churnguard-nolog": ([str(BIN / "churnguard"), "serve", "--workers",
                              str(args.workers)], "/readyz", "/v1/scores"),
        "minimal": ([sys.executable, str(tmp / "minimal_app.py")], None,
                    "/predict"),
        "floor": ([sys.executable, str(tmp / "floor_app.py")], None, "/predict"),
        "mlflow": ([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/churnguard/{version}",
                    "--env-manager", "local", "--host", "127.0.0.1", "--workers",
                    str(args.workers)], "/ping", "/invocations"),
    }
    plan = {"churnguard": [("inline", c) for c in args.connections]
            + [("by_id", c) for c in args.connections] + [("batch100", args.batch_connections)],
            "churnguard-nolog": [("inline", c) for c in args.connections],
            "minimal": [("inline", c) for c in args.connections],
            "floor": [("inline", c) for c in args.connections],
            "mlflow": [("mlflow", c) for c in args.connections]}
    for name in args.servers:
        argv_, health, path = servers[name]
        port = free_port()
        if name.startswith("churnguard"):
            argv_ = [*argv_, "--port", str(port)]
        elif name in ("minimal", "floor"):
            argv_ = [*argv_, str(port), str(args.workers)]
        else:
            argv_ = [*argv_, "--port", str(port)]
        server_env = {**env, "CG_MINIMAL_BUNDLE": str(bundle_dir),
                      "CG_FLOOR_ROW": str(bodies["floor_row"]),
                      "CHURNGUARD_PREDICTION_LOG_DIR": str(tmp / "prediction_log"),
                      "CHURNGUARD_PREDICTION_LOG": str(name != "churnguard-nolog").lower()}
        if name == "mlflow":
            server_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{store.resolve()}/mlflow.db"}
        proc = start(argv_, server_env, log)
        try:
            base = f"http://127.0.0.1:{port}"
            if health:
                wait_http(base + health, proc)
            else:
                deadline = time.time() + 120
                while True:
                    try:
                        check_response(base + path, bodies["inline"])
                        break
                    except OSError:
                        if time.time() > deadline or proc.poll() is not None:
                            raise
                        time.sleep(0.3)
            sample = check_response(base + path, bodies[plan[name][0][0]])
            samples[name] = sample
            if name == "churnguard":
                s = sample["scores"][0]
                assert {"drivers", "actions", "lifecycle_stage", "value_tier"} <= set(s)
            for payload, conns in plan[name]:
                wrk(base + path, bodies[payload], conns, 2, args.threads, tmp)  # warm-up
                cpu0 = group_cpu_seconds(proc.pid)
                r = wrk(base + path, bodies[payload], conns, args.seconds, args.threads, tmp)
                r["server_cpu_ms_per_request"] = (
                    (group_cpu_seconds(proc.pid) - cpu0) * 1e3 / max(r["requests"], 1))
                r.update({"server": name, "payload": payload,
                          "customers_per_request": 100 if payload == "batch100" else 1})
                r["customers_per_s"] = r["rps"] * r["customers_per_request"]
                print(f"{name:10s} {payload:9s} c={conns:<3d} {r['rps']:9.1f} req/s  "
                      f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                      f"cpu {r['server_cpu_ms_per_request']:.2f} ms/req  "
                      f"non-2xx {r['non_2xx']}", flush=True)
                with log.open("a") as fh:
                    fh.write(r.pop("raw"))
                results["runs"].append(r)
            if name == "churnguard":
                results["prediction_log"] = logged_vs_scored(base, tmp / "prediction_log")
        except Exception as exc:  # record why a server could not be measured
            results["notes"].append(f"{name}: not measured ({type(exc).__name__}: {exc})")
            print(results["notes"][-1], flush=True)
        finally:
            stop(proc)
    if "churnguard" in samples and "floor" in samples:
        results["floor_same_work"] = same_work(samples["churnguard"]["scores"][0],
                                               samples["floor"]["scores"][0], bundle_dir)
    results["checks"] = checks(results["runs"], results.get("prediction_log"),
                               results.get("floor_same_work"))
    results["config"] = {**vars(args), "model_version": version,
                         "python": platform.python_version(), "machine": platform.machine(),
                         "cpus": os.cpu_count(), "when": datetime.now().isoformat(),
                         "loadavg_1m_before": round(load_before[0], 2),
                         "loadavg_1m_after": round(os.getloadavg()[0], 2)}
    (out_dir / "serving.json").write_text(json.dumps(results, indent=2))
    (out_dir / "serving.md").write_text(markdown(results))
    print((out_dir / "serving.md").read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def logged_vs_scored(base: str, log_dir: Path) -> dict[str, Any]:
    """After the load: customers scored vs rows the prediction log wrote or dropped (from
    /metrics, once the background writer has flushed) and the rows on disk."""
    import pyarrow.dataset as ds

    time.sleep(4.0)  # two flush intervals of the default 2 s
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    files = [str(p) for p in log_dir.glob("date=*/*.parquet")]
    on_disk = ds.dataset(files, format="parquet").count_rows() if files else 0
    out = {"scored": _metric(text, "churnguard_scores_total"),
           "logged": _metric(text, "churnguard_prediction_log_rows_total"),
           "dropped": _metric(text, "churnguard_prediction_log_dropped_rows_total"),
           "rows_on_disk": on_disk}
    print(f"prediction log: {out}", flush=True)
    return out


def _get(runs: list[dict[str, Any]], server: str, payload: str, conns: int) -> dict[str, Any]:
    for r in runs:
        if r["server"] == server and r["payload"] == payload and r["connections"] == conns:
            return r
    return {}


def same_work(score: dict[str, Any], floor: dict[str, Any], bundle_dir: Path
              ) -> dict[str, Any]:
    """Whether the floor's booster outputs are churnguard's for the benchmark's row: its CLV
    (scale × P(buy) × exp(log spend) × smear) and its top drivers (the largest positive
    contributions of the features churnguard may list) against churnguard's response."""
    sys.path.insert(0, str(ROOT))
    from churnguard.model.bundle import ScoringBundle

    bundle = ScoringBundle.load(bundle_dir)
    clv = bundle.clv
    clv_floor = max(float(getattr(clv, "scale", 1.0)) * floor["p_buy"]
                    * math.exp(floor["log_spend"]) * float(getattr(clv, "smear", 1.0)), 0.0)
    feats = bundle.spec.features()
    contribs = floor["contributions"][:-1]  # the last one is the bias
    ranked = sorted((c, f.name) for c, f in zip(contribs, feats, strict=True)
                    if f.role == "actionable" and c > 0)[::-1]
    drivers = [d["feature"] for d in score["drivers"]]
    floor_drivers = [name for _, name in ranked[:len(drivers)]]
    return {"clv_churnguard": score["clv"], "clv_floor": clv_floor,
            "drivers_churnguard": drivers, "drivers_floor": floor_drivers,
            "same": math.isclose(score["clv"], clv_floor, rel_tol=1e-5, abs_tol=1e-9)
            and drivers == floor_drivers}


def checks(runs: list[dict[str, Any]], plog: dict[str, Any] | None = None,
           floor_same: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    a32, a1 = _get(runs, "churnguard", "inline", 32), _get(runs, "churnguard", "inline", 1)
    n1 = _get(runs, "churnguard-nolog", "inline", 1)
    n32 = _get(runs, "churnguard-nolog", "inline", 32)
    b32, c32 = _get(runs, "mlflow", "mlflow", 32), _get(runs, "minimal", "inline", 32)
    f32 = _get(runs, "floor", "inline", 32)
    batch = next((r for r in runs if r["payload"] == "batch100"), {})
    out = []

    def add(name: str, value: float | None, target: str, ok: bool | None) -> None:
        out.append({"check": name, "value": value, "target": target,
                    "pass": ok})

    if a32 and b32:
        v = a32["rps"] / b32["rps"]
        add("churnguard / mlflow req/s (32 conn)", v, f">= {VS_MLFLOW_MIN}", v >= VS_MLFLOW_MIN)
    if a32 and f32:
        v = a32["rps"] / f32["rps"]
        add("churnguard / same-work floor req/s (32 conn)", v, f">= {VS_FLOOR_MIN}",
            v >= VS_FLOOR_MIN)
        add("churnguard p99 / same-work floor p99 (32 conn)", a32["p99_ms"] / f32["p99_ms"],
            "report", None)
    if floor_same:
        add("same-work floor returns churnguard's CLV and drivers (1 = yes)",
            float(floor_same["same"]), "1", bool(floor_same["same"]))
    if a32 and c32:
        add("churnguard / minimal req/s (32 conn)", a32["rps"] / c32["rps"], "report", None)
    if a1:
        add("churnguard p50 ms (1 conn)", a1["p50_ms"], f"<= {P50_1_MAX_MS}",
            a1["p50_ms"] <= P50_1_MAX_MS)
        add("churnguard p99 ms (1 conn)", a1["p99_ms"], f"<= {P99_1_MAX_MS}",
            a1["p99_ms"] <= P99_1_MAX_MS)
    if a1 and n1:
        v = a1["p50_ms"] / n1["p50_ms"]
        add("p50, prediction log on / off (1 conn)", v, f"<= {LOG_P50_MAX_RATIO}",
            v <= LOG_P50_MAX_RATIO)
    if a32 and n32:
        add("req/s, prediction log on / off (32 conn)", a32["rps"] / n32["rps"], "report",
            None)
        add("failed requests with the prediction log (32 conn)", a32["non_2xx"], "0",
            a32["non_2xx"] == 0)
    if plog:
        missing = plog["scored"] - plog["logged"] - plog["dropped"]
        add("scored customers neither logged nor counted as dropped", missing, "0",
            missing == 0 and plog["rows_on_disk"] == plog["logged"])
    if batch:
        add("churnguard customers/s (100-customer batches, drivers)", batch["customers_per_s"],
            f">= {BATCH_CUSTOMERS_PER_S_MIN:,}",
            batch["customers_per_s"] >= BATCH_CUSTOMERS_PER_S_MIN)
    return out


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [f"# Serving benchmark ({cfg['when'][:16]})", "",
             f"`.venv/bin/python bench/serving.py` — {cfg['customers']:,} demo customers, model "
             f"v{cfg['model_version']}, {cfg['workers']} worker(s) per server, wrk "
             f"{cfg['seconds']} s per row on 127.0.0.1, {cfg['cpus']} CPUs (shared with wrk); "
             f"1-minute load average {cfg.get('loadavg_1m_before', '?')} before the run, "
             f"{cfg.get('loadavg_1m_after', '?')} after. Server CPU ms/request is the server "
             "processes' user + system CPU time divided by the requests served: unlike latency it "
             "does not grow when other jobs share the machine.",
             "", "| server | payload | connections | req/s | customers/s | p50 ms | p90 ms | "
             "p99 ms | server CPU ms/req | non-2xx |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        cpu = r.get("server_cpu_ms_per_request")
        lines.append(f"| {r['server']} | {r['payload']} | {r['connections']} | {r['rps']:,.0f} | "
                     f"{r['customers_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {'' if cpu is None else f'{cpu:.2f}'} | "
                     f"{r['non_2xx']} |")
    lines += ["", "| check | value | target | result |", "|---|---:|---|---|"]
    for c in results["checks"]:
        verdict = {True: "pass", False: "FAIL", None: ""}[c["pass"]]
        lines.append(f"| {c['check']} | {c['value']:,.2f} | {c['target']} | {verdict} |")
    for note in results["notes"]:
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--end", default="2025-06-30", help="Last day of the demo data.")
    p.add_argument("--as-of", default="2025-07-01", help="Feature snapshot cutoff.")
    p.add_argument("--train-cutoffs", type=int, default=12)
    p.add_argument("--bundle", default=None, help="Register this saved bundle directory instead "
                   "of training one (when the store has no champion yet).")
    p.add_argument("--data-dir", default=str(HERE / ".data" / "serving"))
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--workers", type=int, default=1, help="Workers of every server.")
    p.add_argument("--threads", type=int, default=1, help="wrk threads.")
    p.add_argument("--seconds", type=int, default=10, help="wrk duration per row.")
    p.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    p.add_argument("--batch-connections", type=int, default=8)
    p.add_argument("--servers", nargs="+",
                   default=["churnguard", "churnguard-nolog", "floor", "minimal", "mlflow"],
                   choices=["churnguard", "churnguard-nolog", "floor", "minimal", "mlflow"])
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
