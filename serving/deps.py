"""FastAPI dependencies (``Annotated`` aliases used by the routers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from churnguard.config import Settings
from churnguard.serving.errors import ApiError
from churnguard.serving.metrics import Metrics
from churnguard.serving.model import LoadedModel, ModelHolder
from churnguard.serving.store import FeatureStore


async def get_model(request: Request) -> LoadedModel:
    holder: ModelHolder = request.app.state.holder
    model = holder.current
    if model is None:
        raise ApiError(503, f"no model loaded: models:/{holder.name}@{holder.alias} has no "
                       "loadable version yet (see /readyz)", code="no_model")
    return model


async def get_store(request: Request) -> FeatureStore:
    store: FeatureStore = request.app.state.store
    return store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_holder(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.holder
    return holder


ModelDep = Annotated[LoadedModel, Depends(get_model)]
StoreDep = Annotated[FeatureStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
