"""The API's documentation: /docs (Swagger UI) and /redoc with their assets served by the
service itself (from the ``fastapi-offline`` package, no CDN), and the OpenAPI schema completed
with what only the served model and the settings know."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from churnguard.config import Settings

#: Where the Swagger UI and ReDoc scripts, style sheet and icon are served.
ASSETS_URL = "/docs-assets"


def offline_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose /docs and /redoc pages load every asset from this service
    (``ASSETS_URL``): nothing from a CDN, no Google fonts, no online validator badge."""
    return FastAPIOffline(static_url=ASSETS_URL,
                          swagger_ui_parameters={"validatorUrl": None}, **kwargs)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make ``/openapi.json`` describe what the service accepts: inline ``features`` as the
    served model's feature row (``FeatureRow``, from its encoder's rules), ``actions`` as its
    catalog's ids, and the batch limits of ``settings``. Rebuilt when the model changes."""
    base: Callable[[], dict[str, Any]] = app.openapi  # FastAPI's own, cached
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        holder = getattr(app.state, "holder", None)
        model = holder.current if holder is not None else None
        key = id(model.bundle) if model is not None else None
        if cache.get("key", 0) != key or "schema" not in cache:
            cache["schema"] = completed(base(), settings, model.bundle if model else None)
            cache["key"] = key
        schema: dict[str, Any] = cache["schema"]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def completed(spec: dict[str, Any], settings: Settings, bundle: Any | None) -> dict[str, Any]:
    """``spec`` (FastAPI's schema) with the model's feature row, action ids and the limits."""
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    schemas["ScoresRequest"]["properties"]["customers"]["maxItems"] = settings.max_batch
    schemas["PlanRequest"]["properties"]["customers"]["maxItems"] = settings.max_plan_customers
    features = schemas["CustomerIn"]["properties"]["features"]
    if bundle is None:  # no model yet: scoring answers 503; describe the value types only
        row: dict[str, Any] = {
            "type": "object", "description": "The features of the served model (none is "
            "loaded yet; see GET /v1/model).",
            "additionalProperties": {"anyOf": [{"type": "integer"}, {"type": "number"},
                                               {"type": "string"}, {"type": "null"}]}}
    else:
        enc = bundle.encoder()
        row = {**enc.row_schema(), "title": "FeatureRow",
               "description": f"The {len(enc.names)} features of the served model (feature "
               f"set {bundle.spec.version}), each required, no others."}
        actions = [a.id for a in bundle.policy_obj().actions]
        schemas["PlanRequest"]["properties"]["actions"]["anyOf"][0]["items"] = {
            "type": "string", "enum": actions}
    schemas["FeatureRow"] = row
    features["anyOf"] = [{"$ref": "#/components/schemas/FeatureRow"}, {"type": "null"}]
    return spec
