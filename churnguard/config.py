"""The one settings object: every knob, its default and its environment variable.

Settings are read when a command starts (``Settings()``), never at import time, and passed down
as plain arguments: the feature, training and serving code does not read the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

ENV_PREFIX = "CHURNGUARD_"
#: Contractual churn: a lapse that a new subscription ends within this many days is not churn
#: (a late payment; README, "Features": labels). ``churnguard train --grace-days`` overrides it.
DEFAULT_GRACE_DAYS = 14

# The prediction log's PostgreSQL URL and table (as serving.batch accepts a --out / --table).
_PG_URL = re.compile(r"^postgres(ql)?://")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# A DuckDB memory limit: a positive number with a unit (1000- or 1024-based), or a percentage of
# the machine's memory (README, "Configuration").
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB|%)$")


def memory_limit(value: str) -> str:
    """``value`` as a DuckDB memory limit (``1536MB``, ``2GB``, ``4GiB``, ``75%``), or raise
    ValueError. The one check of the setting: :func:`churnguard.features.sources.connect` runs
    it too, and hands the value to DuckDB as a configuration option, never as SQL text."""
    match = _SIZE.match(value.strip().upper()) if isinstance(value, str) else None
    if match is None:
        raise ValueError("expected a size such as 1536MB, 2GB or 4GiB, or a share of the "
                         "machine's memory such as 75%")
    number, unit = float(match.group(1)), match.group(2)
    if number <= 0 or (unit == "%" and number > 100):
        raise ValueError("expected a size above 0, or a percentage above 0% and at most 100%")
    return f"{match.group(1)}{unit}"


class Settings(BaseSettings):
    """churnguard configuration; each field is set by ``CHURNGUARD_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Working directory for demo data, feature snapshots and the embedded "
        "MLflow store (SQLite + local artifacts).",
    )
    horizon_days: int = Field(
        default=90, ge=1, le=3650, description="Churn label window after the cutoff, in days."
    )
    clv_horizon_days: int = Field(
        default=365, ge=1, le=3650, description="CLV target window after the cutoff, in days."
    )
    gate_min_positives: int = Field(
        default=50, ge=1, le=1_000_000,
        description="Promotion gate: churners (CLV: buyers) a test snapshot must hold before a "
        "version can become champion (README, \"Promotion\").",
    )
    gate_min_negatives: int = Field(
        default=50, ge=1, le=1_000_000,
        description="Promotion gate: non-churners (CLV: non-buyers) a test snapshot must hold "
        "before a version can become champion.",
    )
    duckdb_memory_limit: str = Field(
        default="1536MB",
        description="Memory cap for the embedded DuckDB engine; larger work spills to disk.",
    )
    duckdb_threads: int | None = Field(
        default=None, ge=1, description="DuckDB worker threads (default: all cores)."
    )

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CHURNGUARD_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking/registry URI (e.g. http://mlflow:5000). Unset: the embedded "
        "store sqlite:///<data_dir>/mlflow.db with artifacts under <data_dir>/mlartifacts.",
    )
    model_name: str = Field(
        default="churnguard", min_length=1, description="Registered model name in MLflow."
    )
    model_alias: str = Field(
        default="champion", min_length=1,
        description="Registry alias that scoring loads by default (models:/<name>@<alias>).",
    )
    experiment: str = Field(
        default="churnguard", min_length=1, description="MLflow experiment of training runs."
    )

    # -- serving (churnguard serve) --------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the API listens on.")
    workers: int = Field(default=1, ge=1, le=64, description="API worker processes.")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, repr=False,
        description="Accepted X-API-Key values, comma-separated (several for rotation), each "
        "at least 16 characters. Secrets: shown as '**********' in a repr or a validation "
        "error. Empty: the API is open (a warning is logged at start-up).",
    )
    online_store: str = Field(
        default="memory",
        description="Where the API looks up customer features: 'memory' (the feature snapshot "
        "loaded into each process) or a redis:// URL shared by several instances.",
    )
    feature_snapshot: Path | None = Field(
        default=None,
        description="Latest materialised feature snapshot (churnguard features build --out); "
        "default <data_dir>/features.parquet.",
    )
    actions_catalog: Path | None = Field(
        default=None, description="Action catalog YAML (default: churnguard's actions.yaml).",
    )
    poll_seconds: float = Field(
        default=30.0, gt=0, le=86400,
        description="How often the API checks the model alias and the feature snapshot.",
    )
    max_batch: int = Field(
        default=1000, ge=1, le=100_000, description="Most customers per scoring request (413)."
    )
    max_plan_customers: int = Field(
        default=10_000, ge=1, le=1_000_000,
        description="Most customers per campaign plan request (413).",
    )
    max_request_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413)."
    )
    log_level: str = Field(default="info", description="Log level of the API.")
    prediction_log: bool = Field(
        default=True,
        description="Record what `churnguard score` and the API score in the prediction log "
        "(README, \"Prediction log\").",
    )
    prediction_log_dir: Path | None = Field(
        default=None,
        description="Where the prediction log is written (Parquet, partitioned by date); "
        "default <data_dir>/prediction_log.",
    )
    prediction_log_queue_rows: int = Field(
        default=100_000, ge=1, le=10_000_000,
        description="Most scored rows the API holds for the prediction log before it drops "
        "them (counted in /metrics); requests never wait for the log.",
    )
    prediction_log_flush_seconds: float = Field(
        default=2.0, gt=0, le=3600,
        description="How often the API writes its queued prediction-log rows.",
    )
    prediction_log_url: str | None = Field(
        default=None, repr=False,
        description="A postgresql:// URL: the prediction log goes to the table "
        "prediction_log_table of that database instead of Parquet files (prediction_log_dir "
        "is then unused). May hold a password: never shown in a repr or an error.",
    )
    prediction_log_table: str = Field(
        default="churnguard_prediction_log",
        description="The prediction log's PostgreSQL table with prediction_log_url: NAME or "
        "SCHEMA.NAME (created on the first write).",
    )

    monitor_psi_warn: float = Field(
        default=0.1, gt=0, description="`churnguard monitor`: a feature, score or CLV PSI at "
        "or above this warns.")
    monitor_psi_alert: float = Field(
        default=0.25, gt=0, description="`churnguard monitor`: a PSI at or above this alerts.")
    monitor_null_rate_change_warn: float = Field(
        default=0.05, gt=0, le=1, description="`churnguard monitor`: a feature's null rate "
        "moving this far from the reference warns.")
    monitor_auc_drop_alert: float = Field(
        default=0.05, gt=0, le=1, description="`churnguard monitor`: a realized ROC AUC this "
        "far below the test ROC AUC at training alerts.")
    monitor_ece_alert: float = Field(
        default=0.05, gt=0, le=1, description="`churnguard monitor`: a realized expected "
        "calibration error at or above this alerts.")
    monitor_group_gap_warn: float = Field(
        default=0.05, gt=0, le=1, description="`churnguard monitor`: a group of a realized run "
        "(value tier, lifecycle stage, customer attribute; at least 100 customers) whose churn "
        "rate is this far from its mean predicted probability warns.")
    monitor_experiment: str = Field(
        default="churnguard-monitoring", min_length=1, description="`churnguard monitor`: "
        "MLflow experiment of the monitoring runs (tag churnguard.run_kind=monitoring).")
    monitor_state_path: Path | None = Field(
        default=None,
        description="Where `churnguard monitor` records its last verdict (a small JSON file) "
        "and the API reads it for `GET /v1/model` (`monitoring`); default "
        "<data_dir>/monitoring/last_verdict.json.",
    )
    monitor_live_window: int = Field(
        default=10_000, ge=1, le=10_000_000,
        description="The API's live score drift: PSI in /metrics (churnguard_score_psi) of the "
        "churn probabilities of the last this many customers it scored, per worker.",
    )
    monitor_live_min_rows: int = Field(
        default=500, ge=1, le=10_000_000,
        description="The live score PSI is shown only once the window holds at least this "
        "many scores of the served model (a smaller window: once it is full).",
    )

    @property
    def snapshot_path(self) -> Path:
        return self.feature_snapshot or self.data_dir / "features.parquet"

    @property
    def prediction_log_path(self) -> Path:
        return self.prediction_log_dir or self.data_dir / "prediction_log"

    @property
    def monitor_state_file(self) -> Path:
        return self.monitor_state_path or self.data_dir / "monitoring" / "last_verdict.json"

    @model_validator(mode="before")
    @classmethod
    def _api_keys_as_secrets(cls, data: object) -> object:
        """``api_keys`` as ``SecretStr`` before any field is validated: comma-separated text →
        the keys, stripped. Done on the model's input, not in a field validator, because a
        field's validation error shows the field's input: this way it is the masked keys,
        never the text of CHURNGUARD_API_KEYS."""
        if not isinstance(data, dict) or "api_keys" not in data:
            return data
        value = data["api_keys"]
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            keys = (k.get_secret_value() if isinstance(k, SecretStr) else str(k)
                    for k in value)
            return {**data, "api_keys": [SecretStr(k.strip()) for k in keys if k.strip()]}
        return {**data, "api_keys": SecretStr("")}  # neither text nor a list: a type error

    @field_validator("api_keys")
    @classmethod
    def _long_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        short = [i for i, k in enumerate(keys) if len(k.get_secret_value()) < 16]
        if short:
            raise ValueError(f"API keys must be at least 16 characters (key(s) number "
                             f"{', '.join(str(i + 1) for i in short)} are shorter)")
        return keys

    @field_validator("online_store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        v = value.strip()
        if v == "memory" or v.startswith(("redis://", "rediss://", "unix://")):
            return v
        # (The value is not repeated: a URL may hold a password; see load_settings.)
        raise ValueError("expected 'memory' or a redis://, rediss:// or unix:// URL")

    @field_validator("prediction_log_url")
    @classmethod
    def _log_url(cls, value: str | None) -> str | None:
        v = (value or "").strip()
        if not v:
            return None
        if _PG_URL.match(v):
            return v
        # (The value is not repeated: it may hold a password; see load_settings.)
        raise ValueError("expected a postgresql:// (or postgres://) URL")

    @field_validator("prediction_log_table")
    @classmethod
    def _log_table(cls, value: str) -> str:
        v = value.strip()
        parts = v.split(".")
        if len(parts) > 2 or not all(_IDENT.match(p) for p in parts):
            raise ValueError("expected NAME or SCHEMA.NAME (letters, digits and _, not "
                             "starting with a digit, at most 63 characters each)")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        v = value.strip().lower()
        if v not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError("expected critical, error, warning, info or debug")
        return v

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _memory_limit_is_a_size(cls, value: str) -> str:
        return memory_limit(value)


class SettingsError(ValueError):
    """Settings that cannot be used: one line per bad variable, naming it and what is wrong,
    never its value (a value may be a secret: an API key, a password in a URL)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(
            f"  - {name}: {what}" for name, what in problems))


def load_settings() -> Settings:
    """``Settings()`` from the environment, or a :class:`SettingsError` (a ValueError) whose
    message lists each bad ``CHURNGUARD_*`` variable and what is wrong with it, without values.

    Every command reads its settings through this (pydantic's own message repeats the input).
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err, with_input in zip(exc.errors(include_input=False, include_url=False),
                                   exc.errors(include_url=False), strict=True):
            name = _variable(err["loc"][0] if err["loc"] else "")
            problems.append((name, _without(str(err["msg"]), with_input.get("input"))))
        raise SettingsError(problems) from None
    except _SourceError as exc:  # a value pydantic-settings could not decode (e.g. bad JSON)
        field = re.search(r'field "([^"]+)"', str(exc))
        name = _variable(field.group(1)) if field else "a CHURNGUARD_* variable"
        raise SettingsError([(name, "cannot be decoded")]) from None


def _variable(loc: object) -> str:
    """The environment variable(s) that set a settings field (its name in an error)."""
    field = Settings.model_fields.get(str(loc))
    if field is None:
        return str(loc)  # already a variable name (a validation alias)
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return " or ".join(str(a) for a in alias.choices)
    if isinstance(alias, str):
        return alias
    return f"{ENV_PREFIX}{str(loc).upper()}"


def _without(message: str, value: object) -> str:
    """``message`` with pydantic's "Value error, " prefix dropped and the value blanked if a
    validator repeated it anyway."""
    message = message.removeprefix("Value error, ")
    if isinstance(value, str) and len(value.strip()) >= 3:
        message = message.replace(value, "<value>").replace(value.strip(), "<value>")
    return message
