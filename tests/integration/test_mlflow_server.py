"""Train against a real ``mlflow server`` (SQLite or PostgreSQL backend, proxied artifacts)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import small_train_config

PG_URL = os.environ.get("CHURNGUARD_TEST_POSTGRES_URL",
                        "postgresql://postgres@127.0.0.1:5432/test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL does not answer at {PG_URL}: {exc}")


@contextlib.contextmanager
def _server(backend_kind: str, tmp_path: Path) -> Iterator[tuple[str, Path, Any]]:
    """(tracking URI, artifacts dir, process) of a fresh ``mlflow server``, killed afterwards."""
    db_name = None
    admin = None
    if backend_kind == "postgres":
        admin = _pg_admin()
        db_name = f"cg_mlflow_{uuid.uuid4().hex[:10]}"
        admin.execute(f'CREATE DATABASE "{db_name}"')
        base = PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        backend = f"{base}/{db_name}"
    else:
        backend = f"sqlite:///{tmp_path / 'server.db'}"
    artifacts = tmp_path / "server-artifacts"
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend, "--artifacts-destination", str(artifacts),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited:\n"
                                   + (tmp_path / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("mlflow server did not become healthy in 120 s:\n"
                                   + (tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield uri, artifacts, proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        if admin is not None and db_name is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def mlflow_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(tracking URI, artifacts dir) of a fresh ``mlflow server``, killed afterwards."""
    with _server(request.param, tmp_path) as (uri, artifacts, _):
        yield uri, artifacts


def test_train_registers_on_a_server(mlflow_server: tuple[str, Path], small_source: Any,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from churnguard.model.registry import Tracking, load_bundle
    from churnguard.training.pipeline import train
    from churnguard.training.registry import list_versions
    from tests.scoring import score_source

    uri, artifacts = mlflow_server
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    tracking = Tracking.resolve(Path("unused"), uri)
    assert tracking.uri == uri and tracking.artifact_root is None

    result = train(small_source, tracking, config=small_train_config(experiment="server-test"))
    assert result.version == "1" and result.reason
    client = tracking.client()
    if not result.promoted:  # 800 customers: the gate may keep it challenger
        from churnguard.training.registry import promote

        assert promote(client, "churnguard", "1", force=True).promote
    assert client.get_model_version_by_alias("churnguard", "champion").version == "1"
    assert client.get_model_version_by_alias("churnguard", "challenger").version == "1"
    run = client.get_run(result.run_id)
    assert len(run.data.params["data_fingerprint"]) == 16
    assert "test_churn_roc_auc" in run.data.metrics
    assert "test_baseline_logreg_churn_roc_auc" in run.data.metrics
    assert run.data.params["spec_fingerprint"]
    # artifacts went through the server's proxy into --artifacts-destination
    assert any(artifacts.rglob("bundle.json")) and any(artifacts.rglob("report.html"))

    bundle, version = load_bundle("models:/churnguard@champion")
    assert version == "1"
    scores = score_source(small_source, bundle, result.churn_plan.test)
    assert len(scores) > 0 and scores["churn_probability"].between(0, 1).all()

    rows = list_versions(client, "churnguard")
    assert [r["version"] for r in rows] == ["1"]
    assert rows[0]["aliases"] == ["challenger", "champion"]


def test_registry_outage_while_serving_shows_in_readyz_within_seconds(
        tmp_path: Path, fake_bundle_dir: Path, fake_features: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``churnguard serve`` against a real server that then hangs (SIGSTOP: connections are
    accepted, nothing answers): /readyz says so within seconds while v1 keeps scoring, and
    ``ok`` again once the server answers."""
    import httpx
    import mlflow

    from churnguard.model.pyfunc import ChurnguardPyfunc
    from churnguard.model.registry import Tracking
    from tests.integration.test_api_ops import _serve, _service_env, _stop

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    with _server("sqlite", tmp_path) as (uri, _, server):
        tracking = Tracking.resolve(Path("unused"), uri)
        tracking.activate()
        with mlflow.start_run(experiment_id=tracking.experiment_id("serve-test")):
            mlflow.pyfunc.log_model(name="model", python_model=ChurnguardPyfunc(),
                                    artifacts={"bundle": str(fake_bundle_dir)},
                                    registered_model_name="churnguard",
                                    pip_requirements=["churnguard"])
        tracking.client().set_registered_model_alias("churnguard", "champion", "1")
        data = tmp_path / "data"
        data.mkdir()
        fake_features.to_parquet(data / "features.parquet")
        cid = str(fake_features["customer_id"].iloc[0])
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "serve.log"
        proc = _serve(["--port", str(port)], _service_env(tmp_path, MLFLOW_TRACKING_URI=uri),
                      log)

        def readyz() -> dict[str, Any]:
            try:
                body: dict[str, Any] = httpx.get(f"{base}/readyz", timeout=5).json()
            except httpx.TransportError:
                return {"status": "down", "problems": []}
            return body

        def wait(pred: Any, seconds: float) -> float:
            t0 = time.monotonic()
            while not pred(readyz()):
                assert proc.poll() is None and time.monotonic() - t0 < seconds, log.read_text()
                time.sleep(0.3)
            return time.monotonic() - t0

        def scores() -> Any:
            return httpx.get(f"{base}/v1/customers/{cid}/score", timeout=10,
                             headers={"X-API-Key": "test-key-0123456789abcdef"})

        try:
            wait(lambda b: b["status"] == "ok", 90)
            assert scores().json()["model_version"] == "1"
            os.killpg(server.pid, signal.SIGSTOP)
            took = wait(lambda b: any(p.startswith("registry_unavailable:")
                                      for p in b["problems"]), 60)
            assert took < 45, took  # MLflow's own defaults: about 4 minutes
            body = readyz()
            assert body["ready"] is True and body["status"] == "degraded"
            assert body["model_version"] == "1" and uri.split("//")[1] not in str(body)
            r = scores()
            assert r.status_code == 200 and r.json()["model_version"] == "1"
            os.killpg(server.pid, signal.SIGCONT)
            wait(lambda b: b["status"] == "ok", 60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGCONT)
            _stop(proc)
        text = log.read_text()
        assert "cannot resolve models:/churnguard@champion" in text
        assert "model registry answers again" in text
