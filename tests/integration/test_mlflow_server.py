"""Train against a real ``mlflow server`` (SQLite or PostgreSQL backend, proxied artifacts)."""

from __future__ import annotations

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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def mlflow_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(tracking URI, artifacts dir) of a fresh ``mlflow server``, killed afterwards."""
    db_name = None
    admin = None
    if request.param == "postgres":
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
        yield uri, artifacts
    finally:
        if proc.poll() is None:
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
    assert result.version == "1" and result.promoted
    client = tracking.client()
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
