"""The API with the shared Redis online store (the real server at CHURNGUARD_TEST_REDIS_URL)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration import test_api as _api
from tests.integration.test_api import API_KEY, assert_error, ids, inline_row, settings_for

# The registered model and feature snapshot of test_api (session fixtures).
api_bundle_dir = _api.api_bundle_dir
api_store = _api.api_store
snapshot = _api.snapshot

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("CHURNGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    import redis

    r = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis does not answer at {REDIS_URL}: {exc}")
    prefix = f"churnguard-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    keys = list(r.scan_iter(f"{prefix}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def _app(data_dir: Path, prefix: str, **kw: Any) -> Any:
    from churnguard.serving.app import create_app
    from churnguard.serving.store import RedisStore

    s = settings_for(data_dir, online_store=REDIS_URL, **kw)
    return create_app(s, store=RedisStore(REDIS_URL, s.snapshot_path, prefix=prefix))


def test_redis_store_scores_like_memory_and_inline(api_store: Path, snapshot: Path,
                                                   redis_prefix: str) -> None:
    from churnguard.serving.app import create_app

    wanted = ids(snapshot, 30)
    cid, feats = inline_row(snapshot, 4)
    body = {"customers": [*({"customer_id": c} for c in wanted),
                          {"customer_id": cid, "features": feats}]}
    with TestClient(_app(api_store, redis_prefix), headers={"X-API-Key": API_KEY}) as c:
        ready = c.get("/readyz").json()
        assert ready["status"] == "ok", ready
        info = c.get("/v1/model").json()["feature_snapshot"]
        assert info["rows"] > 0 and info["fingerprint"]
        r = c.post("/v1/scores", json=body)
        assert r.status_code == 200, r.text
        redis_scores = r.json()["scores"]
        assert_error(c.post("/v1/scores", json={"customers": [{"customer_id": "ghost"}]}), 404)
        assert c.get(f"/v1/customers/{wanted[0]}/score").status_code == 200
    with TestClient(create_app(settings_for(api_store)), headers={"X-API-Key": API_KEY}) as c:
        memory_scores = c.post("/v1/scores", json=body).json()["scores"]
    for s in (*redis_scores, *memory_scores):
        s.pop("scored_at")
    assert redis_scores == memory_scores
    by_id = {s["customer_id"]: s for s in redis_scores[:-1]}
    if cid in by_id:
        assert by_id[cid] == redis_scores[-1]


def test_second_instance_shares_the_published_snapshot(api_store: Path, snapshot: Path,
                                                       redis_prefix: str,
                                                       tmp_path: Path) -> None:
    """One instance publishes the snapshot; another, without the file, serves from Redis."""
    import redis

    with TestClient(_app(api_store, redis_prefix), headers={"X-API-Key": API_KEY}) as c:
        assert c.get("/readyz").json()["status"] == "ok"
    other = tmp_path / "other"
    other.mkdir()
    shutil.copytree(api_store / "mlartifacts", other / "mlartifacts")
    shutil.copy(api_store / "mlflow.db", other / "mlflow.db")
    app = _app(api_store, redis_prefix, feature_snapshot=tmp_path / "not-here.parquet")
    with TestClient(app, headers={"X-API-Key": API_KEY}) as c:
        assert c.get("/readyz").json()["status"] == "ok"
        r = c.post("/v1/scores", json={"customers": [{"customer_id": ids(snapshot, 1)[0]}]})
        assert r.status_code == 200
    r = redis.Redis.from_url(REDIS_URL)
    assert r.get(f"{redis_prefix}current") is not None
    r.close()


def test_redis_down_is_503_and_reported(api_store: Path, snapshot: Path) -> None:
    from churnguard.serving.app import create_app
    from churnguard.serving.store import RedisStore

    s = settings_for(api_store)
    bad = RedisStore("redis://127.0.0.1:1/0", s.snapshot_path)
    with TestClient(create_app(s, store=bad), headers={"X-API-Key": API_KEY}) as c:
        ready = c.get("/readyz").json()
        assert ready["status"] == "degraded" and "unavailable" in " ".join(ready["problems"])
        err = assert_error(c.post("/v1/scores", json={"customers": [
            {"customer_id": ids(snapshot, 1)[0]}]}), 404)
        assert err["code"] == "unknown_customer"
        cid, feats = inline_row(snapshot)
        ok = c.post("/v1/scores", json={"customers": [{"customer_id": cid, "features": feats}]})
        assert ok.status_code == 200
