"""Request and response models of the HTTP API (README, "Scoring API"), with the examples shown at
/docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FeatureValue = float | int | str | None
#: Inline values: bool is listed so that true/false reach the encoder (and its clear error)
#: instead of being coerced to 1.0/0.0.
FeatureIn = bool | int | float | str | None

CUSTOMER_ID = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$",
                    description="The customer's id in the data source (customers.customer_id).")

RiskTier = Literal["low", "medium", "high"]
ValueTier = Literal["low", "medium", "high", "top"]
Stage = Literal["new", "active", "loyal", "declining", "at_risk", "lapsed"]


class CustomerIn(BaseModel):
    """One customer to score: by id (features looked up in the latest feature snapshot), or
    with inline ``features`` (every feature of the model; see ``GET /v1/model``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"customer_id": "c000042"}]})

    customer_id: str = CUSTOMER_ID
    features: dict[str, FeatureIn] | None = Field(
        default=None, description="Inline feature row (name → value; null = unknown for "
        "float and category features). Omit to look the customer up in the feature snapshot.")


class ScoresRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"customers": [{"customer_id": "c000042"}, {"customer_id": "c000043"}]}]})

    customers: list[CustomerIn] = Field(
        min_length=1, description="1 to CHURNGUARD_MAX_BATCH (default 1,000) customers; more "
        "is answered with 413.")


class Driver(BaseModel):
    feature: str
    description: str
    value: FeatureValue = Field(description="The customer's value of the feature.")
    contribution: float = Field(description="Contribution to the churn log-odds (TreeSHAP).")


class ActionOut(BaseModel):
    action_id: str
    name: str
    channel: str
    cost: float
    expected_effect: float = Field(description="Relative reduction of the churn probability.")
    expected_value: float = Field(description="p_churn × effect × CLV − cost.")
    reason: str


class Score(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "customer_id": "c000042", "churn_probability": 0.71, "risk_tier": "high",
        "clv": 412.5, "value_tier": "high", "lifecycle_stage": "at_risk",
        "drivers": [{"feature": "purchase_trend", "description": "Purchase rate in the last 90 "
                     "days relative to the last year (1 = usual).", "value": 0.4,
                     "contribution": 0.82}],
        "actions": [{"action_id": "satisfaction_survey", "name": "Satisfaction survey with "
                     "service recovery", "channel": "phone", "cost": 5.0,
                     "expected_effect": 0.2, "expected_value": 53.6,
                     "reason": "Recent complaints or support trouble are best answered by "
                     "fixing the problem first: churn risk 71% (high) with 412.50 expected "
                     "spend at stake; 2 complaints in the last 90 days; purchase frequency "
                     "fell 60% vs. their usual. Expected value +53.60 for a cost of 5.00."}],
        "model_version": "3", "scored_at": "2026-01-05T10:00:00.123456Z"}]})

    customer_id: str
    churn_probability: float = Field(ge=0, le=1, description="Calibrated probability of churn "
                                     "in the model's horizon.")
    risk_tier: RiskTier
    clv: float = Field(ge=0, description="Expected spend in the model's CLV horizon.")
    value_tier: ValueTier
    lifecycle_stage: Stage
    drivers: list[Driver] = Field(description="Features raising the churn score most.")
    actions: list[ActionOut] = Field(description="Eligible actions with positive expected "
                                     "value, best first (no_action when none pays).")
    model_version: str
    scored_at: datetime


class ScoresResponse(BaseModel):
    request_id: str
    model_version: str
    scores: list[Score] = Field(description="In request order.")


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "budget": 500.0, "customers": [{"customer_id": "c000042"},
                                       {"customer_id": "c000043"}]}]})

    customers: list[CustomerIn] = Field(min_length=1)
    budget: float = Field(ge=0, le=1e9, allow_inf_nan=False,
                          description="Most that the campaign may spend, in the currency of "
                          "the transactions.")
    actions: list[str] | None = Field(
        default=None, description="Only consider these action ids (default: the whole "
        "catalog).")


class Assignment(BaseModel):
    customer_id: str
    action_id: str
    name: str
    channel: str
    cost: float
    expected_value: float
    churn_probability: float
    clv: float
    reason: str


class PlanResponse(BaseModel):
    request_id: str
    model_version: str
    budget: float
    spend: float
    expected_retained_value: float = Field(
        description="Sum of p_churn × effect × CLV over the assigned actions.")
    expected_value: float = Field(description="Retained value minus spend.")
    roi: float | None = Field(description="(retained value − spend) / spend; null when "
                              "nothing is spent.")
    method: Literal["unconstrained", "exact", "greedy"]
    optimality_gap: float = Field(
        description="Upper bound on the EV a better plan could add (0 when exact).")
    assignments: list[Assignment]
    untargeted: list[str] = Field(description="Customers left without an action.")


class ModelInfo(BaseModel):
    name: str
    alias: str
    version: str
    uri: str
    run_id: str | None
    loaded_at: datetime
    trained_at: str | None
    as_of: str | None
    horizon_days: int
    clv_horizon_days: int
    training_window: dict[str, Any]
    metrics: dict[str, float]
    feature_set_version: str | None
    spec_fingerprint: str | None
    policy: dict[str, Any]
    features: list[dict[str, str]]
    feature_snapshot: dict[str, Any] | None
    reload_error: dict[str, Any] | None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    status: Literal["ok", "degraded", "not_ready"]
    model_version: str | None
    problems: list[str]


class ErrorDetail(BaseModel):
    loc: list[str | int]
    message: str
    type: str


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    request_id: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {status, code, message, request_id, details}}``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"error": {
        "status": 422, "code": "validation_error", "message": "1 invalid field",
        "request_id": "5f0c…", "details": [{"loc": ["body", "customers", 0, "customer_id"],
                                           "message": "Field required", "type": "missing"}]}}]})

    error: ErrorBody
