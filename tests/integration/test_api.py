"""The scoring API through the real app: every route, status code and error shape, feature
lookup vs inline identity, model reload while serving, and a broken new champion."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.scoring import score_frame

API_KEY = "test-key-0123456789abcdef"
OLD_KEY = "old-key-0123456789abcdef"
NAME = "churnguard"


# ---------------------------------------------------------------------------------------------
# Fixtures: a registered model (the session's fake-fit bundle, with the default action policy)
# and a feature snapshot of the small demo data as of the bundle's as-of date


def register(data_dir: Path, bundle_dir: Path, *, champion: bool = True) -> str:
    """Log ``bundle_dir`` as a churnguard pyfunc version in the embedded store of data_dir."""
    import mlflow

    from churnguard.model.pyfunc import ChurnguardPyfunc
    from churnguard.model.registry import Tracking

    tracking = Tracking.resolve(data_dir)
    tracking.activate()
    with mlflow.start_run(experiment_id=tracking.experiment_id("api-tests")):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ChurnguardPyfunc(), artifacts={"bundle": str(bundle_dir)},
            registered_model_name=NAME, pip_requirements=["churnguard"])
    version = str(info.registered_model_version)
    if champion:
        tracking.client().set_registered_model_alias(NAME, "champion", version)
    return version


def promote(data_dir: Path, version: str) -> None:
    from churnguard.model.registry import Tracking

    Tracking.resolve(data_dir).client().set_registered_model_alias(NAME, "champion", version)


@pytest.fixture(scope="session")
def api_bundle_dir(fake_bundle_dir: Path) -> Path:
    """The bundle directory every API test registers (the API only needs *a* fitted bundle)."""
    return fake_bundle_dir


@pytest.fixture(scope="session")
def snapshot(small_source: Any, fake_bundle: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The feature snapshot as ``churnguard features build`` writes it, for the bundle's spec
    as of its as-of date."""
    from churnguard.features.build import write_features

    out = tmp_path_factory.mktemp("snapshot") / "features.parquet"
    write_features(small_source, fake_bundle.spec,
                   date.fromisoformat(fake_bundle.metadata["as_of"]), out)
    return out


