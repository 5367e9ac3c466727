"""The API as an operator runs it (issue "Hardening"): registered artefacts are never unpickled
and foreign ones are refused, a model that scores NaN is refused at load (by the API and the
batch job), a feature snapshot that does not fit the model never replaces the good one,
``churnguard serve`` opens its port at once with the registry down, ``/readyz`` shows no
internals, the log works with ``--workers`` and without warning spam, and ``/v1/model`` prints
floats sensibly. The Redis side is in test_api_redis.py, a registry outage while serving in
test_mlflow_server.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import FAKE_AS_OF, make_fake_bundle
from tests.integration import test_api as _api
from tests.integration.test_api import (
    API_KEY,
    NAME,
    _free_port,
    _wait_for,
    assert_error,
    ids,
    promote,
    register,
    settings_for,
)

api_bundle_dir = _api.api_bundle_dir
api_store = _api.api_store
snapshot = _api.snapshot


# ---------------------------------------------------------------------------------------------
# Helpers


class _RunsCode:
    """Pickles to ``os.system("touch <marker>")``: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def pyfunc_dir(out: Path, bundle_dir: Path) -> Path:
    """The churnguard pyfunc of ``bundle_dir`` saved as a local MLflow model directory
    (``MLmodel``, ``python_model.pkl``, ``artifacts/bundle``), as training logs it."""
    import mlflow

    from churnguard.model.pyfunc import ChurnguardPyfunc

    mlflow.pyfunc.save_model(str(out), python_model=ChurnguardPyfunc(),
                             artifacts={"bundle": str(bundle_dir)},
                             pip_requirements=["churnguard"])
    return out


def register_artifacts(data_dir: Path, model_dir: Path) -> str:
    """Register the files of ``model_dir``, whatever they are, as a new version (not champion)
    in the embedded store of ``data_dir``: what anyone with write access to the registry can
    do."""
    import mlflow

    from churnguard.model.registry import Tracking

    tracking = Tracking.resolve(data_dir)
    tracking.activate()
    with mlflow.start_run(experiment_id=tracking.experiment_id("ops-tests")) as run:
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
    return str(mlflow.register_model(f"runs:/{run.info.run_id}/model", NAME).version)


def edited_bundle(src: Path, out: Path, edit: Any) -> Path:
    """A copy of bundle directory ``src`` whose bundle.json ``edit(meta)`` changed."""
    shutil.copytree(src, out)
    meta = json.loads((out / "bundle.json").read_text())
    edit(meta)
    (out / "bundle.json").write_text(json.dumps(meta))
    return out


def ready(c: TestClient) -> dict[str, Any]:
    body: dict[str, Any] = c.get("/readyz").json()
    return body


def assert_public(body: dict[str, Any], *secrets: str) -> None:
    """/readyz shows codes and short messages only: no paths, URLs or exception text."""
    assert set(body) == {"ready", "status", "model_version", "problems"}
    for problem in body["problems"]:
        code, _, message = problem.partition(": ")
        assert code.replace("_", "").isalpha() and code.islower() and message, problem
        assert "/" not in problem and "://" not in problem, problem
        for word in ("Error", "Exception", "Traceback", "errno", *secrets):
            assert word not in problem, (word, problem)


def status_details(c: TestClient) -> str:
    """Every problem's detail in /v1/model (behind the API key)."""
    info = c.get("/v1/model")
    assert info.status_code == 200, info.text
    return " ".join(p["detail"] for p in info.json()["status"]["problems"])


@pytest.fixture()
def data_dir(tmp_path: Path, api_bundle_dir: Path, snapshot: Path) -> Path:
    """A fresh embedded store with v1 (the fake bundle) champion and the snapshot."""
    out = tmp_path / "store"
    out.mkdir()
    register(out, api_bundle_dir)
    shutil.copy(snapshot, out / "features.parquet")
    return out


# ---------------------------------------------------------------------------------------------
# 1. Model artefacts are never unpickled; foreign artefacts are refused


