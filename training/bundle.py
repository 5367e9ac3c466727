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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb

from churnguard.features.definitions import FeatureSpec
from churnguard.training.data import category_column, model_matrix
from churnguard.training.models import Calibrator, ChurnModel, ClvModel
from churnguard.training.policy import Assessment, Policy, assess, load_catalog, top_drivers

BUNDLE_FORMAT = 1
OUTPUT_COLUMNS = ("churn_probability", "clv", "p_buy", "expected_spend_if_buy")
#: Rows on which the fast scoring path is checked against the models' own methods, once.
FAST_CHECK_ROWS = 512


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
    _policy: Policy | None = field(default=None, init=False, repr=False, compare=False)
    _encoder: RowEncoder | None = field(default=None, init=False, repr=False, compare=False)
    _fast_ok: bool | None = field(default=None, init=False, repr=False, compare=False)

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
        for key, value in self._core(X).items():
            out[key] = value
        return out

    def _core(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """churn_probability, clv, p_buy, expected_spend_if_buy of a model matrix: the models'
        own predict methods, shared by :meth:`score` and :meth:`score_matrix`."""
        p_buy, spend = self.clv.components(X)
        return {"churn_probability": self.churn.predict(X),
                "clv": np.maximum(self.clv.scale * p_buy * spend, 0.0),
                "p_buy": p_buy, "expected_spend_if_buy": spend * self.clv.scale}

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions to the churn model's raw log-odds (XGBoost
        ``pred_contribs``, i.e. TreeSHAP values; Lundberg et al. 2020, Nature MI 2(1)) plus a
        ``bias`` column; each row sums to the raw (uncalibrated) log-odds."""
        X = self.matrix(features)
        contribs = self.churn.booster.predict(xgb.DMatrix(X, enable_categorical=True),
                                              pred_contribs=True)
        return pd.DataFrame(np.asarray(contribs), index=features.index,
                            columns=[*X.columns, "bias"])

    # -- the full score: churn, CLV, tiers, stage, drivers, actions ----------------------

    def policy_obj(self) -> Policy:
        """The bundle's action policy (the default catalog, without value tiers, if none)."""
        if self._policy is None:
            self._policy = (Policy.from_dict(self.policy, source="bundle policy")
                            if self.policy else load_catalog())
        return self._policy

    def encoder(self) -> RowEncoder:
        if self._encoder is None:
            self._encoder = RowEncoder(self.spec, self.levels)
        return self._encoder

    def encode(self, features: pd.DataFrame) -> np.ndarray:
        """Feature rows as a float64 matrix in spec order (categories as level codes,
        missing/unseen as NaN): exactly the model matrix :meth:`score` builds, as numbers."""
        X = self.matrix(features)
        out = np.empty(X.shape, dtype=np.float64)
        for j, col in enumerate(X.columns):
            s = X[col]
            if isinstance(s.dtype, pd.CategoricalDtype):
                codes = s.cat.codes.to_numpy().astype(np.float64)
                codes[codes < 0] = np.nan
                out[:, j] = codes
            else:
                out[:, j] = s.to_numpy(dtype=np.float64)
        return out

    def set_threads(self, n: int) -> ScoringBundle:
        """XGBoost threads per prediction for every booster (1 where parallelism comes from
        elsewhere: API workers, Spark tasks)."""
        for booster in (self.churn.booster, self.clv.buy, self.clv.spend):
            booster.set_param({"nthread": n})
        return self

    def encode_arrow(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """:meth:`encode` of an Arrow table without going through pandas (the batch job reads
        Arrow): numbers cast to float64 (null → NaN), string or integer categories looked up in
        the fixed levels (null or unseen → NaN). The same numbers as :meth:`encode`."""
        enc = self.encoder()
        missing = [n for n in enc.names if n not in table.schema.names]
        if missing:
            raise ValueError(f"feature frame is missing {len(missing)} column(s): "
                             f"{', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
        out = np.empty((table.num_rows, len(enc.names)), dtype=np.float64)
        for j, name in enumerate(enc.names):
            col = table.column(name)
            if enc.kinds[j] == "category":
                typ = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
                if (pa.types.is_string(typ) or pa.types.is_large_string(typ)
                        or pa.types.is_integer(typ)):  # str(v) as Arrow casts it
                    codes = pc.index_in(pc.cast(col, pa.string()),
                                        value_set=pa.array(enc.levels[name], pa.string()))
                    out[:, j] = pc.fill_null(pc.cast(codes, pa.float64()), np.nan).to_numpy(
                        zero_copy_only=False)
                else:  # floats, booleans, …: model_matrix's own str(v) rule
                    codes = category_column(table.column(name).to_pandas(),
                                            enc.levels[name]).codes.astype(np.float64)
                    codes[codes < 0] = np.nan
                    out[:, j] = codes
            else:
                if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                        or pa.types.is_boolean(col.type) or pa.types.is_decimal(col.type)
                        or pa.types.is_null(col.type)):
                    raise ValueError(f"feature {name!r} must be numeric, got {col.type}")
                out[:, j] = pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(
                    zero_copy_only=False)
        return out

    def score_matrix(self, X: np.ndarray, *, drivers: bool = True) -> FullScores:
        """Everything a score needs, from an encoded matrix (:meth:`encode`,
        :meth:`RowEncoder.encode_records`): probabilities and CLV exactly as :meth:`score`
        computes them (the same model matrix through the same model methods), plus risk and
        value tier, lifecycle stage, top drivers and recommended actions from the policy."""
        enc = self.encoder()
        core = self._core_checked(X)
        p, clv = core["churn_probability"], core["clv"]
        frame: dict[str, np.ndarray] = {name: X[:, j] for j, name in enumerate(enc.names)}
        frame["churn_probability"] = p
        frame["clv"] = clv
        policy = self.policy_obj()
        top: list[list[dict[str, Any]]] | None = None
        if drivers:
            # One thread: building a small DMatrix with an OpenMP team costs milliseconds.
            # The columns are the encoder's, i.e. the booster's own order (as in _core_fast's
            # inplace_predict), so the per-call feature-name checks (a Python loop over every
            # name, both when building the DMatrix and in predict) are skipped; the types stay
            # so that categorical splits read level codes. Same TreeSHAP values.
            d = xgb.DMatrix(self._masked(X), feature_types=enc.types, enable_categorical=True,
                            nthread=1 if len(X) < 1024 else None)
            contribs = np.asarray(self.churn.booster.predict(
                d, pred_contribs=True, validate_features=False))[:, :-1]
            top = top_drivers(contribs, enc.names, _LazyValues(enc, X), enc.descriptions,
                              policy.top_drivers)
        return FullScores(churn_probability=p, clv=clv, p_buy=core["p_buy"],
                          expected_spend_if_buy=core["expected_spend_if_buy"],
                          assessment=assess(frame, policy), drivers=top, frame=frame,
                          policy=policy)

    def _masked(self, X: np.ndarray) -> np.ndarray:
        masked = [self.encoder().index[c] for c in self.churn.info.get("masked", [])
                  if c in self.encoder().index]
        if not masked:
            return X
        X = X.copy()
        X[:, masked] = np.nan
        return X

    def _core_fast(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`_core` on the encoded matrix without building pandas frames: the same model
        steps (prior base margins, masked columns, calibration) with XGBoost ``inplace_predict``,
        which reads the same float32 numbers as a DMatrix."""
        names = self.encoder().names
        cm = self.churn.margin(X, names)
        clv_m = self.clv.margins(X, names)
        Xc = self._masked(X)
        mask_clv = [self.encoder().index[c] for c in self.clv.info.get("masked", [])
                    if c in self.encoder().index]
        Xv = X
        if mask_clv:
            Xv = X.copy()
            Xv[:, mask_clv] = np.nan
        raw = np.asarray(self.churn.booster.inplace_predict(Xc, base_margin=cm))
        p = self.churn.calibrator.predict(raw) if self.churn.calibrator else np.clip(
            np.asarray(raw, dtype=float), 1e-6, 1 - 1e-6)
        p_buy = np.clip(np.asarray(self.clv.buy.inplace_predict(
            Xv, base_margin=None if clv_m is None else clv_m[0])), 0.0, 1.0)
        spend = np.exp(np.asarray(self.clv.spend.inplace_predict(
            Xv, base_margin=None if clv_m is None else clv_m[1]), dtype=float)) * self.clv.smear
        return {"churn_probability": p, "clv": np.maximum(self.clv.scale * p_buy * spend, 0.0),
                "p_buy": p_buy, "expected_spend_if_buy": spend * self.clv.scale}

    def _core_checked(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The fast path once it has been shown to equal :meth:`_core` bit for bit on this
        bundle (checked on the first :data:`FAST_CHECK_ROWS` rows scored); otherwise the
        models' own methods."""
        if self._fast_ok is None:
            head = X[:FAST_CHECK_ROWS]
            slow = self._core(self.encoder().frame(head))
            try:
                fast = self._core_fast(head)
                ok = all(np.array_equal(slow[k], fast[k], equal_nan=True) for k in slow)
            except Exception:  # a model step the fast path does not know
                ok = False
            self._fast_ok = ok
            if len(X) == len(head):
                return slow
        if self._fast_ok:
            return self._core_fast(X)
        return self._core(self.encoder().frame(X))

    def score_full(self, features: pd.DataFrame, *, drivers: bool = True) -> pd.DataFrame:
        """:meth:`score` plus risk_tier, value_tier, lifecycle_stage, drivers and actions
        (lists of dicts) per row: the one path the API, the batch job and Spark share."""
        full = self.score_matrix(self.encode(features), drivers=drivers)
        out = pd.DataFrame(index=features.index)
        for col in ("customer_id", "as_of"):
            if col in features.columns:
                out[col] = features[col].to_numpy()
        for key, value in full.row_columns().items():
            out[key] = value
        return out

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


class FeatureError(ValueError):
    """An inline feature row that cannot be scored; ``field`` names the offending feature."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class RowEncoder:
    """Feature rows (dicts, e.g. JSON) → the float32 matrix of :meth:`ScoringBundle.encode`,
    with the same rules as ``model_matrix`` and a clear error for anything it cannot read."""

    #: Keys of a feature row that are not features and are ignored.
    PASSTHROUGH = frozenset({"customer_id", "as_of"})

    def __init__(self, spec: FeatureSpec, levels: dict[str, list[str]]) -> None:
        feats = spec.features()
        self.names = [f.name for f in feats]
        self.kinds = [f.kind for f in feats]
        self.types = ["c" if f.kind == "category" else "q" for f in feats]
        self.index = {name: j for j, name in enumerate(self.names)}
        self.codes = {f.name: {lv: float(i) for i, lv in enumerate(levels.get(f.name, []))}
                      for f in feats if f.kind == "category"}
        self.levels = {name: list(levels.get(name, [])) for name in self.codes}
        self.dtypes = {name: pd.CategoricalDtype(lv) for name, lv in self.levels.items()}
        self.descriptions = spec.descriptions()

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows as a matrix; raises :class:`FeatureError` (row-local: use ``field``) for a
        missing or unknown feature, or a value of the wrong type."""
        out = np.empty((len(records), len(self.names)), dtype=np.float64)
        for i, rec in enumerate(records):
            self._encode_one(rec, out[i])
        return out

    def _encode_one(self, rec: Mapping[str, Any], row: np.ndarray) -> None:
        if len(rec) < len(self.names) or any(k not in self.index for k in rec):
            unknown = sorted(k for k in rec if k not in self.index and k not in self.PASSTHROUGH)
            if unknown:
                raise FeatureError(unknown[0], f"unknown feature(s): {', '.join(unknown[:8])}")
            missing = [n for n in self.names if n not in rec]
            if missing:
                more = " …" if len(missing) > 8 else ""
                raise FeatureError(None, f"missing {len(missing)} feature(s): "
                                   f"{', '.join(missing[:8])}{more}")
        for j, name in enumerate(self.names):
            v = rec[name]
            kind = self.kinds[j]
            if kind == "category":
                if v is None:
                    row[j] = np.nan
                elif isinstance(v, str | int) and not isinstance(v, bool):
                    row[j] = self.codes[name].get(str(v), np.nan)
                else:
                    raise FeatureError(name, f"category feature {name!r} must be a string or "
                                       f"null, got {type(v).__name__}")
            elif isinstance(v, int | float) and not isinstance(v, bool):
                f = float(v)
                if not math.isfinite(f):
                    raise FeatureError(name, f"feature {name!r} must be finite, got {v!r}")
                if kind == "int" and not f.is_integer():
                    raise FeatureError(name, f"integer feature {name!r} got {v!r}")
                row[j] = f
            elif v is None and kind == "float":
                row[j] = np.nan
            else:
                what = "an integer" if kind == "int" else "a number or null"
                raise FeatureError(name, f"feature {name!r} must be {what}, "
                                   f"got {type(v).__name__}")

    def frame(self, X: np.ndarray) -> pd.DataFrame:
        """The model matrix (``model_matrix``'s frame) of an encoded matrix."""
        cols: dict[str, Any] = {}
        for j, name in enumerate(self.names):
            if self.kinds[j] == "category":
                codes = np.nan_to_num(X[:, j], nan=-1.0).astype(np.int64)
                cols[name] = pd.Categorical.from_codes(codes, dtype=self.dtypes[name])
            else:
                cols[name] = X[:, j]
        return pd.DataFrame(cols)

    def display(self, X: np.ndarray, i: int, j: int) -> Any:
        """The value of feature ``j`` of row ``i`` as a CRM user reads it."""
        v = float(X[i, j])
        if math.isnan(v):
            return None
        kind = self.kinds[j]
        if kind == "category":
            lv = self.levels[self.names[j]]
            return lv[int(v)] if 0 <= int(v) < len(lv) else None
        if kind == "int":
            return int(v)
        return float(f"{v:.10g}")


class _LazyValues:
    """``values[i][j]`` for :func:`top_drivers` without decoding every feature of every row."""

    def __init__(self, enc: RowEncoder, X: np.ndarray) -> None:
        self.enc, self.X = enc, X

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, i: int) -> _LazyRow:
        return _LazyRow(self.enc, self.X, i)


class _LazyRow:
    def __init__(self, enc: RowEncoder, X: np.ndarray, i: int) -> None:
        self.enc, self.X, self.i = enc, X, i

    def __len__(self) -> int:
        return self.X.shape[1]

    def __getitem__(self, j: int) -> Any:
        return self.enc.display(self.X, self.i, j)


@dataclass
class FullScores:
    """The output of :meth:`ScoringBundle.score_matrix`, aligned with the input rows."""

    churn_probability: np.ndarray
    clv: np.ndarray
    p_buy: np.ndarray
    expected_spend_if_buy: np.ndarray
    assessment: Assessment
    drivers: list[list[dict[str, Any]]] | None
    frame: dict[str, np.ndarray]
    policy: Policy

    def __len__(self) -> int:
        return len(self.churn_probability)

    def actions(self, i: int) -> list[dict[str, Any]]:
        return self.assessment.actions(self.frame, self.policy, i)

    def row(self, i: int) -> dict[str, Any]:
        """Score fields of row ``i`` (without id, model version and time)."""
        a = self.assessment
        return {"churn_probability": float(self.churn_probability[i]),
                "risk_tier": a.risk_tier[i], "clv": float(self.clv[i]),
                "value_tier": a.value_tier[i], "lifecycle_stage": a.lifecycle_stage[i],
                "drivers": self.drivers[i] if self.drivers is not None else [],
                "actions": self.actions(i)}

    def row_columns(self) -> dict[str, Any]:
        n = len(self)
        a = self.assessment
        return {"churn_probability": self.churn_probability, "clv": self.clv,
                "p_buy": self.p_buy, "expected_spend_if_buy": self.expected_spend_if_buy,
                "risk_tier": a.risk_tier, "value_tier": a.value_tier,
                "lifecycle_stage": a.lifecycle_stage,
                "drivers": self.drivers if self.drivers is not None else [[] for _ in range(n)],
                "actions": [self.actions(i) for i in range(n)]}


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
