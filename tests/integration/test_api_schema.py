"""Schemathesis over the API's OpenAPI schema: no 5xx, every response conforms to the schema
(status codes, content types, headers, bodies) for valid and invalid requests.

One check is left out: ``positive_data_acceptance`` ("schema-valid requests are accepted").
Inline ``features`` are a free-form object in the schema because the feature set belongs to
the model being served, which can change at run time; a schema-valid but model-invalid row is
rightly answered 422 naming the feature, and the 422 is checked against its schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.integration import test_api as _api
from tests.integration.test_api import API_KEY, settings_for

api_bundle_dir = _api.api_bundle_dir
api_store = _api.api_store
snapshot = _api.snapshot


@pytest.fixture(scope="module")
def api_app(api_store: Path) -> Iterator[Any]:
    from churnguard.serving.app import create_app

    app = create_app(settings_for(api_store, max_batch=20, max_plan_customers=20))
    with TestClient(app):  # runs the lifespan: model and snapshot loaded
        yield app


def test_api_conforms_to_its_schema(api_app: Any) -> None:
    """Every operation: schemathesis-generated requests (valid and invalid), all its checks."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()
        seen.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": API_KEY},
                                   excluded_checks=[positive_data_acceptance])

        run()
    assert len(seen) >= 7, seen
