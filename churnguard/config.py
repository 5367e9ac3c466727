"""The one settings object: every knob, its default and its environment variable.

Settings are read when a command starts (``Settings()``), never at import time, and passed down
as plain arguments: the feature, training and serving code does not read the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _memory_limit_has_unit(cls, value: str) -> str:
        stripped = value.strip().upper()
        if not stripped or not stripped[0].isdigit() or not stripped.endswith(("B", "%")):
            raise ValueError(f"expected a size such as '1536MB' or '2GB', got {value!r}")
        return stripped