@pytest.fixture(scope="session")
def api_store(api_bundle_dir: Path, snapshot: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir: embedded MLflow store with v1 as champion, the snapshot as features.parquet."""
    data_dir = tmp_path_factory.mktemp("api-store")
    register(data_dir, api_bundle_dir)
    shutil.copy(snapshot, data_dir / "features.parquet")
    return data_dir


def settings_for(data_dir: Path, **kw: Any) -> Any:
    from churnguard.config import Settings

    base: dict[str, Any] = {"data_dir": data_dir, "api_keys": [API_KEY, OLD_KEY],
                            "poll_seconds": 0.2, "mlflow_tracking_uri": None}
    base.update(kw)
    return Settings(**base)


@pytest.fixture(scope="session")
def client(api_store: Path) -> Iterator[TestClient]:
    from churnguard.serving.app import create_app

    with TestClient(create_app(settings_for(api_store, max_batch=50,
                                            max_request_bytes=200_000)),
                    headers={"X-API-Key": API_KEY}) as c:
        yield c


def inline_row(snapshot: Path, i: int = 0) -> tuple[str, dict[str, Any]]:
    import pandas as pd

    row = pd.read_parquet(snapshot).iloc[i]
    feats = json.loads(row.drop(["customer_id", "as_of"]).to_json())
    return str(row["customer_id"]), feats


def ids(snapshot: Path, n: int) -> list[str]:
    import pandas as pd

    return [str(c) for c in pd.read_parquet(snapshot)["customer_id"].head(n)]


def assert_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"status", "code", "message", "request_id", "details"}
    assert err["status"] == status and err["message"]
    assert err["request_id"] == resp.headers["x-request-id"]
    if code:
        assert err["code"] == code
    return err


# ---------------------------------------------------------------------------------------------
# Scores


def test_score_by_id_has_every_field(client: TestClient, snapshot: Path) -> None:
    cid = ids(snapshot, 1)[0]
    r = client.post("/v1/scores", json={"customers": [{"customer_id": cid}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["model_version"] == "1"
    (s,) = body["scores"]
    assert set(s) == {"customer_id", "churn_probability", "risk_tier", "clv", "clv_low",
                      "clv_high", "value_tier", "lifecycle_stage", "drivers", "actions",
                      "warnings", "horizon_days", "clv_horizon_days", "model_version",
                      "scored_at"}
    assert 0 <= s["clv_low"] <= s["clv_high"]
    assert body["errors"] == [] and s["warnings"] == []
    assert s["customer_id"] == cid and 0 < s["churn_probability"] < 1 and s["clv"] >= 0
    assert s["risk_tier"] in ("low", "medium", "high")
    assert s["value_tier"] in ("low", "medium", "high", "top")
    assert s["lifecycle_stage"] in ("new", "active", "loyal", "declining", "at_risk", "lapsed")
    assert s["actions"] and all(a["reason"] for a in s["actions"])
    evs = [a["expected_value"] for a in s["actions"]]
    assert evs == sorted(evs, reverse=True)
    for d in s["drivers"]:
        assert d["description"] and d["contribution"] > 0


def test_scores_keep_request_order_and_match_batch_scoring(
        client: TestClient, snapshot: Path, api_bundle_dir: Path) -> None:
    import pandas as pd

    from churnguard.model.bundle import ScoringBundle

    wanted = list(reversed(ids(snapshot, 40)))
    r = client.post("/v1/scores", json={"customers": [{"customer_id": c} for c in wanted]})
    assert r.status_code == 200
    got = r.json()["scores"]
    assert [s["customer_id"] for s in got] == wanted
    frame = pd.read_parquet(snapshot).set_index("customer_id").loc[wanted].reset_index()
    batch = score_frame(ScoringBundle.load(api_bundle_dir), frame, drivers=True)
    np.testing.assert_array_equal([s["churn_probability"] for s in got],
                                  batch["churn_probability"].to_numpy())
    np.testing.assert_array_equal([s["clv"] for s in got], batch["clv"].to_numpy())
    for end in ("clv_low", "clv_high"):
        np.testing.assert_array_equal([s[end] for s in got], batch[end].to_numpy())
    assert [s["lifecycle_stage"] for s in got] == batch["lifecycle_stage"].tolist()
    assert [s["actions"] for s in got] == batch["actions"].tolist()
    assert [s["drivers"] for s in got] == batch["drivers"].tolist()


def test_inline_features_score_identically_to_lookup(client: TestClient, snapshot: Path) -> None:
    cid, feats = inline_row(snapshot, 3)
    r = client.post("/v1/scores", json={"customers": [
        {"customer_id": cid}, {"customer_id": cid, "features": feats},
        {"customer_id": "not-in-snapshot", "features": feats}]})
    assert r.status_code == 200, r.text
    a, b, c = r.json()["scores"]
    for s in (a, b, c):
        s.pop("scored_at")
    c.pop("customer_id")
    a2 = dict(a)
    a2.pop("customer_id")
    assert a == b and a2 == c


def test_get_customer_score(client: TestClient, snapshot: Path) -> None:
    cid = ids(snapshot, 2)[1]
    r = client.get(f"/v1/customers/{cid}/score")
    assert r.status_code == 200
    assert r.json()["customer_id"] == cid
    assert_error(client.get("/v1/customers/nobody/score"), 404, "unknown_customer")


def test_unknown_customer_in_strict_batch_is_404_with_its_path(client: TestClient,
                                                               snapshot: Path) -> None:
    cid = ids(snapshot, 1)[0]
    err = assert_error(client.post("/v1/scores", json={"strict": True, "customers": [
        {"customer_id": cid}, {"customer_id": "ghost"}]}), 404, "unknown_customer")
    assert "ghost" in err["message"]
    assert err["details"][0]["loc"] == ["body", "customers", 1, "customer_id"]


@pytest.mark.parametrize(("payload", "loc"), [
    ({}, ["body", "customers"]),
    ({"customers": []}, ["body", "customers"]),
    ({"customers": [{}]}, ["body", "customers", 0, "customer_id"]),
    ({"customers": [{"customer_id": ""}]}, ["body", "customers", 0, "customer_id"]),
    ({"customers": [{"customer_id": "a", "extra": 1}]}, ["body", "customers", 0, "extra"]),
    ({"customers": [{"customer_id": "a", "features": [1]}]},
     ["body", "customers", 0, "features"]),
])
def test_bad_body_is_422_with_field_path(client: TestClient, payload: Any,
                                         loc: list[Any]) -> None:
    err = assert_error(client.post("/v1/scores", json=payload), 422, "validation_error")
    assert loc in [d["loc"] for d in err["details"]]


def test_bad_inline_features_are_422_naming_the_feature(client: TestClient,
                                                        snapshot: Path) -> None:
    cid, feats = inline_row(snapshot)
    cases = [({**feats, "orders_total": "many"}, "orders_total"),
             ({**feats, "orders_total": 1.5}, "orders_total"),
             ({**feats, "spend_total": True}, "spend_total"),
             ({**feats, "segment": 3.5}, "segment"),
             ({**feats, "no_such_feature": 1}, "no_such_feature")]
    for bad, name in cases:
        err = assert_error(client.post("/v1/scores", json={"customers": [
            {"customer_id": cid}, {"customer_id": cid, "features": bad}]}), 422)
        assert err["details"][0]["loc"] == ["body", "customers", 1, "features", name], bad
    missing = {k: v for k, v in feats.items() if k != "tenure_days"}
    err = assert_error(client.post("/v1/scores", json={"customers": [
        {"customer_id": cid, "features": missing}]}), 422)
    assert "tenure_days" in err["message"]
    assert err["details"][0]["loc"] == ["body", "customers", 0, "features"]


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post("/v1/scores", content=b"{not json",
                    headers={"Content-Type": "application/json"})
    assert_error(r, 422)


def test_batch_and_size_limits_are_413(client: TestClient) -> None:
    err = assert_error(client.post("/v1/scores", json={"customers": [
        {"customer_id": f"c{i}"} for i in range(51)]}), 413, "too_many_customers")
    assert "50" in err["message"]
    big = {"customers": [{"customer_id": "x" * 100} for _ in range(3000)]}
    assert_error(client.post("/v1/scores", json=big), 413, "too_large")


def test_api_keys(client: TestClient, snapshot: Path) -> None:
    cid = ids(snapshot, 1)[0]
    body = {"customers": [{"customer_id": cid}]}
    assert_error(client.post("/v1/scores", json=body, headers={"X-API-Key": ""}), 401)
    assert_error(client.post("/v1/scores", json=body, headers={"X-API-Key": "wrong" * 5}), 401)
    assert client.post("/v1/scores", json=body, headers={"X-API-Key": OLD_KEY}).status_code == 200
    assert_error(client.get("/v1/model", headers={"X-API-Key": "nope"}), 401)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path, headers={"X-API-Key": "nope"}).status_code == 200


def test_request_id_is_echoed(client: TestClient, snapshot: Path) -> None:
    r = client.post("/v1/scores", json={"customers": [{"customer_id": ids(snapshot, 1)[0]}]},
                    headers={"X-Request-ID": "crm-req-42"})
    assert r.headers["x-request-id"] == "crm-req-42" and r.json()["request_id"] == "crm-req-42"


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/scores"), 405)


# ---------------------------------------------------------------------------------------------
# Campaign plans


def test_campaign_plan_respects_budget_and_is_optimal(client: TestClient,
                                                      snapshot: Path) -> None:
    customers = [{"customer_id": c} for c in ids(snapshot, 50)]
    free = client.post("/v1/campaigns/plan", json={"customers": customers, "budget": 1e6})
    assert free.status_code == 200, free.text
    full = free.json()
    assert full["method"] == "unconstrained" and full["optimality_gap"] == 0
    budget = max(full["spend"] / 3, 1.0)
    r = client.post("/v1/campaigns/plan", json={"customers": customers, "budget": budget})
    body = r.json()
    assert r.status_code == 200
    assert body["spend"] <= budget + 1e-9 and body["method"] == "exact"
    assert body["expected_value"] <= full["expected_value"] + 1e-6
    assert len({a["customer_id"] for a in body["assignments"]}) == len(body["assignments"])
    assert len(body["assignments"]) + len(body["untargeted"]) == len(customers)
    assert abs(sum(a["cost"] for a in body["assignments"]) - body["spend"]) < 1e-6
    assert body["roi"] is None or abs(
        body["roi"] - body["expected_value"] / body["spend"]) < 1e-4
    only = client.post("/v1/campaigns/plan", json={"customers": customers, "budget": budget,
                                                   "actions": ["care_email"]}).json()
    assert {a["action_id"] for a in only["assignments"]} <= {"care_email"}
    err = assert_error(client.post("/v1/campaigns/plan", json={
        "customers": customers, "budget": 10, "actions": ["care_email", "teleport"]}), 422)
    assert err["details"][0]["loc"] == ["body", "actions", 1]
    assert_error(client.post("/v1/campaigns/plan", json={"customers": customers,
                                                         "budget": -1}), 422)


# ---------------------------------------------------------------------------------------------
# Model, health, readiness, metrics


def test_model_info(client: TestClient) -> None:
    r = client.get("/v1/model")
    assert r.status_code == 200
    info = r.json()
    assert info["version"] == "1" and info["alias"] == "champion"
    assert info["training_window"]["churn"]["test"]
    assert {f["name"] for f in info["features"]} >= {"purchase_trend", "complaints_90d"}
    assert info["policy"]["value_cuts"] and len(info["policy"]["actions"]) >= 8
    assert info["feature_snapshot"]["rows"] > 0 and info["reload_error"] is None


def test_health_ready_metrics(client: TestClient, snapshot: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready == {"ready": True, "status": "ok", "model_version": "1", "problems": []}
    client.post("/v1/scores", json={"customers": [{"customer_id": ids(snapshot, 1)[0]}]})
    text = client.get("/metrics").text
    assert 'churnguard_http_requests_total{method="POST",route="/v1/scores",status="200"}' in text
    assert 'churnguard_model_info{name="churnguard",version="1"} 1.0' in text
    assert "churnguard_churn_probability_bucket" in text
    assert "churnguard_http_request_duration_seconds_bucket" in text


def test_openapi_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/scores", "/v1/customers/{customer_id}/score", "/v1/campaigns/plan",
            "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])
    assert client.get("/docs").status_code == 200


def test_no_model_answers_503_and_is_not_ready(tmp_path: Path, snapshot: Path) -> None:
    from churnguard.serving.app import create_app

    shutil.copy(snapshot, tmp_path / "features.parquet")
    with TestClient(create_app(settings_for(tmp_path, api_keys=[]))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert ready.json()["status"] == "not_ready" and ready.json()["problems"]
        assert_error(c.post("/v1/scores", json={"customers": [{"customer_id": "a"}]}), 503,
                     "no_model")
        assert_error(c.get("/v1/model"), 503)
        assert c.get("/healthz").status_code == 200


def test_no_snapshot_reports_and_inline_still_scores(tmp_path: Path, api_store: Path,
                                                     snapshot: Path) -> None:
    from churnguard.serving.app import create_app

    cid, feats = inline_row(snapshot)
    s = settings_for(api_store, feature_snapshot=tmp_path / "missing.parquet")
    with TestClient(create_app(s), headers={"X-API-Key": API_KEY}) as c:
        ready = c.get("/readyz").json()
        assert ready["status"] == "degraded" and "no feature snapshot" in ready["problems"][0]
        assert_error(c.get(f"/v1/customers/{cid}/score"), 404)
        ok = c.post("/v1/scores", json={"customers": [{"customer_id": cid, "features": feats}]})
        assert ok.status_code == 200


# ---------------------------------------------------------------------------------------------
# Reload: a new champion while requests run, and a broken one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def live_server(tmp_path: Path, api_bundle_dir: Path,
                snapshot: Path) -> Iterator[tuple[str, Path]]:
    """A real uvicorn server on a fresh store with v1 champion; yields (base URL, data dir)."""
    import uvicorn

    from churnguard.serving.app import create_app

    data_dir = tmp_path / "store"
    data_dir.mkdir()
    register(data_dir, api_bundle_dir)
    shutil.copy(snapshot, data_dir / "features.parquet")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings_for(data_dir)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", data_dir
    server.should_exit = True
    thread.join(30)


def _hammer(base: str, cid: str, stop: threading.Event, out: list[tuple[int, str]]) -> None:
    import httpx

    with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=30) as c:
        while not stop.is_set():
            r = c.post("/v1/scores", json={"customers": [{"customer_id": cid}]})
            out.append((r.status_code, r.json()["model_version"] if r.status_code == 200
                        else r.text))


def _wait_for(pred: Any, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not pred():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_new_champion_swaps_in_without_failing_requests(live_server: tuple[str, Path],
                                                        api_bundle_dir: Path,
                                                        snapshot: Path) -> None:
    import httpx

    base, data_dir = live_server
    cid = ids(snapshot, 1)[0]
    stop = threading.Event()
    results: list[tuple[int, str]] = []
    threads = [threading.Thread(target=_hammer, args=(base, cid, stop, results))
               for _ in range(4)]
    for t in threads:
        t.start()
    try:
        _wait_for(lambda: len(results) >= 20)
        register(data_dir, api_bundle_dir)  # v2 becomes champion while requests run
        _wait_for(lambda: any(v == "2" for _, v in results[-8:]))
        n = len(results)
        _wait_for(lambda: len(results) >= n + 20)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert all(code == 200 for code, _ in results), [r for r in results if r[0] != 200][:3]
    versions = [v for _, v in results]
    assert versions[0] == "1" and versions[-1] == "2"
    ready = httpx.get(f"{base}/readyz").json()
    assert ready["model_version"] == "2" and ready["status"] == "ok"


def test_broken_new_champion_keeps_old_one_serving(live_server: tuple[str, Path],
                                                   api_bundle_dir: Path, tmp_path: Path,
                                                   snapshot: Path) -> None:
    import httpx

    base, data_dir = live_server
    broken = tmp_path / "broken"
    shutil.copytree(api_bundle_dir, broken)
    meta = json.loads((broken / "bundle.json").read_text())
    meta["format"] = 99
    (broken / "bundle.json").write_text(json.dumps(meta))
    version = register(data_dir, broken)
    _wait_for(lambda: httpx.get(f"{base}/readyz").json()["status"] == "degraded")
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["model_version"] == "1"
    assert f"v{version} could not be loaded" in body["problems"][0]
    assert "unsupported bundle format" in body["problems"][0]
    r = httpx.post(f"{base}/v1/scores", json={"customers": [{"customer_id": ids(snapshot, 1)[0]}]},
                   headers={"X-API-Key": API_KEY})
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    info = httpx.get(f"{base}/v1/model", headers={"X-API-Key": API_KEY}).json()
    assert info["reload_error"]["version"] == version
    assert "churnguard_model_reload_failures_total 1.0" in httpx.get(f"{base}/metrics").text
    promote(data_dir, "1")  # rolling the alias back clears the problem
    _wait_for(lambda: httpx.get(f"{base}/readyz").json()["status"] == "ok")


def test_every_api_score_and_plan_is_in_the_prediction_log(api_store: Path, snapshot: Path,
                                                           tmp_path: Path) -> None:
    """Scores (POST and GET) and campaign plans are logged with the response's numbers,
    written in the background and on shutdown; /metrics counts the rows."""
    from churnguard.serving.app import create_app
    from churnguard.serving.predlog import read_prediction_log

    log_dir = tmp_path / "log"
    wanted = ids(snapshot, 12)
    with TestClient(create_app(settings_for(api_store, prediction_log_dir=log_dir,
                                            prediction_log_flush_seconds=0.05)),
                    headers={"X-API-Key": API_KEY}) as c:
        got = c.post("/v1/scores", json={"customers": [{"customer_id": x}
                                                        for x in wanted[:10]]}).json()
        one = c.get(f"/v1/customers/{wanted[10]}/score").json()
        plan = c.post("/v1/campaigns/plan", json={
            "customers": [{"customer_id": x} for x in wanted], "budget": 20}).json()
        for _ in range(200):  # the background writer, not the request, writes the rows
            if read_prediction_log(log_dir).num_rows >= 11:
                break
            time.sleep(0.05)
        metrics = c.get("/metrics").text
    rows = read_prediction_log(log_dir).to_pandas()
    scores = rows[rows["channel"] == "api"].set_index("customer_id")
    assert sorted(scores.index) == sorted(wanted[:11])
    for s in [*got["scores"], one]:
        r = scores.loc[s["customer_id"]]
        assert r["churn_probability"] == s["churn_probability"] and r["clv"] == s["clv"]
        assert r["risk_tier"] == s["risk_tier"] and r["model_version"] == "1"
        top = s["actions"][0]["action_id"] if s["actions"] else None
        assert (r["top_action"] if isinstance(r["top_action"], str) else None) == top
    planned = rows[rows["channel"] == "plan"].set_index("customer_id")
    assert sorted(planned.index) == sorted(wanted)
    assigned = {a["customer_id"]: a["action_id"] for a in plan["assignments"]}
    assert {k: v for k, v in planned["top_action"].items() if isinstance(v, str)} == assigned
    assert "churnguard_prediction_log_rows_total" in metrics
    assert "churnguard_prediction_log_dropped_rows_total 0.0" in metrics
