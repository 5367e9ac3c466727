"""The API with the shared Redis online store (the real server at CHURNGUARD_TEST_REDIS_URL),
and with a Redis of the test's own that it restarts, stops and flushes."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration import test_api as _api
from tests.integration.test_api import (
    API_KEY,
    _free_port,
    _wait_for,
    assert_error,
    ids,
    inline_row,
    settings_for,
)

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


def _app(data_dir: Path, prefix: str, url: str = REDIS_URL, **kw: Any) -> Any:
    from churnguard.serving.app import create_app
    from churnguard.serving.store import RedisStore

    s = settings_for(data_dir, online_store=url, **kw)
    return create_app(s, store=RedisStore(url, s.snapshot_path, prefix=prefix))


def _ready(c: TestClient, seconds: float = 30) -> dict[str, Any]:
    """/readyz once the store's first load (in the background: Redis is a network store) is
    done."""
    _wait_for(lambda: not any(p.startswith("snapshot_loading")
                              for p in c.get("/readyz").json()["problems"]), seconds)
    body: dict[str, Any] = c.get("/readyz").json()
    return body


def test_redis_store_scores_like_memory_and_inline(api_store: Path, snapshot: Path,
                                                   redis_prefix: str) -> None:
    from churnguard.serving.app import create_app

    wanted = ids(snapshot, 30)
    cid, feats = inline_row(snapshot, 4)
    body = {"customers": [*({"customer_id": c} for c in wanted),
                          {"customer_id": cid, "features": feats}]}
    with TestClient(_app(api_store, redis_prefix), headers={"X-API-Key": API_KEY}) as c:
        ready = _ready(c)
        assert ready["status"] == "ok", ready
        info = c.get("/v1/model").json()["feature_snapshot"]
        assert info["rows"] > 0 and info["fingerprint"]
        r = c.post("/v1/scores", json=body)
        assert r.status_code == 200, r.text
        redis_scores = r.json()["scores"]
        assert_error(c.get("/v1/customers/ghost/score"), 404, "unknown_customer")
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
        assert _ready(c)["status"] == "ok"
    other = tmp_path / "other"
    other.mkdir()
    shutil.copytree(api_store / "mlartifacts", other / "mlartifacts")
    shutil.copy(api_store / "mlflow.db", other / "mlflow.db")
    app = _app(api_store, redis_prefix, feature_snapshot=tmp_path / "not-here.parquet")
    with TestClient(app, headers={"X-API-Key": API_KEY}) as c:
        assert _ready(c)["status"] == "ok"
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
        ready = _ready(c)
        assert ready["status"] == "degraded" and ready["problems"] == [
            "store_unavailable: the online feature store (Redis) does not answer: customer-id "
            "lookups answer 503"]
        err = assert_error(c.get(f"/v1/customers/{ids(snapshot, 1)[0]}/score"), 503)
        assert err["code"] == "feature_store_unavailable"
        cid, feats = inline_row(snapshot)
        ok = c.post("/v1/scores", json={"customers": [{"customer_id": cid, "features": feats}]})
        assert ok.status_code == 200


# ---------------------------------------------------------------------------------------------
# A Redis of the test's own: restarted empty, flushed, stopped, hung


class OwnRedis:
    """``redis-server`` on a free port, persisting nothing: a restart comes back empty."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        _wait_for(lambda: _pings(client), 20)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_restarted_or_flushed_redis_is_refilled_from_the_snapshot(
        api_store: Path, snapshot: Path, own_redis: OwnRedis,
        caplog: pytest.LogCaptureFixture) -> None:
    cid = ids(snapshot, 1)[0]
    caplog.set_level(logging.INFO, logger="churnguard")
    with TestClient(_app(api_store, "cg:", url=own_redis.url),
                    headers={"X-API-Key": API_KEY}) as c:
        assert _ready(c)["status"] == "ok"
        assert c.get(f"/v1/customers/{cid}/score").status_code == 200

        own_redis.stop()  # a restart: down for a moment, then back empty
        _wait_for(lambda: c.get("/readyz").json()["status"] == "degraded", 20)
        assert_error(c.get(f"/v1/customers/{cid}/score"), 503, "feature_store_unavailable")
        own_redis.start()
        _wait_for(lambda: c.get(f"/v1/customers/{cid}/score").status_code == 200, 20)
        assert c.get("/readyz").json() == {"ready": True, "status": "ok",
                                           "model_version": "1", "problems": []}

        own_redis.client().flushall()
        _wait_for(lambda: own_redis.client().get("cg:current") is not None, 20)
        _wait_for(lambda: c.get(f"/v1/customers/{cid}/score").status_code == 200, 20)
        assert c.get("/readyz").json()["status"] == "ok"
    published = [r for r in caplog.records if "published to" in r.getMessage()]
    assert len(published) == 3, [r.getMessage() for r in published]


