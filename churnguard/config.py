"""The one settings object: every knob, its default and its environment variable.

Settings are read when a command starts (``Settings()``), never at import time, and passed down
as plain arguments: the feature, training and serving code does not read the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """churnguard configuration; each field is set by ``CHURNGUARD_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="CHURNGUARD_", extra="ignore")

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
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, repr=False,
        description="Accepted X-API-Key values, comma-separated (several for rotation). "
        "Empty: the API is open (a warning is logged at start-up).",
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

    @property
    def snapshot_path(self) -> Path:
        return self.feature_snapshot or self.data_dir / "features.parquet"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            value = [k.strip() for k in value.split(",")]
        if isinstance(value, list | tuple):
            keys = [str(k).strip() for k in value if str(k).strip()]
            short = [i for i, k in enumerate(keys) if len(k) < 16]
            if short:
                raise ValueError(f"API keys must be at least 16 characters (key(s) number "
                                 f"{', '.join(str(i + 1) for i in short)} are shorter)")
            return keys
        return value

    @field_validator("online_store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        v = value.strip()
        if v == "memory" or v.startswith(("redis://", "rediss://", "unix://")):
            return v
        raise ValueError(f"expected 'memory' or a redis:// URL, got {value!r}")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        v = value.strip().lower()
        if v not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError(f"expected critical, error, warning, info or debug, got {value!r}")
        return v

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _memory_limit_has_unit(cls, value: str) -> str:
        stripped = value.strip().upper()
        if not stripped or not stripped[0].isdigit() or not stripped.endswith(("B", "%")):
            raise ValueError(f"expected a size such as '1536MB' or '2GB', got {value!r}")
        return stripped
