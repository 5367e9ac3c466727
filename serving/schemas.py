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

#: A customer id: 1 to 128 characters, no control characters.
CUSTOMER_ID_PATTERN = r"^[^\x00-\x1f]+$"
CUSTOMER_ID = Field(min_length=1, max_length=128, pattern=CUSTOMER_ID_PATTERN,
                    description="The customer's id in the data source (customers.customer_id).")

RiskTier = Literal["low", "medium", "high"]
ValueTier = Literal["low", "medium", "high", "top"]
Stage = Literal["new", "active", "loyal", "declining", "at_risk", "lapsed",
                # contractual models
                "onboarding", "at_renewal_risk", "cancelled"]


#: Request models are strict: JSON types are not coerced (``false`` is not a number, ``"1"``
#: not a number, ``1`` not a boolean), so what the schema says is what is accepted.
REQUEST = ConfigDict(extra="forbid", strict=True)

STRICT_FLAG = Field(default=False, description="true: one unknown customer id fails the "
                    "whole request with 404 (all or nothing). false (default): known customers "
                    "are answered and each unknown one is listed under `errors`.")


class CustomerIn(BaseModel):
    """One customer to score: by id (features looked up in the latest feature snapshot), or
    with inline ``features`` (every feature of the model; see ``GET /v1/model``)."""

    model_config = ConfigDict(**REQUEST, json_schema_extra={
        "examples": [{"customer_id": "C0000042"}]})

    customer_id: str = CUSTOMER_ID
    features: dict[str, FeatureIn] | None = Field(
        default=None, description="Inline feature row: every feature of the served model, "
        "by name, and no other (`customer_id` and `as_of` are accepted and ignored). Counts "
        "are integers >= 0; other numbers finite, within ±3.4e38, or null (unknown); "
        "categories strings, or integers read as their decimal string, or null; a category "
        "value the model was not trained on scores as missing and is reported in the score's "
        "`warnings`. The schema of the row (`FeatureRow`) lists the served model's features. "
        "Omit to look the customer up in the feature snapshot.")


class ScoresRequest(BaseModel):
    model_config = ConfigDict(**REQUEST, json_schema_extra={"examples": [
        {"customers": [{"customer_id": "C0000042"}, {"customer_id": "C0000043"}]}]})

    customers: list[CustomerIn] = Field(
        min_length=1, description="1 to CHURNGUARD_MAX_BATCH (default 1,000) customers; more "
        "is answered with 413. The same id may appear more than once (each is scored).")
    strict: bool = STRICT_FLAG


class Driver(BaseModel):
    feature: str
    description: str
    value: FeatureValue = Field(description="The customer's value of the feature.")
    contribution: float = Field(description="Contribution to the churn log-odds (TreeSHAP).")
    value_meaning: str | None = Field(
        default=None, description="What a null `value` means for this feature (\"no purchase "
        "yet\"); present only when `value` is null.")


class ActionOut(BaseModel):
    action_id: str
    name: str
    channel: str
    cost: float
    expected_effect: float = Field(description="Relative reduction of the churn probability.")
    expected_value: float = Field(description="p_churn × effect × CLV − cost.")
    reason: str


class ScoreWarning(BaseModel):
    feature: str
    value: str = Field(description="The value sent, as the model compares it (a string).")
    type: Literal["unseen_category"]
    message: str


class Score(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "customer_id": "C0000042", "churn_probability": 0.71, "risk_tier": "high",
        "clv": 412.5, "clv_low": 0.0, "clv_high": 980.0, "value_tier": "high",
        "lifecycle_stage": "at_risk",
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
        "warnings": [], "horizon_days": 90, "clv_horizon_days": 365,
        "model_version": "3", "scored_at": "2026-01-05T10:00:00.123456Z"}]})

    customer_id: str
    churn_probability: float = Field(ge=0, le=1, description="Calibrated probability of churn "
                                     "(no purchase) in the next `horizon_days` days.")
    risk_tier: RiskTier
    clv: float = Field(ge=0, description="Expected spend in the next `clv_horizon_days` "
                       "days, in the currency of the transactions.")
    clv_low: float | None = Field(
        ge=0, description="Lower end of the 80 % prediction interval of the spend in the next "
        "`clv_horizon_days` days: its 10 % quantile, or 0 when the customer has a 10 % or "
        "greater chance of buying nothing (the interval then runs from 0 to the 80 % "
        "quantile). Null for a model trained before intervals.")
    clv_high: float | None = Field(
        ge=0, description="Upper end of that interval: the 90 % quantile, or the 80 % "
        "quantile when `clv_low` is 0 because of the chance of no purchase. `clv` (a mean) "
        "can exceed it for a customer unlikely to buy. Null for a model trained before "
        "intervals.")
    value_tier: ValueTier
    lifecycle_stage: Stage
    drivers: list[Driver] = Field(description="Features raising the churn score most.")
    actions: list[ActionOut] = Field(description="Eligible actions with positive expected "
                                     "value, best first (no_action when none pays).")
    warnings: list[ScoreWarning] = Field(
        description="What the score could not use as sent: inline category values the model "
        "was not trained on, scored as missing.")
    horizon_days: int = Field(description="The churn horizon of `churn_probability`, in days.")
    clv_horizon_days: int = Field(description="The horizon of `clv`, in days.")
    model_version: str
    scored_at: datetime