def test_redis_down_or_hung_shows_within_seconds(api_store: Path, snapshot: Path,
                                                 own_redis: OwnRedis) -> None:
    cid = ids(snapshot, 1)[0]
    with TestClient(_app(api_store, "cg:", url=own_redis.url),
                    headers={"X-API-Key": API_KEY}) as c:
        assert _ready(c)["status"] == "ok"
        own_redis.stop()
        t0 = time.monotonic()
        assert_error(c.get(f"/v1/customers/{cid}/score"), 503, "feature_store_unavailable")
        assert time.monotonic() - t0 < 5
        _wait_for(lambda: "store_unavailable" in " ".join(c.get("/readyz").json()["problems"]),
                  15)
        details = " ".join(p["detail"] for p in
                           c.get("/v1/model").json()["status"]["problems"])
        assert f"127.0.0.1:{own_redis.port}" in details
        assert str(own_redis.port) not in c.get("/readyz").text

    # A Redis that accepts connections and never answers: start-up does not wait for it, and
    # every call gives up within seconds.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    try:
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        t0 = time.monotonic()
        with TestClient(_app(api_store, "cg:", url=url), headers={"X-API-Key": API_KEY}) as c:
            assert time.monotonic() - t0 < 10
            ready = _ready(c, 30)
            assert ready["ready"] is True and ready["problems"] == [
                "store_unavailable: the online feature store (Redis) does not answer: "
                "customer-id lookups answer 503"]
            t0 = time.monotonic()
            assert_error(c.get(f"/v1/customers/{cid}/score"), 503, "feature_store_unavailable")
            assert time.monotonic() - t0 < 10
    finally:
        hung.close()


def test_snapshot_that_does_not_fit_is_not_published(
        api_store: Path, snapshot: Path, own_redis: OwnRedis, tmp_path: Path) -> None:
    import pandas as pd

    data_dir = tmp_path / "store"
    shutil.copytree(api_store, data_dir)
    live = data_dir / "features.parquet"
    cid = ids(snapshot, 1)[0]
    with TestClient(_app(data_dir, "cg:", url=own_redis.url),
                    headers={"X-API-Key": API_KEY}) as c:
        assert _ready(c)["status"] == "ok"
        redis = own_redis.client()
        published = redis.get("cg:current")
        frame = pd.read_parquet(snapshot)
        frame.drop(columns=["tenure_days"]).to_parquet(tmp_path / "new.parquet")
        os.replace(tmp_path / "new.parquet", live)
        _wait_for(lambda: c.get("/readyz").json()["status"] == "degraded", 20)
        as_of = pd.Timestamp(frame["as_of"].max()).date()
        assert c.get("/readyz").json()["problems"] == [
            f"snapshot_mismatch: the new feature snapshot as of {as_of} does not fit model v1 "
            "and was not published; still serving the previous one"]
        assert redis.get("cg:current") == published
        assert c.get(f"/v1/customers/{cid}/score").status_code == 200
