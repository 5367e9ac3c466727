"""Feature rows → the numbers the boosters read, with one set of rules for every input form.

The model reads the features of its spec, in spec order: numbers as float64, categories as
codes into the category levels fixed at training time (missing or unseen → NaN). Rows arrive as
a pandas frame (training, the feature snapshot), an Arrow table (the batch job) or dicts (JSON
from the API); :class:`RowEncoder` turns each into the same matrix, and :func:`model_matrix`
is the pandas form the trainer fits XGBoost on.
"""

from __future__ import annotations

import json
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


#: The largest finite float32: the boosters read 32-bit floats, so an inline number beyond it
#: would reach them as infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The largest count: the largest integer every JSON client reads exactly (2**53 − 1).
COUNT_MAX = 2**53 - 1


def _type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool | np.bool_):
        return "a boolean"
    return "a string" if isinstance(v, str) else type(v).__name__


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float | np.integer | np.floating)
            and not isinstance(v, bool | np.bool_))


def _show(v: Any) -> str:
    """A number for a message, without echoing a 400-digit literal."""
    if isinstance(v, int | np.integer) and abs(int(v)) < 10 ** 15:
        return str(int(v))
    try:
        return f"{float(v):.7g}"
    except OverflowError:
        return "an integer beyond 1e308"


def _category_text(v: str | int | np.integer) -> str:
    """A category value as the levels hold it: ``str(v)`` (an integer's decimal string)."""
    if isinstance(v, str):
        return v
    try:
        return str(int(v))
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        return "<an integer of more than 4300 digits>"


