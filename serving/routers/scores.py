"""POST /v1/scores and GET /v1/customers/{customer_id}/score."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from churnguard.config import Settings
from churnguard.serving import scoring
from churnguard.serving.deps import ModelDep
from churnguard.serving.errors import request_id
from churnguard.serving.metrics import Metrics
from churnguard.serving.model import LoadedModel
from churnguard.serving.schemas import CustomerIn, Score, ScoresRequest, ScoresResponse
from churnguard.serving.store import FeatureStore

router = APIRouter(tags=["scores"])


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.post("/scores", response_model=ScoresResponse,
             summary="Score 1 to 1,000 customers (by id or inline features)")
async def post_scores(body: ScoresRequest, request: Request, model: ModelDep) -> Response:
    """Churn probability, risk tier, CLV, value tier, lifecycle stage, top drivers and
    recommended retention actions of each customer, in request order."""
    # Store, settings and metrics straight from the app state: each FastAPI dependency costs a
    # dependency solve per request (the model stays one: it answers 503 before body errors).
    state = request.app.state
    settings: Settings = state.settings
    scoring.check_batch(len(body.customers), settings.max_batch)
    X = await scoring.features_matrix(body.customers, model, state.store)
    full = await scoring.score(X, model)
    ids = [c.customer_id for c in body.customers]
    return _json({"request_id": request_id(request), "model_version": model.version,
                  "scores": scoring.records(full, ids, model, state.metrics)})


async def _one(customer_id: str, model: LoadedModel, store: FeatureStore,
               metrics: Metrics) -> dict[str, object]:
    customers = [CustomerIn(customer_id=customer_id)]
    X = await scoring.features_matrix(customers, model, store)
    full = await scoring.score(X, model)
    return scoring.records(full, [customer_id], model, metrics)[0]


@router.get("/customers/{customer_id}/score", response_model=Score,
            summary="Score one customer from the feature snapshot")
async def get_customer_score(
    customer_id: Annotated[str, Path(min_length=1, max_length=128,
                                     pattern=r"^[^\x00-\x1f]+$")],
    model: ModelDep, request: Request,
) -> Response:
    """The score of a customer in the latest materialised feature snapshot (404 if absent)."""
    state = request.app.state
    return _json(await _one(customer_id, model, state.store, state.metrics))
