"""POST /v1/scores and GET /v1/customers/{customer_id}/score."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from churnguard.config import Settings
from churnguard.serving import scoring
from churnguard.serving.deps import ModelDep
from churnguard.serving.errors import json_response, request_id
from churnguard.serving.schemas import (
    CUSTOMER_ID_PATTERN,
    CustomerIn,
    Score,
    ScoresRequest,
    ScoresResponse,
)
from churnguard.serving.store import FeatureStore

router = APIRouter(tags=["scores"])


@router.post("/scores", response_model=ScoresResponse,
             summary="Score 1 to 1,000 customers (by id or inline features)")
async def post_scores(body: ScoresRequest, request: Request, model: ModelDep) -> Response:
    """Churn probability, risk tier, CLV, value tier, lifecycle stage, top drivers and
    recommended retention actions of each customer, in request order. An id the feature
    snapshot does not hold is listed under ``errors`` and the others are scored; with
    ``strict`` it fails the request (404)."""
    # Store, settings and metrics straight from the app state: each FastAPI dependency costs a
    # dependency solve per request (the model stays one: it answers 503 before body errors).
    state = request.app.state
    settings: Settings = state.settings
    store: FeatureStore = state.store
    customers = body.customers
    scoring.check_batch(len(customers), settings.max_batch)
    rows = await scoring.customer_rows(customers, model, store)
    if rows.unknown and body.strict:
        raise scoring.unknown_error([customers[i].customer_id for i in rows.unknown],
                                    [["body", "customers", i, "customer_id"]
                                     for i in rows.unknown], store)
    scores: list[dict[str, object]] = []
    if rows.positions:
        full = await scoring.score(rows.X, model)
        scores = scoring.records(full, [customers[i].customer_id for i in rows.positions],
                                 model, state.metrics,
                                 [rows.warnings.get(i, []) for i in rows.positions],
                                 state.prediction_log)
    return json_response({"request_id": request_id(request), "model_version": model.version,
                          "scores": scores,
                          "errors": scoring.customer_errors(customers, rows.unknown, store)})


@router.get("/customers/{customer_id}/score", response_model=Score,
            summary="Score one customer from the feature snapshot")
async def get_customer_score(
    customer_id: Annotated[str, Path(min_length=1, max_length=128,
                                     pattern=CUSTOMER_ID_PATTERN)],
    model: ModelDep, request: Request,
) -> Response:
    """The score of a customer in the latest materialised feature snapshot (404 if absent)."""
    state = request.app.state
    store: FeatureStore = state.store
    rows = await scoring.customer_rows([CustomerIn(customer_id=customer_id)], model, store)
    if rows.unknown:
        raise scoring.unknown_error([customer_id], [["path", "customer_id"]], store)
    full = await scoring.score(rows.X, model)
    return json_response(scoring.records(full, [customer_id], model, state.metrics,
                                         prediction_log=state.prediction_log)[0])
