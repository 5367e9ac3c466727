"""Regression tests of the API's hardening (one per defect, through HTTP as a CRM meets it):
JSON numbers from the greedy planner, duplicate ids in a plan, out-of-range inline values,
unknown ids in a batch, unseen categories, chunked bodies, invalid UTF-8, HEAD, the OpenAPI
schema against behaviour, secret API keys, the horizons of a score and the access log."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.integration import test_api as _api
from tests.integration.test_api import API_KEY, assert_error, ids, inline_row, settings_for

api_bundle_dir = _api.api_bundle_dir
api_store = _api.api_store
snapshot = _api.snapshot
client = _api.client
live_server = _api.live_server

PLAN = "/v1/campaigns/plan"


def _customers(*cids: str) -> list[dict[str, Any]]:
    return [{"customer_id": c} for c in cids]


def _plain_numbers(value: Any, path: str = "$") -> None:
    """Every number of a parsed JSON body is a finite int or float."""
    if isinstance(value, dict):
        for k, v in value.items():
            _plain_numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for k, v in enumerate(value):
            _plain_numbers(v, f"{path}[{k}]")
    elif isinstance(value, float):
        assert math.isfinite(value), path
    else:
        assert value is None or isinstance(value, str | int), (path, value)


def _raw(body: dict[str, Any], placeholder: str, literal: str) -> bytes:
    """``body`` as JSON with the string ``placeholder`` replaced by a raw JSON literal."""
    return json.dumps(body).replace(json.dumps(placeholder), literal).encode()


# ---------------------------------------------------------------------------------------------
# 1. A large budget-constrained plan (the greedy solver) answered 500: numpy.float64 in JSON


def test_large_budget_plan_falls_back_to_greedy_and_answers(api_store: Path, snapshot: Path,
                                                            tmp_path: Path) -> None:
    from churnguard.serving.app import create_app

    frame = pd.read_parquet(snapshot)
    big = pd.concat([frame.assign(customer_id=frame["customer_id"] + f"-{k}")
                     for k in range(13)], ignore_index=True)
    path = tmp_path / "features.parquet"
    big.to_parquet(path)
    wanted = big["customer_id"].head(10_000).tolist()
    settings = settings_for(api_store, feature_snapshot=path, max_plan_customers=10_000)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
        r = c.post(PLAN, json={"customers": _customers(*wanted), "budget": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "greedy" and body["optimality_gap"] >= 0
    assert 0 < body["spend"] <= 1000 + 1e-6 and body["errors"] == []
    assert len(body["assignments"]) + len(body["untargeted"]) == 10_000
    _plain_numbers(body)


# ---------------------------------------------------------------------------------------------
# 2. Duplicate ids in a plan got the action (and spent the budget) several times


def test_duplicate_ids_in_a_plan_are_planned_once_and_reported(client: TestClient,
                                                                snapshot: Path) -> None:
    every = client.post(PLAN, json={"customers": _customers(*ids(snapshot, 50)),
                                    "budget": 1e6}).json()
    a, b = (x["customer_id"] for x in every["assignments"][:2])
    once = client.post(PLAN, json={"customers": _customers(a, b), "budget": 1e6}).json()
    r = client.post(PLAN, json={"customers": _customers(a, b, a, a), "budget": 1e6})
    assert r.status_code == 200, r.text
    twice = r.json()
    assert twice["duplicates"] == [{"index": 2, "customer_id": a, "first_index": 0},
                                   {"index": 3, "customer_id": a, "first_index": 0}]
    assert [x["customer_id"] for x in twice["assignments"]] == [a, b]
    assert twice["spend"] == once["spend"] and twice["expected_value"] == once["expected_value"]
    assert once["duplicates"] == []


# ---------------------------------------------------------------------------------------------
# 3. Inline values beyond float32 answered 500 (and reset the connection); negative counts
#    were accepted


@pytest.mark.parametrize(("feature", "literal", "says"), [
    ("spend_total", "1e39", "32-bit floats"),
    ("spend_total", "-1e39", "32-bit floats"),
    ("spend_total", "1" + "0" * 400, "32-bit floats"),  # an integer literal of 10**400
    ("orders_total", "1" + "0" * 400, "32-bit floats"),
    ("orders_total", "-1", "count"),
    ("complaints_90d", "2.5", "count"),
    ("orders_total", "null", "count"),
])
def test_out_of_range_inline_values_are_422_naming_the_field(
        client: TestClient, snapshot: Path, feature: str, literal: str, says: str) -> None:
    cid, feats = inline_row(snapshot)
    body = {"customers": [{"customer_id": cid},
                          {"customer_id": cid, "features": {**feats, feature: "@@"}}]}
    r = client.post("/v1/scores", content=_raw(body, "@@", literal),
                    headers={"content-type": "application/json"})
    err = assert_error(r, 422)
    assert err["details"] == [{"loc": ["body", "customers", 1, "features", feature],
                               "message": err["details"][0]["message"],
                               "type": "feature_error"}]
    assert says in err["message"] and feature in err["message"]
    assert len(err["message"]) < 300  # a 400-digit literal is not echoed


def test_out_of_range_inline_value_keeps_the_connection(live_server: tuple[str, Path],
                                                        snapshot: Path) -> None:
    import httpx

    base, _ = live_server
    cid, feats = inline_row(snapshot)
    body = {"customers": [{"customer_id": cid, "features": {**feats, "spend_total": "@@"}}]}
    with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY,
                                              "content-type": "application/json"}) as c:
        for literal in ("1e39", "1" + "0" * 400):
            r = c.post("/v1/scores", content=_raw(body, "@@", literal))
            assert r.status_code == 422, r.text
            assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
        ok = c.post("/v1/scores", content=_raw(body, "@@", "12.5"))  # the same connection
        assert ok.status_code == 200, ok.text


# ---------------------------------------------------------------------------------------------
# 4. One unknown id failed a whole batch


def test_unknown_ids_are_listed_and_the_others_answered(client: TestClient,
                                                        snapshot: Path) -> None:
    a, b = ids(snapshot, 2)
    customers = _customers(a, "ghost", b, "ghost-2")
    r = client.post("/v1/scores", json={"customers": customers})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [s["customer_id"] for s in body["scores"]] == [a, b]
    assert [(e["index"], e["customer_id"], e["code"]) for e in body["errors"]] == [
        (1, "ghost", "unknown_customer"), (3, "ghost-2", "unknown_customer")]
    assert all("not in the feature snapshot as of" in e["reason"] for e in body["errors"])
    alone = client.post("/v1/scores", json={"customers": _customers(a)}).json()["scores"][0]
    got = dict(body["scores"][0])
    assert got.pop("scored_at") and alone.pop("scored_at") and got == alone
    none = client.post("/v1/scores", json={"customers": _customers("ghost")}).json()
    assert none["scores"] == [] and len(none["errors"]) == 1
    err = assert_error(client.post("/v1/scores", json={"customers": customers, "strict": True}),
                       404, "unknown_customer")
    assert [d["loc"] for d in err["details"]] == [["body", "customers", 1, "customer_id"],
                                                  ["body", "customers", 3, "customer_id"]]
    plan = client.post(PLAN, json={"customers": customers, "budget": 1e6})
    assert plan.status_code == 200, plan.text
    p = plan.json()
    assert [(e["index"], e["customer_id"]) for e in p["errors"]] == [(1, "ghost"),
                                                                    (3, "ghost-2")]
    planned = {x["customer_id"] for x in p["assignments"]} | set(p["untargeted"])
    assert planned == {a, b}
    err = assert_error(client.post(PLAN, json={"customers": customers, "budget": 1e6,
                                               "strict": True}), 404, "unknown_customer")
    assert err["details"][0]["loc"] == ["body", "customers", 1, "customer_id"]


# ---------------------------------------------------------------------------------------------
# 5. Unknown category values were accepted silently


def test_unseen_category_scores_as_missing_with_a_warning(client: TestClient,
                                                          snapshot: Path) -> None:
    cid, feats = inline_row(snapshot)
    r = client.post("/v1/scores", json={"customers": [
        {"customer_id": cid, "features": {**feats, "segment": "martian"}},
        {"customer_id": cid, "features": {**feats, "segment": None}},
        {"customer_id": cid, "features": {**feats, "segment": 7}},
        {"customer_id": cid, "features": feats}]})
    assert r.status_code == 200, r.text
    martian, missing, seven, known = r.json()["scores"]
    (w,) = martian["warnings"]
    assert (w["feature"], w["value"], w["type"]) == ("segment", "martian", "unseen_category")
    assert "segment" in w["message"] and "missing" in w["message"]
    assert [x["value"] for x in seven["warnings"]] == ["7"]
    assert missing["warnings"] == [] and known["warnings"] == []
    for s in (martian, missing, seven):
        assert s["churn_probability"] == missing["churn_probability"]
        assert s["clv"] == missing["clv"]


# ---------------------------------------------------------------------------------------------
# 7. Smaller: chunked bodies, invalid UTF-8, HEAD, the schema against behaviour, the GET 404


def test_chunked_body_over_the_limit_is_413(client: TestClient, snapshot: Path) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"customers": ['
        for _ in range(10_000):  # 10,000 × 40 bytes > the client's 200,000-byte limit
            yield b'{"customer_id": "xxxxxxxxxxxxxxxxxxxx"},'
        yield b'{"customer_id": "x"}]}'

    r = client.post("/v1/scores", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "too_large")

    def small() -> Iterator[bytes]:
        yield b'{"customers": ['
        yield json.dumps({"customer_id": ids(snapshot, 1)[0]}).encode()
        yield b"]}"

    ok = client.post("/v1/scores", content=small(), headers={"content-type": "application/json"})
    assert ok.status_code == 200, ok.text


def test_invalid_utf8_is_a_documented_422(client: TestClient) -> None:
    r = client.post("/v1/scores", content=b'{"customers": [{"customer_id": "\xff\xfe"}]}',
                    headers={"content-type": "application/json"})
    err = assert_error(r, 422, "validation_error")
    assert err["details"] == [{"loc": ["body"], "message": err["details"][0]["message"],
                               "type": "json_invalid"}]
    assert "UTF-8" in err["message"]
    spec = client.get("/openapi.json").json()
    for path in ("/v1/scores", PLAN):
        assert "422" in spec["paths"][path]["post"]["responses"]


def test_head_answers_like_get_without_a_body(client: TestClient, snapshot: Path) -> None:
    cid = ids(snapshot, 1)[0]
    for path in ("/healthz", "/readyz", "/metrics", "/v1/model", f"/v1/customers/{cid}/score",
                 "/v1/customers/nobody/score", "/openapi.json", "/docs", "/redoc"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers["x-request-id"]
    r = client.head("/v1/scores")  # a POST route
    assert r.status_code == 405 and "POST" in r.headers["allow"]


def test_openapi_schema_says_what_is_accepted(client: TestClient, snapshot: Path) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    features = schemas["CustomerIn"]["properties"]["features"]
    assert {"$ref": "#/components/schemas/FeatureRow"} in features["anyOf"]
    row = schemas["FeatureRow"]
    info = client.get("/v1/model").json()
    names = [f["name"] for f in info["features"]]
    assert row["required"] == names and row["additionalProperties"] is False
    kinds = {f["name"]: f["kind"] for f in info["features"]}
    for name, kind in kinds.items():
        prop = row["properties"][name]
        if kind == "int":
            assert prop["type"] == "integer" and prop["minimum"] == 0
        else:
            types = {t["type"] for t in prop["anyOf"]}
            assert types == ({"number", "null"} if kind == "float"
                             else {"string", "integer", "null"}), name
    actions = schemas["PlanRequest"]["properties"]["actions"]["anyOf"][0]["items"]["enum"]
    assert actions == [a["action_id"] for a in info["policy"]["actions"]]
    assert schemas["ScoresRequest"]["properties"]["customers"]["maxItems"] == 50
    # strict JSON types: what the schema says is what is accepted
    a = ids(snapshot, 1)[0]
    for bad, key in (({"budget": False}, "budget"), ({"budget": True}, "budget"),
                     ({"budget": "100"}, "budget"), ({"budget": 10, "strict": 1}, "strict"),
                     ({"budget": 10, "strict": "true"}, "strict")):
        err = assert_error(client.post(PLAN, json={"customers": _customers(a), **bad}), 422)
        assert err["details"][0]["loc"] == ["body", key], bad
    assert client.post(PLAN, json={"customers": _customers(a), "budget": 10}).status_code == 200
    # an integer for a category is accepted, as documented (read as its decimal string)
    cid, feats = inline_row(snapshot)
    ok = client.post("/v1/scores", json={"customers": [
        {"customer_id": cid, "features": {**feats, "segment": 3}}]})
    assert ok.status_code == 200, ok.text
    # the GET route's 404 points at the path parameter
    err = assert_error(client.get("/v1/customers/nobody/score"), 404, "unknown_customer")
    assert err["details"][0]["loc"] == ["path", "customer_id"]


# ---------------------------------------------------------------------------------------------
# 8. API keys are secrets


def test_api_keys_are_secret(api_store: Path, snapshot: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from churnguard.config import Settings
    from churnguard.serving.app import create_app

    secret = "short-secret"  # too short: refused, and not shown
    monkeypatch.setenv("CHURNGUARD_API_KEYS", f"{API_KEY},{secret}")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert secret not in str(info.value) and API_KEY not in str(info.value)
    assert "at least 16 characters" in str(info.value)
    monkeypatch.setenv("CHURNGUARD_API_KEYS", f" {API_KEY} ,")
    settings = Settings()
    assert API_KEY not in repr(settings) and API_KEY not in str(settings.model_dump())
    assert API_KEY not in settings.model_dump_json()
    assert [k.get_secret_value() for k in settings.api_keys] == [API_KEY]
    app = create_app(settings_for(api_store, api_keys=settings.api_keys))
    assert API_KEY not in repr(app.state.api_keys)  # digests only
    with TestClient(app) as c:
        body = {"customers": _customers(ids(snapshot, 1)[0])}
        assert c.post("/v1/scores", json=body, headers={"X-API-Key": API_KEY}).status_code == 200
        assert_error(c.post("/v1/scores", json=body, headers={"X-API-Key": API_KEY + "x"}), 401)
        assert_error(c.post("/v1/scores", json=body, headers={"X-API-Key": API_KEY[:-1]}), 401)


# ---------------------------------------------------------------------------------------------
# 9. Each score says the horizons of its numbers


def test_scores_carry_their_horizons(client: TestClient, snapshot: Path) -> None:
    info = client.get("/v1/model").json()
    cid, feats = inline_row(snapshot)
    got = [client.get(f"/v1/customers/{cid}/score").json(),
           *client.post("/v1/scores", json={"customers": [
               {"customer_id": cid}, {"customer_id": cid, "features": feats}]}).json()["scores"]]
    for s in got:
        assert s["horizon_days"] == info["horizon_days"] == 90
        assert s["clv_horizon_days"] == info["clv_horizon_days"] == 120


# ---------------------------------------------------------------------------------------------
# 10. One access-log line per request at INFO, so that an error response can be found


def test_access_log_finds_every_response(client: TestClient, snapshot: Path,
                                         caplog: pytest.LogCaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from churnguard.serving import scoring

    caplog.set_level(logging.INFO, logger="churnguard.serving")
    bad = client.post("/v1/scores", json={"customers": [{}]}, headers={"X-Request-ID": "crm-1"})
    assert bad.status_code == 422
    lines = [r for r in caplog.records if r.name == "churnguard.serving.access"
             and "request_id=crm-1 " in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert lines[0].getMessage().startswith(
        "request_id=crm-1 method=POST route=/v1/scores status=422 duration_ms=")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(scoring, "score", broken)
    caplog.clear()
    r = client.post("/v1/scores", json={"customers": _customers(ids(snapshot, 1)[0])})
    err = assert_error(r, 500, "internal_error")
    rid = err["request_id"]
    assert rid and "boom" not in r.text
    access = [x.getMessage() for x in caplog.records if x.name == "churnguard.serving.access"]
    assert access == [f"request_id={rid} method=POST route=/v1/scores status=500 "
                      + access[0].split(" ")[-1]]
    (logged,) = [x for x in caplog.records if x.name == "churnguard.serving"
                 and x.levelno == logging.ERROR]
    assert rid in logged.getMessage() and logged.exc_info is not None


def test_drivers_say_what_a_null_value_means(client: TestClient, snapshot: Path) -> None:
    """A driver whose value is null says what null means for it ("no purchase yet"), through
    the response model; the others carry no meaning."""
    resp = client.post("/v1/scores", json={"customers": [
        {"customer_id": c} for c in ids(snapshot, 50)]})
    assert resp.status_code == 200, resp.text
    drivers = [d for s in resp.json()["scores"] for d in s["drivers"]]
    nulls = [d for d in drivers if d["value"] is None]
    assert nulls, "no driver with a null value among 50 customers"
    assert all(isinstance(d["value_meaning"], str) and d["value_meaning"] for d in nulls)
    assert all("value_meaning" not in d for d in drivers if d["value"] is not None)
