"""The bundle as an MLflow pyfunc, for MLflow's own tools (``mlflow.pyfunc.load_model``,
``mlflow.pyfunc.spark_udf``, ``mlflow models serve``).

churnguard itself never loads this wrapper: its readers take the bundle's plain files from the
registry (:func:`churnguard.model.registry.load_bundle`). Importing this module imports MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from churnguard.features.definitions import FeatureSpec
from churnguard.model.bundle import ScoringBundle
from churnguard.model.score import score_matrix


def predict_frame(bundle: ScoringBundle, features: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's output for feature rows: :func:`score_matrix` without drivers, with the
    recommended actions as the batch job writes them (``actions`` as JSON text)."""
    full = score_matrix(bundle, bundle.encode(features), drivers=False)
    recs = full.assessment.recommendations(full.policy)
    ids = [a.id for a in full.policy.actions]
    out = pd.DataFrame(index=features.index)
    for col in ("customer_id", "as_of"):
        if col in features.columns:
            out[col] = features[col].to_numpy()
    out["churn_probability"] = full.churn_probability
    out["clv"] = full.clv
    nan = np.full(len(out), np.nan)
    out["clv_low"] = nan if full.clv_low is None else full.clv_low
    out["clv_high"] = nan if full.clv_high is None else full.clv_high
    out["p_buy"] = full.p_buy.astype("float64")
    out["expected_spend_if_buy"] = full.expected_spend_if_buy
    out["risk_tier"] = full.assessment.risk_tier
    out["value_tier"] = full.assessment.value_tier
    out["lifecycle_stage"] = full.assessment.lifecycle_stage
    out["recommended_action"] = [ids[j] for j in recs.first().tolist()]
    out["actions"] = recs.json
    return out


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


def input_example(bundle: ScoringBundle, features: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """A few rows in the pyfunc's input schema: customer_id plus the feature columns."""
    cols = ["customer_id", *bundle.feature_names]
    return signature_frame(features[cols].head(n), bundle.spec)


def input_schema(spec: FeatureSpec) -> Any:
    """The pyfunc input schema: customer_id, then every feature (category -> string, int ->
    long, float -> double; missing values allowed for strings and doubles)."""
    from mlflow.types import ColSpec, Schema

    kinds = {"category": "string", "int": "long", "float": "double"}
    return Schema([ColSpec("string", "customer_id"),
                   *(ColSpec(kinds[f.kind], f.name) for f in spec.features())])


def output_schema() -> Any:
    """The pyfunc output schema (:func:`predict_frame`'s columns for an input without
    ``as_of``), declared rather than inferred: inferring it from an example warns about the
    example's integer columns on every training run."""
    from mlflow.types import ColSpec, Schema

    doubles = ("churn_probability", "clv", "clv_low", "clv_high", "p_buy",
               "expected_spend_if_buy")
    strings = ("risk_tier", "value_tier", "lifecycle_stage", "recommended_action", "actions")
    return Schema([ColSpec("string", "customer_id"), *(ColSpec("double", c) for c in doubles),
                   *(ColSpec("string", c) for c in strings)])


def code_path() -> str:
    """The file MLflow logs as the pyfunc's code (:mod:`churnguard.model.pyfunc_code`), found
    without importing it (importing it calls ``mlflow.models.set_model``)."""
    import importlib.util

    spec = importlib.util.find_spec("churnguard.model.pyfunc_code")
    assert spec is not None and spec.origin is not None  # a module of this package
    return spec.origin


def log_pyfunc(bundle_dir: str | Path, *, registered_model_name: str,
               input_example: pd.DataFrame | None = None,
               pip_requirements: list[str] | None = None) -> str:
    """Log a saved bundle directory as the churnguard pyfunc in the active MLflow run and
    register it; the new version. The one way a bundle enters the registry (training, and the
    benchmarks that register one).

    Logged from code (:mod:`churnguard.model.pyfunc_code`, MLflow's "models from code"), not as
    a pickled object, so a version holds no pickle; the signature is declared
    (:func:`input_schema`, :func:`output_schema`), never inferred from an example.
    """
    import mlflow
    from mlflow.models import ModelSignature

    bundle = ScoringBundle.load(Path(bundle_dir))
    info = mlflow.pyfunc.log_model(
        name="model", python_model=code_path(), artifacts={"bundle": str(bundle_dir)},
        signature=ModelSignature(inputs=input_schema(bundle.spec), outputs=output_schema()),
        input_example=input_example, registered_model_name=registered_model_name,
        pip_requirements=pip_requirements or ["churnguard"])
    return str(info.registered_model_version)


class ChurnguardPyfunc(PythonModel):
    """MLflow pyfunc wrapper of :class:`ScoringBundle` (artifact ``bundle``: its directory)."""

    def __init__(self) -> None:
        self.bundle: ScoringBundle | None = None

    def load_context(self, context: Any) -> None:
        self.bundle = ScoringBundle.load(context.artifacts["bundle"])

    # ``model_input: pd.DataFrame``: MLflow 3 warns about a predict without type hints, and
    # infers a schema from hints other than DataFrame/Series/ndarray (which it lists as hints
    # it infers nothing from, mlflow.types.type_hints.type_hints_no_signature_inference), so
    # the signature logged with the model stays the schema and the input is passed as is.
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.bundle is None:
            self.load_context(context)
        assert self.bundle is not None
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(
            model_input)
        return predict_frame(self.bundle, frame)