def test_pickled_code_never_runs_and_foreign_artifacts_are_refused(
        data_dir: Path, api_bundle_dir: Path, snapshot: Path, tmp_path: Path) -> None:
    from churnguard.serving.app import create_app

    marker = tmp_path / "pickle-ran"
    evil = pickle.dumps(_RunsCode(marker))
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_RunsCode(control)))  # the payload is live
    assert control.exists()

    def model_with(bundle: Path | None, name: str, mlmodel_bundle_path: str | None = None,
                   ) -> Path:
        out = pyfunc_dir(tmp_path / f"model-{name}", api_bundle_dir)
        (out / "python_model.pkl").write_bytes(evil)
        if bundle is not None:
            shutil.rmtree(out / "artifacts" / "bundle")
            shutil.copytree(bundle, out / "artifacts" / "bundle")
        if mlmodel_bundle_path is not None:
            mlmodel = yaml.safe_load((out / "MLmodel").read_text())
            mlmodel["flavors"]["python_function"]["artifacts"]["bundle"]["path"] = (
                mlmodel_bundle_path)
            (out / "MLmodel").write_text(yaml.safe_dump(mlmodel))
        return out

    no_json = tmp_path / "no-json"
    shutil.copytree(api_bundle_dir, no_json)
    (no_json / "bundle.json").unlink()
    not_a_bundle = edited_bundle(api_bundle_dir, tmp_path / "not-a-bundle",
                                 lambda m: [m.pop(k) for k in ("spec", "levels")])
    valid = register_artifacts(data_dir, model_with(None, "valid"))
    refused = {
        register_artifacts(data_dir, model_with(no_json, "no-json")):
            "not a churnguard bundle (no bundle.json)",
        register_artifacts(data_dir, model_with(not_a_bundle, "bad-json")):
            "invalid bundle files",
        register_artifacts(data_dir, model_with(None, "escapes",
                                                mlmodel_bundle_path="../../../../..")):
            "bundle artifact path outside the model",
    }
    cid = ids(snapshot, 1)[0]
    with TestClient(create_app(settings_for(data_dir)), headers={"X-API-Key": API_KEY}) as c:
        assert ready(c)["model_version"] == "1"
        promote(data_dir, valid)
        _wait_for(lambda: ready(c)["model_version"] == valid)
        assert ready(c)["status"] == "ok"
        r = c.post("/v1/scores", json={"customers": [{"customer_id": cid}]})
        assert r.status_code == 200 and r.json()["model_version"] == valid
        assert not marker.exists(), "the API unpickled python_model.pkl"

        for version, reason in refused.items():
            promote(data_dir, version)
            _wait_for(lambda v=version: any(f"champion v{v} could not be loaded" in p
                                            for p in ready(c)["problems"]))
            body = ready(c)
            assert body["ready"] is True and body["status"] == "degraded"
            assert body["model_version"] == valid
            assert body["problems"] == [f"model_load_failed: champion v{version} could not be "
                                        f"loaded ({reason}); serving v{valid}"]
            assert_public(body, str(tmp_path))
            r = c.post("/v1/scores", json={"customers": [{"customer_id": cid}]})
            assert r.status_code == 200 and r.json()["model_version"] == valid
            assert c.get("/v1/model").json()["reload_error"]["version"] == version
    assert not marker.exists(), "a python_model.pkl was unpickled"


# ---------------------------------------------------------------------------------------------
# 2. A model whose self-check scores NaN is refused by the API and the batch job