def _number(name: str, kind: str, v: Any) -> float:
    """A feature's number under its kind's rules (:meth:`RowEncoder.encode_records`)."""
    try:
        f = float(v)
    except OverflowError:  # an integer literal beyond float64
        f = math.inf
    if not math.isfinite(f) or abs(f) > FLOAT32_MAX:
        raise FeatureError(name, f"feature {name!r} must be a finite number of magnitude at "
                           f"most {FLOAT32_MAX:.7g} (the model reads 32-bit floats), got "
                           f"{_show(v)}")
    if kind == "int" and not (f.is_integer() and 0 <= f <= COUNT_MAX):
        raise FeatureError(name, f"feature {name!r} is a count: it must be an integer from 0 "
                           f"to {COUNT_MAX}, got {_show(v)}")
    return f


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

    def encode_records(self, records: Sequence[Mapping[str, Any]], *,
                       unseen: list[list[tuple[str, str]]] | None = None) -> np.ndarray:
        """Rows as dicts (JSON); raises :class:`FeatureError` (row-local: use ``field``) for a
        missing or unknown feature, or a value outside its feature's rules
        (:meth:`row_schema`): a count (``int`` kind) is an integer from 0 to 2**53 − 1, a
        ``float`` a number within float32's range (the boosters read 32-bit floats) or null; a
        category a string, an integer (read as its decimal string, like the batch job reads an
        integer column) or null. A category value outside the levels fixed at training is
        scored as missing, as in every other input form; with ``unseen``, one list per record
        is appended to it: the ``(feature, value as a string)`` pairs of such values."""
        out = np.empty((len(records), len(self.names)), dtype=np.float64)
        for i, rec in enumerate(records):
            seen = self._encode_one(rec, out[i])
            if unseen is not None:
                unseen.append(seen)
        return out

    def _encode_one(self, rec: Mapping[str, Any], row: np.ndarray) -> list[tuple[str, str]]:
        if len(rec) < len(self.names) or any(k not in self.index for k in rec):
            unknown = sorted(str(k) for k in rec
                             if k not in self.index and k not in self.PASSTHROUGH)
            if unknown:
                raise FeatureError(unknown[0], f"unknown feature(s): {', '.join(unknown[:8])}")
            missing = [n for n in self.names if n not in rec]
            if missing:
                more = " …" if len(missing) > 8 else ""
                raise FeatureError(None, f"missing {len(missing)} feature(s): "
                                   f"{', '.join(missing[:8])}{more}")
        unseen: list[tuple[str, str]] = []
        for j, name in enumerate(self.names):
            v = rec[name]
            kind = self.kinds[j]
            if type(v) is float and kind != "category":
                # JSON numbers arrive as float or int: their rules inline (what _number checks),
                # the other cases below; a request's row is 50-odd of these.
                if -FLOAT32_MAX <= v <= FLOAT32_MAX and (
                        kind != "int" or (v.is_integer() and 0 <= v <= COUNT_MAX)):
                    row[j] = v
                    continue
            elif (type(v) is int and kind != "category"
                  and (0 if kind == "int" else -COUNT_MAX) <= v <= COUNT_MAX):
                row[j] = v
                continue
            if kind == "category":
                if v is None:
                    row[j] = np.nan
                elif isinstance(v, str | int | np.integer) and not isinstance(v, bool):
                    text = _category_text(v)
                    code = self.codes[name].get(text)
                    if code is None:
                        unseen.append((name, text))
                        row[j] = np.nan
                    else:
                        row[j] = code
                else:
                    raise FeatureError(name, f"category feature {name!r} must be a string, "
                                       f"an integer or null, got {_type(v)}")
            elif v is None and kind == "float":
                row[j] = np.nan
            elif _is_number(v):
                row[j] = _number(name, kind, v)
            else:
                what = "a count: an integer >= 0" if kind == "int" else "a number or null"
                raise FeatureError(name, f"feature {name!r} must be {what}, got {_type(v)}")
        return unseen

    def row_schema(self) -> dict[str, Any]:
        """JSON Schema of one inline feature row under the rules of :meth:`encode_records`
        (the API documents it in its OpenAPI schema): every feature required, no other keys
        but the ignored ``customer_id`` and ``as_of``."""
        props: dict[str, Any] = {}
        for name, kind in zip(self.names, self.kinds, strict=True):
            desc = self.descriptions.get(name, "")
            if kind == "int":
                props[name] = {"type": "integer", "minimum": 0, "maximum": COUNT_MAX,
                               "description": f"{desc} A count: an integer >= 0."}
            elif kind == "float":
                props[name] = {"anyOf": [{"type": "number", "minimum": -FLOAT32_MAX,
                                          "maximum": FLOAT32_MAX}, {"type": "null"}],
                               "description": f"{desc} A finite number; null = unknown."}
            else:
                levels = self.levels[name]
                shown = ", ".join(levels[:20]) + (" …" if len(levels) > 20 else "")
                props[name] = {
                    "anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}],
                    "description": f"{desc} A category: a string, or an integer read as its "
                    "decimal string; null = unknown. Values seen in training: "
                    f"{shown or 'none'}; any other value scores as missing, with a warning.",
                    **({"examples": levels[:3]} if levels else {})}
        for name in sorted(self.PASSTHROUGH):
            props[name] = {"type": ["string", "number", "boolean", "null"],
                           "description": "Not a feature: accepted and ignored."}
        return {"type": "object", "properties": props, "required": list(self.names),
                "additionalProperties": False}

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

    def display_json(self, X: np.ndarray, rows: np.ndarray,
                     cols: np.ndarray) -> tuple[pa.Array, np.ndarray]:
        """:meth:`display` of the elements ``X[rows, cols]`` as ``json.dumps`` writes each
        (``null`` for None), and which are None: a kind at a time, each float value
        formatted once however many rows hold it."""
        v = X[rows, cols]
        out = np.full(len(v), "null", dtype=object)
        null = np.isnan(v)
        kinds = np.asarray([k if k in ("category", "int") else "float" for k in self.kinds],
                           dtype=object)[cols]
        for kind in ("category", "int", "float"):
            at = np.flatnonzero((kinds == kind) & ~null)
            if not len(at):
                continue
            if kind == "category":
                for j in np.unique(cols[at]).tolist():
                    here = at[cols[at] == j]
                    lv = self.levels[self.names[j]]
                    code = v[here].astype(np.int64)
                    inside = (code >= 0) & (code < len(lv))
                    texts = np.asarray([json.dumps(x) for x in lv] + ["null"], dtype=object)
                    out[here] = texts[np.where(inside, code, len(lv))]
                    null[here[~inside]] = True
            else:
                values, where = np.unique(v[at], return_inverse=True)
                write = ((lambda x: str(int(x))) if kind == "int"
                         else (lambda x: json.dumps(float(f"{x:.10g}"))))
                out[at] = np.asarray([write(x) for x in values.tolist()],
                                     dtype=object)[where.reshape(-1)]
        return pa.array(out, pa.string()), null

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