class CustomerError(BaseModel):
    """A customer of the request that was not answered (the others were)."""

    index: int = Field(ge=0, description="Position in the request's `customers`.")
    customer_id: str
    code: Literal["unknown_customer"]
    reason: str


class ScoresResponse(BaseModel):
    request_id: str
    model_version: str
    scores: list[Score] = Field(description="One per customer that could be scored, in "
                                "request order (customers listed under `errors` left out).")
    errors: list[CustomerError] = Field(
        description="Customers that were not scored (ids not in the feature snapshot), in "
        "request order; empty with `strict`, which answers 404 instead.")


class PlanRequest(BaseModel):
    model_config = ConfigDict(**REQUEST, json_schema_extra={"examples": [{
        "budget": 500.0, "customers": [{"customer_id": "C0000042"},
                                       {"customer_id": "C0000043"}]}]})

    customers: list[CustomerIn] = Field(
        min_length=1, description="1 to CHURNGUARD_MAX_PLAN_CUSTOMERS (default 10,000) "
        "customers; more is answered with 413. Each customer is planned once: a repeated "
        "`customer_id` is listed under `duplicates` and otherwise ignored (the first "
        "occurrence counts).")
    budget: float = Field(ge=0, le=1e9, allow_inf_nan=False,
                          description="Most that the campaign may spend, in the currency of "
                          "the transactions.")
    actions: list[str] | None = Field(
        default=None, description="Only consider these action ids (default: the whole "
        "catalog of the served model, `GET /v1/model`).")
    strict: bool = STRICT_FLAG


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


class Duplicate(BaseModel):
    index: int = Field(ge=0, description="Position of the repetition in `customers`.")
    customer_id: str
    first_index: int = Field(ge=0, description="Position of the occurrence that was planned.")


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
    untargeted: list[str] = Field(description="Customers planned and left without an action.")
    errors: list[CustomerError] = Field(
        description="Customers not planned (ids not in the feature snapshot), in request "
        "order; empty with `strict`, which answers 404 instead.")
    duplicates: list[Duplicate] = Field(
        description="Repeated customer ids, not planned again, in request order.")


class ChurnLabel(BaseModel):
    kind: Literal["noncontractual", "contractual"] = Field(
        description="noncontractual: churn = no purchase in the next `horizon_days` days; "
        "contractual: churn = no subscription active after `horizon_days` days (scored for "
        "customers with an active subscription).")
    grace_days: int = Field(ge=0, description="Contractual: a lapse that a new subscription "
                            "ends within this many days is not churn.")


class MonitoringVerdict(BaseModel):
    """The last ``churnguard monitor`` verdict (README, "Monitoring"), as recorded in
    CHURNGUARD_MONITOR_STATE_PATH."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "verdict": "warn", "as_of": "2026-02-01", "model_version": "3",
        "checked_at": "2026-02-01T06:00:12.345678+00:00",
        "reasons": ["feature days_since_last_purchase: PSI 0.14 (warn at 0.1)"],
        "reasons_total": 1, "score_psi": 0.031, "for_served_model": True,
        "report_path": "/srv/monitor/2026-02-01/monitor.json"}]})

    verdict: Literal["ok", "warn", "alert"]
    as_of: str | None = Field(description="The date the run monitored (its --as-of).")
    model_version: str | None = Field(description="The model version the run monitored.")
    checked_at: str | None = Field(description="When the run finished (UTC, ISO 8601).")
    reasons: list[str] = Field(description="The first (at most 10) reasons for the verdict; "
                               "all of them are in the run's monitor.json.")
    reasons_total: int = Field(ge=0, description="How many reasons the run gave.")
    score_psi: float | None = Field(description="PSI of the run's churn probabilities "
                                    "against the model's reference profile.")
    for_served_model: bool = Field(description="Whether the run was about the version being "
                                   "served (`model_version` = this response's `version`).")
    report_path: str | None = Field(default=None, description="The run's full monitor.json.")


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
    churn_label: ChurnLabel
    training_window: dict[str, Any]
    metrics: dict[str, float]
    feature_set_version: str | None
    spec_fingerprint: str | None
    policy: dict[str, Any]
    features: list[dict[str, str]]
    feature_snapshot: dict[str, Any] | None
    reload_error: dict[str, Any] | None
    status: dict[str, Any] = Field(
        description="Readiness with the details of each problem (code, message, detail with "
        "paths, URLs and errors, since): what /readyz shows only as codes and messages.")
    monitoring: MonitoringVerdict | None = Field(
        default=None, description="The last `churnguard monitor` verdict, null when none was "
        "recorded (or its file cannot be read).")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "ready": True, "status": "degraded", "model_version": "3",
        "problems": ["model_load_failed: champion v4 could not be loaded (failed its "
                     "self-check (CLV out of range or not finite)); serving v3"]}]})

    ready: bool
    status: Literal["ok", "degraded", "not_ready"]
    model_version: str | None
    problems: list[str] = Field(description="``code: message`` per problem, without paths, "
                                "URLs or error text (details: GET /v1/model, status).")


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