def test_model_scoring_nan_clv_is_refused_at_load(
        data_dir: Path, api_bundle_dir: Path, snapshot: Path, tmp_path: Path,
        small_demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from churnguard.cli import app as cli
    from churnguard.serving.app import create_app

    def nan_scale(meta: dict[str, Any]) -> None:
        meta["clv"]["scale"] = float("nan")

    nan_clv = register(data_dir, edited_bundle(api_bundle_dir, tmp_path / "nan", nan_scale),
                       champion=False)
    cid = ids(snapshot, 1)[0]
    with TestClient(create_app(settings_for(data_dir)), headers={"X-API-Key": API_KEY}) as c:
        promote(data_dir, nan_clv)
        _wait_for(lambda: ready(c)["status"] == "degraded")
        body = ready(c)
        assert body["ready"] is True and body["model_version"] == "1"
        assert body["problems"] == [
            f"model_load_failed: champion v{nan_clv} could not be loaded (failed its "
            "self-check (CLV out of range or not finite)); serving v1"]
        r = c.post("/v1/scores", json={"customers": [{"customer_id": cid}]})
        assert r.status_code == 200, r.text
        (score,) = r.json()["scores"]
        assert score["model_version"] == "1" and math.isfinite(score["clv"])
        assert "CLVs [nan" in status_details(c)

    # The batch job reads models through the same loader: it refuses the version too.
    monkeypatch.setenv("CHURNGUARD_DATA_DIR", str(data_dir))
    for var in ("MLFLOW_TRACKING_URI", "CHURNGUARD_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(cli, ["score", "--data", str(small_demo_dir), "--as-of",
                                      FAKE_AS_OF.isoformat(), "--out", str(out),
                                      "--model", f"models:/{NAME}/{nan_clv}"])
    assert result.exit_code == 1, result.output
    assert "self-check" in result.output and not out.exists()


# ---------------------------------------------------------------------------------------------
# 4. A feature snapshot that does not fit the model never replaces the good one


