"""The churnguard scoring API (FastAPI): ``create_app()`` builds it from :class:`Settings`.

Run it with ``churnguard serve``; uvicorn calls :func:`create_app` in each worker, so nothing is
configured at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from churnguard.config import Settings, load_settings
from churnguard.serving import docs, errors
from churnguard.serving.metrics import Metrics
from churnguard.serving.middleware import ServiceMiddleware
from churnguard.serving.model import LoadedModel, ModelHolder, mlflow_loader, mlflow_resolver
from churnguard.serving.monitor_state import VerdictReader
from churnguard.serving.predlog import ApiPredictionLog, prediction_log_location
from churnguard.serving.routers import campaigns, meta, scores
from churnguard.serving.schemas import ErrorResponse
from churnguard.serving.security import key_digests, require_api_key
from churnguard.serving.store import FeatureStore, open_store

log = logging.getLogger("churnguard.serving")

API_VERSION = "1"


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {401: "Missing or invalid API key", 404: "Unknown customer",
            413: "Request too large or too many customers",
            422: "Invalid input, with the path of each bad field", 503: "No model loaded",
            500: "Internal error"}
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}


def build_holder(settings: Settings, metrics: Metrics) -> ModelHolder:
    """The holder of ``models:/<name>@<alias>``. Nothing here talks to the registry (or imports
    mlflow): the MLflow client is made on the holder's first check, in the poller."""
    from churnguard.model.registry import Tracking
    from churnguard.serving.model import mlflow_client

    tracking = Tracking.resolve(settings.data_dir, settings.mlflow_tracking_uri)
    client = mlflow_client(tracking)
    return ModelHolder(settings.model_name, settings.model_alias,
                       mlflow_resolver(client, settings.model_name, settings.model_alias),
                       mlflow_loader(client, settings.model_name, settings.model_alias),
                       local=tracking.local)


def create_app(settings: Settings | None = None, *, holder: ModelHolder | None = None,
               store: FeatureStore | None = None) -> FastAPI:
    """The API. ``holder`` and ``store`` default to the MLflow registry and the store in
    ``settings`` (tests may pass their own)."""
    settings = settings or load_settings()
    metrics = Metrics(live_window=settings.monitor_live_window,
                      live_min_rows=settings.monitor_live_min_rows)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        h: ModelHolder = app.state.holder or build_holder(settings, metrics)
        s: FeatureStore = app.state.store or open_store(settings.online_store,
                                                        settings.snapshot_path)

        def changed(model: LoadedModel | None) -> None:
            metrics.set_model(h.name, model.version if model else None)
            metrics.serve_reference(model.version if model else None,
                                    model.bundle.metadata if model else None)
            # Encode the snapshot for the new model now, and re-check that it fits.
            s.use_model(model.bundle if model else None, model.version if model else None)
            if s.info:
                metrics.snapshot_rows.set(s.info.rows)

        h._on_change = changed
        h._on_failure = metrics.reload_failures.inc
        app.state.holder, app.state.store = h, s
        if settings.prediction_log and app.state.prediction_log is None:
            app.state.prediction_log = ApiPredictionLog(
                prediction_log_location(settings), model_name=settings.model_name,
                max_rows=settings.prediction_log_queue_rows,
                flush_seconds=settings.prediction_log_flush_seconds,
                on_written=metrics.prediction_log_rows.inc,
                on_dropped=metrics.prediction_log_dropped.inc)
        if not settings.api_keys:
            log.warning("no API keys configured (CHURNGUARD_API_KEYS): the scoring API is open "
                        "to anyone who can reach it")
        metrics.set_model(h.name, None)
        if h.current is not None:
            await asyncio.to_thread(changed, h.current)
        # The first model check and snapshot load run in the poller, so that a registry or a
        # Redis that is down or hung never keeps the port closed: /healthz answers at once,
        # /readyz says not ready (and why) and scoring answers 503 until the model loads.
        # Sources on local files cannot hang on a network: for them start-up waits for the
        # first load, so the service opens its port ready, as before.
        task = asyncio.create_task(_poll(h, s, settings.poll_seconds, metrics))
        while not task.done() and not ((h.checked or not h.local)
                                       and (s.started or not s.local)):
            await asyncio.sleep(0.01)
        if h.checked and h.current is None:
            log.warning("starting without a model: %s",
                        "; ".join(p.public() for p in h.problems()))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await s.close()
            plog, app.state.prediction_log = app.state.prediction_log, None
            if plog is not None:
                await asyncio.to_thread(plog.close)

    app = docs.offline_app(  # FastAPI, with /docs and /redoc that need no CDN
        title="churnguard",
        version=API_VERSION,
        summary="Churn risk, customer lifetime value and retention actions for CRM systems.",
        description="Scores are calibrated churn probabilities in the model's horizon with the "
        "CLV at stake, the drivers behind the risk and the retention actions worth taking. "
        "Send the API key in `X-API-Key`. Errors always have the shape "
        "`{\"error\": {status, code, message, request_id, details}}`.",
        lifespan=lifespan,
        responses=_responses(500),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.holder = holder
    app.state.store = store
    app.state.prediction_log = None
    app.state.verdicts = VerdictReader(settings.monitor_state_file)
    app.state.api_keys = key_digests(settings.api_keys)
    errors.install(app)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)],
                   responses=_responses(401, 413, 422, 503))
    v1.include_router(scores.router, responses=_responses(404))
    v1.include_router(campaigns.router, responses=_responses(404))
    v1.include_router(meta.router)
    app.include_router(v1)
    app.include_router(meta.ops)
    docs.install_openapi(app, settings)
    templates = {id(r): "/v1" + getattr(r, "path", "")
                 for router in (scores.router, campaigns.router, meta.router)
                 for r in router.routes}
    templates.update({id(r): getattr(r, "path", "") for r in meta.ops.routes})
    templates.update({id(r): getattr(r, "path", "unmatched") for r in app.routes
                      if id(r) not in templates})  # /docs, /openapi.json, the docs assets
    app.add_middleware(ServiceMiddleware, metrics=metrics,
                       max_body=settings.max_request_bytes, templates=templates)
    return app


async def _poll(holder: ModelHolder, store: FeatureStore, seconds: float,
                metrics: Metrics) -> None:
    """Check the model alias and the feature snapshot now, then every ``seconds``: each in its
    own loop (a slow registry never delays the snapshot, nor a slow Redis the model), in a
    worker thread, every call bounded by timeouts (MLflow's HTTP settings, Redis socket
    timeouts)."""

    def snapshot() -> None:
        if store.refresh() and store.info:
            metrics.snapshot_rows.set(store.info.rows)

    async def every(what: str, step: Any) -> None:
        while True:
            try:
                await asyncio.to_thread(step)
            except Exception:  # never let the poller die
                log.exception("%s poll failed", what)
            await asyncio.sleep(seconds)

    await asyncio.gather(every("model", holder.check), every("feature snapshot", snapshot))
