"""The scoring bundle: churn + CLV models + feature spec, saved as plain files, and its pyfunc.

:class:`ScoringBundle` is the one piece of code that turns a feature row into scores (SPEC §8,
"one scoring path"). The MLflow pyfunc :class:`ChurnguardPyfunc` only wraps it, so the API can
load the bundle directory and call :meth:`ScoringBundle.score` directly, without MLflow's
per-call overhead. Files: ``bundle.json`` (spec, category levels, calibrator, CLV factors,
metadata, room for an action ``policy``), ``churn.ubj``, ``clv_buy.ubj``, ``clv_spend.ubj``
(XGBoost's own format; no pickles).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import xgboost as xgb

from churnguard.features.definitions import FeatureSpec
from churnguard.training.data import model_matrix
from churnguard.training.models import Calibrator, ChurnModel, ClvModel

BUNDLE_FORMAT = 1
OUTPUT_COLUMNS = ("churn_probability", "clv", "p_buy", "expected_spend_if_buy")


@dataclass
class ScoringBundle:
    """Everything needed to score a feature row: spec, category levels and the fitted models."""

    spec: FeatureSpec
    levels: dict[str, list[str]]
    churn: ChurnModel
    clv: ClvModel
    horizon_days: int
    clv_horizon_days: int
    metadata: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] | None = None

    @property
    def feature_names(self) -> list[str]:
        return self.spec.feature_names()

    def matrix(self, features: pd.DataFrame) -> pd.DataFrame:
        return model_matrix(features, self.spec, self.levels)

    def score(self, features: pd.DataFrame) -> pd.DataFrame:
        """Scores of each row: churn_probability (calibrated, in the churn horizon), clv
        (expected spend in the CLV horizon, >= 0), p_buy and expected_spend_if_buy.

        ``customer_id`` (and ``as_of``) are passed through when present; other extra columns are
        ignored. Raises ``ValueError`` naming missing or non-numeric feature columns.
        """
        X = self.matrix(features)
        out = pd.DataFrame(index=features.index)
        for col in ("customer_id", "as_of"):
            if col in features.columns:
                out[col] = features[col].to_numpy()
        out["churn_probability"] = self.churn.predict(X)
        p_buy, spend = self.clv.components(X)
        out["clv"] = np.maximum(self.clv.scale * p_buy * spend, 0.0)
        out["p_buy"] = p_buy
        out["expected_spend_if_buy"] = spend * self.clv.scale
        return out

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions to the churn model's raw log-odds (XGBoost
        ``pred_contribs``, i.e. TreeSHAP values; Lundberg et al. 2020, Nature MI 2(1)) plus a
        ``bias`` column; each row sums to the raw (uncalibrated) log-odds."""
        X = self.matrix(features)
        contribs = self.churn.booster.predict(xgb.DMatrix(X, enable_categorical=True),
                                              pred_contribs=True)
        return pd.DataFrame(np.asarray(contribs), index=features.index,
                            columns=[*X.columns, "bias"])

    def input_example(self, features: pd.DataFrame, n: int = 3) -> pd.DataFrame:
        """A few rows in the pyfunc's input schema: customer_id plus the feature columns."""
        cols = ["customer_id", *self.feature_names]
        return signature_frame(features[cols].head(n), self.spec)

    # -- persistence ---------------------------------------------------------------------

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.churn.booster.save_model(directory / "churn.ubj")
        self.clv.buy.save_model(directory / "clv_buy.ubj")
        self.clv.spend.save_model(directory / "clv_spend.ubj")
        meta = {
            "format": BUNDLE_FORMAT,
            "spec": self.spec.to_dict(),
            "levels": self.levels,
            "calibrator": self.churn.calibrator.to_dict() if self.churn.calibrator else None,
            "churn_info": self.churn.info,
            "clv": {"smear": self.clv.smear, "scale": self.clv.scale, "info": self.clv.info},
            "horizon_days": self.horizon_days,
            "clv_horizon_days": self.clv_horizon_days,
            "metadata": self.metadata,
            "policy": self.policy,
        }
        (directory / "bundle.json").write_text(json.dumps(meta, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> ScoringBundle:
        directory = Path(directory)
        meta_file = directory / "bundle.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{directory} is not a churnguard bundle (no bundle.json)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"unsupported bundle format {meta.get('format')!r} "
                             f"(this churnguard reads format {BUNDLE_FORMAT})")

        def booster(name: str) -> xgb.Booster:
            b = xgb.Booster()
            b.load_model(directory / name)
            return b

        cal = Calibrator.from_dict(meta["calibrator"]) if meta["calibrator"] else None
        return cls(
            spec=FeatureSpec.from_dict(meta["spec"]),
            levels={k: list(v) for k, v in meta["levels"].items()},
            churn=ChurnModel(booster=booster("churn.ubj"), calibrator=cal,
                             info=meta.get("churn_info", {})),
            clv=ClvModel(buy=booster("clv_buy.ubj"), spend=booster("clv_spend.ubj"),
                         smear=float(meta["clv"]["smear"]), scale=float(meta["clv"]["scale"]),
                         info=meta["clv"].get("info", {})),
            horizon_days=int(meta["horizon_days"]),
            clv_horizon_days=int(meta["clv_horizon_days"]),
            metadata=meta.get("metadata", {}),
            policy=meta.get("policy"),
        )


def signature_frame(features: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Columns in their input-schema types: customer_id and categories -> str (None when
    missing), int features -> int64 (never missing: the feature SQL coalesces counts to 0),
    float features -> float64 (NaN when unknown)."""
    out = pd.DataFrame(index=features.index)
    if "customer_id" in features.columns:
        out["customer_id"] = features["customer_id"].astype(object).map(str)
    for feat in spec.features():
        col = features[feat.name]
        if feat.kind == "category":
            out[feat.name] = col.astype(object).where(col.notna(), None)
        elif feat.kind == "int":
            if col.isna().any():
                raise ValueError(f"integer feature {feat.name!r} has missing values")
            out[feat.name] = col.astype("int64")
        else:
            out[feat.name] = col.astype("float64")
    return out


def input_schema(spec: FeatureSpec) -> Any:
    """The pyfunc input schema: customer_id, then every feature (category -> string, int ->
    long, float -> double; missing values allowed for strings and doubles)."""
    from mlflow.types import ColSpec, Schema

    kinds = {"category": "string", "int": "long", "float": "double"}
    return Schema([ColSpec("string", "customer_id"),
                   *(ColSpec(kinds[f.kind], f.name) for f in spec.features())])


class ChurnguardPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    """MLflow pyfunc wrapper of :class:`ScoringBundle` (artifact ``bundle``: its directory)."""

    def __init__(self) -> None:
        self.bundle: ScoringBundle | None = None

    def load_context(self, context):  # type: ignore[no-untyped-def]
        self.bundle = ScoringBundle.load(context.artifacts["bundle"])

    # No type hints: MLflow 3 derives a schema from predict's hints; the signature logged with
    # the model is the schema here.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if self.bundle is None:
            self.load_context(context)
        assert self.bundle is not None
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(
            model_input)
        return self.bundle.score(frame)
