"""Schemathesis over the API's OpenAPI schema: no 5xx, every response conforms to the schema
(status codes, content types, headers, bodies), schema-valid requests are accepted and
schema-invalid ones rejected, for every operation, with every check.

The schema can say exactly what is accepted because it is completed from the served model
(serving/docs.py: inline ``features`` as the model's ``FeatureRow``, ``actions`` as its catalog,
``maxItems`` from the batch limits). One setting departs from schemathesis' defaults: 413 is an
expected answer to a schema-invalid request (too many customers is 413, README "Scoring API").

This is the quick run of the test suite (a few dozen examples per operation and mode);
``bench/fuzz_api.py`` runs schemathesis' whole engine (examples, coverage, fuzzing and stateful
phases, 500+ examples per operation) against a real server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.integration import test_api as _api
from tests.integration.test_api import API_KEY, settings_for

api_bundle_dir = _api.api_bundle_dir
api_store = _api.api_store
snapshot = _api.snapshot

#: Examples per operation and generation mode (CHURNGUARD_FUZZ_EXAMPLES overrides).
EXAMPLES = int(os.environ.get("CHURNGUARD_FUZZ_EXAMPLES", "25"))
#: Expected answers to schema-invalid requests: schemathesis' defaults and 413.
NEGATIVE_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429", "5xx"]


@pytest.fixture(scope="module")
def api_app(api_store: Path) -> Iterator[Any]:
    from churnguard.serving.app import create_app

    app = create_app(settings_for(api_store, max_batch=20, max_plan_customers=20))
    with TestClient(app):  # runs the lifespan: model and snapshot loaded
        yield app


def fuzz_config(known: list[str]) -> Any:
    """413 expected for schema-invalid requests; ids of the snapshot mixed into the generated
    ones (half of them), so that requests reach the scoring, not only the unknown-id paths."""
    from schemathesis.config import SchemathesisConfig

    return SchemathesisConfig.from_dict({
        "checks": {"negative_data_rejection": {"expected-statuses": NEGATIVE_STATUSES}},
        "dictionaries": {"customers": {"values": known}},
        "parameters": {
            "path.customer_id": {"dictionary": "customers", "probability": 0.5},
            "body.customers[*].customer_id": {"dictionary": "customers", "probability": 0.5}}})


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(api_app: Any, snapshot: Path,
                                    mode: GenerationMode) -> None:
    """Every operation: schemathesis-generated requests, all of its checks."""
    config = fuzz_config(_api.ids(snapshot, 30))
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app, config=config)
    seen, negated = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        seen.append(operation.label)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": API_KEY})

        try:
            run()
        except Unsatisfiable:  # nothing to negate (no parameters, no body): GET /healthz
            assert mode == GenerationMode.NEGATIVE, operation.label
            continue
        negated.append(operation.label)
    assert len(seen) >= 7, seen
    if mode == GenerationMode.NEGATIVE:
        assert {"POST /v1/scores", "POST /v1/campaigns/plan",
                "GET /v1/customers/{customer_id}/score"} <= set(negated), negated
    else:  # the known ids reached the scoring of every scoring route
        text = api_app.state.metrics.render().decode()
        for route in ("/v1/scores", "/v1/campaigns/plan", "/v1/customers/{customer_id}/score"):
            assert f'route="{route}",status="200"' in text, route


def test_openapi_request_examples_answer_200_on_the_demo_ids(api_app: Any,
                                                              snapshot: Path) -> None:
    """The examples /docs offers ("Try it out") name customers the demo data has."""
    known = set(_api.ids(snapshot, 100_000))
    spec = TestClient(api_app).get("/openapi.json").json()
    client = TestClient(api_app, headers={"X-API-Key": API_KEY})
    tried = 0
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "")
            examples = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]].get(
                "examples", []) if ref else []
            for example in examples:
                assert {c["customer_id"] for c in example["customers"]} <= known, example
                resp = client.request(method.upper(), path, json=example)
                assert resp.status_code == 200, (path, resp.text)
                tried += 1
    assert tried >= 2