def test_snapshot_without_a_models_column_keeps_the_good_one(
        data_dir: Path, snapshot: Path, fake_spec: Any, fake_features: Any,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import pandas as pd

    from churnguard.serving.app import create_app

    # `features build` on data without the model's last event type: no columns for it.
    spec_without = dataclasses.replace(fake_spec, event_types=fake_spec.event_types[:-1])
    dropped = sorted(set(fake_spec.feature_names()) - set(spec_without.feature_names()))
    assert dropped
    good = pd.read_parquet(snapshot)
    next_day = str(FAKE_AS_OF + timedelta(days=1))
    without = good.drop(columns=dropped)
    without["as_of"] = pd.Timestamp(next_day)
    live = data_dir / "features.parquet"
    cids = [str(x) for x in good["customer_id"].head(3)]
    body = {"customers": [{"customer_id": x} for x in cids]}
    caplog.set_level(logging.INFO, logger="churnguard")

    with TestClient(create_app(settings_for(data_dir)), headers={"X-API-Key": API_KEY}) as c:
        assert ready(c)["status"] == "ok"
        before = c.get("/v1/model").json()["feature_snapshot"]
        expected = c.post("/v1/scores", json=body).json()["scores"]
        without.to_parquet(tmp_path / "new.parquet")
        os.replace(tmp_path / "new.parquet", live)  # as features build writes it
        _wait_for(lambda: ready(c)["status"] == "degraded")
        state = ready(c)
        assert state["ready"] is True
        assert state["problems"] == [
            f"snapshot_mismatch: the new feature snapshot as of {next_day} does not fit "
            "model v1; still serving the previous one"]
        assert_public(state, str(tmp_path), *dropped)
        r = c.post("/v1/scores", json=body)
        assert r.status_code == 200, r.text
        got = r.json()["scores"]
        assert [s["churn_probability"] for s in got] == [
            s["churn_probability"] for s in expected]
        assert c.get("/v1/model").json()["feature_snapshot"] == before
        details = status_details(c)
        assert str(live) in details and dropped[0] in details
        assert any(rec.levelno == logging.ERROR and str(live) in rec.getMessage()
                   and "does not fit model v1" in rec.getMessage() for rec in caplog.records)

        # A model without that event type: the refused snapshot is checked again, fits, and
        # replaces the old one.
        v2_dir = make_fake_bundle(spec_without, fake_features).save(tmp_path / "v2")
        v2 = register(data_dir, v2_dir)
        _wait_for(lambda: ready(c) == {"ready": True, "status": "ok", "model_version": v2,
                                       "problems": []})
        snap = c.get("/v1/model").json()["feature_snapshot"]
        assert snap["fingerprint"] != before["fingerprint"]
        assert snap["as_of"] == next_day
        r = c.post("/v1/scores", json=body)
        assert r.status_code == 200 and r.json()["model_version"] == v2

        # Back to v1: the served snapshot no longer fits, and says so; inline scores still work.
        promote(data_dir, "1")
        _wait_for(lambda: ready(c)["model_version"] == "1")
        _wait_for(lambda: ready(c)["status"] == "degraded")
        assert ready(c)["problems"] == [
            f"snapshot_mismatch: the feature snapshot as of {snap['as_of']} does not fit "
            "model v1: customer-id lookups answer 503 until a snapshot for it is built"]
        assert_error(c.post("/v1/scores", json=body), 503, "feature_store_unavailable")
        good.to_parquet(tmp_path / "good.parquet")
        os.replace(tmp_path / "good.parquet", live)
        _wait_for(lambda: ready(c)["status"] == "ok")
        assert c.post("/v1/scores", json=body).status_code == 200


# ---------------------------------------------------------------------------------------------
# 5. `churnguard serve` opens its port at once with the registry down


@pytest.fixture()
def hung_server() -> Iterator[str]:
    """http://127.0.0.1:<port> of a server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _serve(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``churnguard serve`` in its own process group, stderr and stdout into ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "churnguard.cli", "serve", *args],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "CHURNGUARD_", "PROMETHEUS_"))}
    env.update({"CHURNGUARD_DATA_DIR": str(tmp_path / "data"), "CHURNGUARD_API_KEYS": API_KEY,
                "CHURNGUARD_POLL_SECONDS": "1"})
    env.update(extra)
    return env


def test_serve_with_registry_down_binds_at_once_and_says_why(hung_server: str,
                                                              tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    started = time.monotonic()
    proc = _serve(["--port", str(port)], _service_env(tmp_path, MLFLOW_TRACKING_URI=hung_server),
                  log)
    try:
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() - started < 20, "no /healthz within 20 s\n" + log.read_text()
            try:
                r = httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        bound = time.monotonic() - started
        r = httpx.get(f"{base}/readyz", timeout=5)
        assert r.status_code == 503 and r.json()["ready"] is False
        assert r.json()["status"] == "not_ready" and r.json()["problems"]
        err = httpx.post(f"{base}/v1/scores", json={"customers": [{"customer_id": "a"}]},
                         headers={"X-API-Key": API_KEY}, timeout=5)
        assert err.status_code == 503 and err.json()["error"]["code"] == "no_model"
        # Every registry call gives up within seconds (MLflow would retry for minutes).
        deadline = time.monotonic() + 60
        while not any(p.startswith("registry_unavailable:") for p in
                      httpx.get(f"{base}/readyz", timeout=5).json()["problems"]):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        body = httpx.get(f"{base}/readyz", timeout=5).json()
        assert body["status"] == "not_ready" and body["problems"][0] == (
            "registry_unavailable: cannot resolve churnguard@champion: the model registry did "
            "not answer or refused the request; scoring answers 503 until a model loads")
        assert_public(body, hung_server.split("//")[1])
        assert httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    finally:
        _stop(proc)
    text = log.read_text()
    assert "cannot resolve models:/churnguard@champion" in text and hung_server in text
    assert bound < 20


# ---------------------------------------------------------------------------------------------
# 8. Logs: churnguard's lines from every worker, no warnings on start


def test_serve_with_workers_logs_from_every_worker_without_warnings(
        data_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = _serve(["--port", str(port), "--workers", "2"],
                  _service_env(tmp_path, CHURNGUARD_DATA_DIR=str(data_dir)), log)
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count("serving churnguard v1") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        r = httpx.get(f"{base}/readyz", timeout=5, headers={"X-Request-ID": "ops-42"})
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
        assert "churnguard_model_info" in httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        _stop(proc)
    text = log.read_text()
    # The access log at the default level: the request is found by its id.
    assert any(" INFO churnguard.serving.access: request_id=ops-42 method=GET route=/readyz "
               "status=200 " in line for line in text.splitlines()), text
    lines = [line for line in text.splitlines() if " INFO churnguard.serving: " in line]
    assert sum("serving churnguard v1 (was none)" in line for line in lines) == 2, text
    assert sum("feature snapshot" in line and "loaded" in line for line in lines) == 2, text
    for noise in ("Warning", "WARNING", "Clearing labels", "type hints"):
        assert noise not in text, text


def test_logging_the_pyfunc_as_training_does_warns_nothing(
        fake_bundle: Any, fake_bundle_dir: Path, fake_features: Any, embedded_store: Path,
        caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder) -> None:
    import mlflow

    from churnguard.model.registry import Tracking
    from churnguard.training import register as training_register

    # Defining the pyfunc class (importing the module) asks for no type hints.
    code = ("import warnings\nwarnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    import churnguard.model.pyfunc\n"
            "print([str(w.message) for w in seen if 'type hint' in str(w.message)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

    tracking = Tracking.resolve(embedded_store)
    tracking.activate()
    fitted = type("Fitted", (), {
        "bundle": fake_bundle, "grid": fake_features, "test_rows": slice(None),
        "spec": fake_bundle.spec, "config": type("Config", (), {"model_name": NAME})()})()
    caplog.set_level(logging.WARNING)
    with mlflow.start_run(experiment_id=tracking.experiment_id("pyfunc-warnings")):
        # A stub with the attributes _log_pyfunc reads of a training result.
        version = training_register._log_pyfunc(fake_bundle_dir, fitted)
    assert version == "1"
    # No MLflow hint or warning at all: type hints, integer columns in the inferred schema, the
    # CloudPickle warning (the model is logged from code: nothing is pickled).
    assert not [str(w.message) for w in recwarn if issubclass(w.category, UserWarning)]
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("mlflow")]


# ---------------------------------------------------------------------------------------------
# 9. /v1/model floats


def test_model_info_floats_are_rounded(api_store: Path) -> None:
    from churnguard.serving.app import create_app

    with TestClient(create_app(settings_for(api_store)), headers={"X-API-Key": API_KEY}) as c:
        info = c.get("/v1/model").json()

    floats: list[float] = []

    def walk(v: Any) -> None:
        if isinstance(v, float):
            floats.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(info["policy"])
    walk(info["metrics"])
    assert info["policy"]["value_cuts"] and floats
    for x in floats:
        assert float(f"{x:.6g}") == x, x
    assert all(isinstance(a["effect"], float) for a in info["policy"]["actions"])


# ---------------------------------------------------------------------------------------------
# 10. Monitoring in the service: the last verdict in /v1/model, the live score PSI in /metrics


@pytest.fixture(scope="module")
def profiled_store(fake_bundle: Any, fake_features: Any, snapshot: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A data dir whose champion v1 is the fake bundle with the reference profile training
    gives it (of the features it was fitted on), and the snapshot; and that bundle's dir."""
    from churnguard.model.bundle import ScoringBundle
    from tests.scoring import with_reference_profile

    root = tmp_path_factory.mktemp("profiled")
    bundle = with_reference_profile(ScoringBundle.load(fake_bundle.save(root / "copy")),
                                    fake_features, fake_bundle.metadata["as_of"])
    bundle_dir = bundle.save(root / "bundle")
    data_dir = root / "store"
    register(data_dir, bundle_dir)
    shutil.copy(snapshot, data_dir / "features.parquet")
    return data_dir, bundle_dir


def _gauges(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of the samples of ``name`` in a /metrics text."""
    out = {}
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == name or head.startswith(name + "{"):
            out[head[len(name):]] = float(value)
    return out


def test_live_score_psi_in_metrics_and_reset_on_a_new_champion(
        profiled_store: tuple[Path, Path], snapshot: Path, tmp_path: Path) -> None:
    from churnguard.model.bundle import ScoringBundle
    from churnguard.model.profile import population_stability_index
    from churnguard.serving.app import create_app

    data_dir, bundle_dir = profiled_store
    entry = ScoringBundle.load(bundle_dir).metadata["reference_profile"]["churn_probability"]
    every = ids(snapshot, 400)
    s = settings_for(data_dir, monitor_live_window=300, monitor_live_min_rows=120,
                     monitor_state_path=tmp_path / "none.json")
    with TestClient(create_app(s), headers={"X-API-Key": API_KEY}) as c:
        def psi_series() -> dict[str, float]:
            return _gauges(c.get("/metrics").text, "churnguard_score_psi")

        def rows() -> float:
            return _gauges(c.get("/metrics").text,
                           "churnguard_score_psi_window_rows")[""]

        assert psi_series() == {} and rows() == 0
        served: list[float] = []

        def post(batch: list[str]) -> None:
            r = c.post("/v1/scores", json={"customers": [{"customer_id": i} for i in batch]})
            assert r.status_code == 200, r.text
            served.extend(x["churn_probability"] for x in r.json()["scores"])

        post(every[:100])
        assert psi_series() == {} and rows() == 100  # below the minimum: no PSI yet
        one = c.get(f"/v1/customers/{every[100]}/score")  # the single-customer route counts
        served.append(one.json()["churn_probability"])
        assert rows() == 101
        for k in range(101, 400, 50):
            post(every[k:k + 50])
        window = served[-300:]
        assert rows() == 300
        series = psi_series()
        assert list(series) == ['{model_version="1"}']
        assert series['{model_version="1"}'] == pytest.approx(
            population_stability_index(entry, window), rel=1e-9, abs=1e-12)
        # A new champion: the window starts again, v1's series is gone.
        promote(data_dir, register(data_dir, bundle_dir, champion=False))
        _wait_for(lambda: c.get("/readyz").json()["model_version"] == "2", 60)
        assert psi_series() == {} and rows() == 0
        post(every[:150])
        assert list(psi_series()) == ['{model_version="2"}']


def test_model_info_shows_the_last_monitoring_verdict(
        profiled_store: tuple[Path, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from churnguard.serving.app import create_app
    from churnguard.serving.monitor_state import record_verdict

    data_dir, _ = profiled_store
    state = tmp_path / "monitoring" / "last_verdict.json"
    report = {"verdict": "warn", "as_of": "2025-07-01", "model_version": "1",
              "reasons": [f"feature f{i}: PSI 0.1{i} (warn at 0.1)" for i in range(12)],
              "score": {"psi": 0.0123456789}}
    with TestClient(create_app(settings_for(data_dir, monitor_state_path=state)),
                    headers={"X-API-Key": API_KEY}) as c:
        version = c.get("/v1/model").json()["version"]
        assert c.get("/v1/model").json()["monitoring"] is None  # no verdict recorded yet
        record_verdict({**report, "model_version": version}, state,
                       report_path=tmp_path / "monitor.json")
        mon = c.get("/v1/model").json()["monitoring"]
        assert mon["verdict"] == "warn" and mon["as_of"] == "2025-07-01"
        assert mon["model_version"] == version and mon["for_served_model"] is True
        assert len(mon["reasons"]) == 10 and mon["reasons_total"] == 12
        assert mon["score_psi"] == pytest.approx(0.0123457) and mon["checked_at"]
        assert mon["report_path"] == str(tmp_path / "monitor.json")
        # About another version: shown, and said so.
        record_verdict({**report, "verdict": "alert", "model_version": "999"}, state)
        mon = c.get("/v1/model").json()["monitoring"]
        assert mon["verdict"] == "alert" and mon["for_served_model"] is False
        # A corrupt file never fails the request: no verdict, and a warning in the log.
        state.write_text('{"verdict": "ok", "reasons": [')
        with caplog.at_level(logging.WARNING, logger="churnguard.serving"):
            r = c.get("/v1/model")
        assert r.status_code == 200 and r.json()["monitoring"] is None
        assert "last monitoring verdict" in caplog.text
        spec = c.get("/openapi.json").json()["components"]["schemas"]
        assert "for_served_model" in spec["MonitoringVerdict"]["properties"]
