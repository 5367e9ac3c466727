"""Feature rows → the numbers the boosters read, with one set of rules for every input form.

The model reads the features of its spec, in spec order: numbers as float64, categories as
codes into the category levels fixed at training time (missing or unseen → NaN). Rows arrive as
a pandas frame (training, the feature snapshot), an Arrow table (the batch job) or dicts (JSON
from the API); :class:`RowEncoder` turns each into the same matrix, and :func:`model_matrix`
is the pandas form the trainer fits XGBoost on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churnguard.features.definitions import FeatureSpec


class FeatureError(ValueError):
    """An inline feature row that cannot be scored; ``field`` names the offending feature."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def missing_columns_error(missing: Sequence[str]) -> ValueError:
    more = " …" if len(missing) > 8 else ""
    return ValueError(f"feature frame is missing {len(missing)} column(s): "
                      f"{', '.join(missing[:8])}{more}")


def category_column(col: pd.Series, levels: list[str]) -> pd.Categorical:
    """A category feature with fixed levels: values compared as ``str(v)``; missing or unseen
    values become missing."""
    values = col.astype("object").where(col.notna(), None)
    values = values.map(lambda v: None if v is None else str(v))
    # Unseen values are made missing here: pandas deprecates doing it in the constructor.
    return pd.Categorical(values.where(values.isin(levels), None), categories=levels)


def model_matrix(
    frame: pd.DataFrame, spec: FeatureSpec, levels: dict[str, list[str]]
) -> pd.DataFrame:
    """The model's input columns, in spec order: numbers as float64, categoricals as
    ``pd.Categorical`` with the fixed ``levels`` (unseen values become missing).

    Raises ``ValueError`` naming the missing feature columns.
    """
    names = spec.feature_names()
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise missing_columns_error(missing)
    out: dict[str, object] = {}
    for feat in spec.features():
        col = frame[feat.name]
        if feat.kind == "category":
            out[feat.name] = category_column(col, levels.get(feat.name, []))
        else:
            try:
                out[feat.name] = pd.to_numeric(col, errors="raise").astype("float64").to_numpy()
            except (TypeError, ValueError) as exc:
                raise ValueError(f"feature {feat.name!r} must be numeric: {exc}") from None
    return pd.DataFrame(out, index=frame.index)


class RowEncoder:
    """Feature rows → the float64 matrix the boosters read (columns in spec order, categories
    as level codes, missing or unseen as NaN), from a pandas frame, an Arrow table or dicts,
    with the rules of :func:`model_matrix` and a clear error for anything it cannot read."""

    #: Keys of a feature row that are not features and are ignored.
    PASSTHROUGH = frozenset({"customer_id", "as_of"})

    def __init__(self, spec: FeatureSpec, levels: dict[str, list[str]]) -> None:
        feats = spec.features()
        self.spec = spec
        self.names = [f.name for f in feats]
        self.kinds = [f.kind for f in feats]
        #: XGBoost feature types: "c" (categorical, read as level codes) or "q" (numeric).
        self.types = ["c" if f.kind == "category" else "q" for f in feats]
        self.index = {name: j for j, name in enumerate(self.names)}
        self.codes = {f.name: {lv: float(i) for i, lv in enumerate(levels.get(f.name, []))}
                      for f in feats if f.kind == "category"}
        self.levels = {name: list(levels.get(name, [])) for name in self.codes}
        self.dtypes = {name: pd.CategoricalDtype(lv) for name, lv in self.levels.items()}
        self.descriptions = spec.descriptions()

    # -- the three input forms ------------------------------------------------------------

    def encode_frame(self, features: pd.DataFrame) -> np.ndarray:
        """A pandas frame of feature rows (extra columns ignored); raises ``ValueError`` naming
        missing or non-numeric feature columns."""
        X = model_matrix(features, self.spec, self.levels)
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

    def encode_arrow(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """:meth:`encode_frame` of an Arrow table without going through pandas (the batch job
        reads Arrow): numbers cast to float64 (null → NaN), string or integer categories looked
        up in the fixed levels (null or unseen → NaN). The same numbers as
        :meth:`encode_frame`."""
        missing = [n for n in self.names if n not in table.schema.names]
        if missing:
            raise missing_columns_error(missing)
        out = np.empty((table.num_rows, len(self.names)), dtype=np.float64)
        for j, name in enumerate(self.names):
            col = table.column(name)
            if self.kinds[j] == "category":
                typ = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
                if (pa.types.is_string(typ) or pa.types.is_large_string(typ)
                        or pa.types.is_integer(typ)):  # str(v) as Arrow casts it
                    codes = pc.index_in(pc.cast(col, pa.string()),
                                        value_set=pa.array(self.levels[name], pa.string()))
                    out[:, j] = pc.fill_null(pc.cast(codes, pa.float64()), np.nan).to_numpy(
                        zero_copy_only=False)
                else:  # floats, booleans, …: model_matrix's own str(v) rule
                    cat = category_column(col.to_pandas(), self.levels[name])
                    codes_f = cat.codes.astype(np.float64)
                    codes_f[codes_f < 0] = np.nan
                    out[:, j] = codes_f
            else:
                if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                        or pa.types.is_boolean(col.type) or pa.types.is_decimal(col.type)
                        or pa.types.is_null(col.type)):
                    raise ValueError(f"feature {name!r} must be numeric, got {col.type}")
                out[:, j] = pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(
                    zero_copy_only=False)
        return out

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows as dicts (JSON); raises :class:`FeatureError` (row-local: use ``field``) for a
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

    # -- back out of the matrix -----------------------------------------------------------

    def frame(self, X: np.ndarray) -> pd.DataFrame:
        """The model matrix (:func:`model_matrix`'s frame) of an encoded matrix."""
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
