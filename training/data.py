"""Training data: the out-of-time split plan, the snapshot grid per target, model matrices.

Every cutoff of the plan has its label window inside the data that is known at ``as_of``:
``cutoff + label_days <= as_of`` (windows are ``[cutoff, cutoff + label_days)``). The split is
*purged* (López de Prado 2018, "Advances in Financial Machine Learning", ch. 7): the label
windows of the training cutoffs end on or before the validation cutoff, and those of the
validation cutoff on or before the test cutoff, so no label of an earlier split overlaps the
period a later split is judged on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from churnguard.features.build import SnapshotBuilder, monthly_cutoffs
from churnguard.features.definitions import FeatureSpec
from churnguard.features.sources import Source

ID_COLUMNS = ("customer_id", "as_of")
LABEL_COLUMNS = ("churned", "future_spend", "future_orders")
#: A customer needs this much data history before the first training cutoff.
DEFAULT_MIN_HISTORY_DAYS = 90


class PlanError(ValueError):
    """The data is too short for a purged out-of-time split with the requested horizons."""


@dataclass(frozen=True)
class SplitPlan:
    """Cutoffs of one target: train (oldest first), one validation and one test cutoff."""

    label_days: int
    train: tuple[date, ...]
    valid: date
    test: date
    #: False for the overlapping-window fallback of :func:`plan_split` (``purge=False``).
    purged: bool = True

    @property
    def all(self) -> tuple[date, ...]:
        return (*self.train, self.valid, self.test)

    def to_dict(self) -> dict[str, object]:
        return {
            "label_days": self.label_days,
            "train": [d.isoformat() for d in self.train],
            "valid": self.valid.isoformat(),
            "test": self.test.isoformat(),
            "purged": self.purged,
        }


def _latest_month_start(on_or_before: date) -> date:
    return date(on_or_before.year, on_or_before.month, 1)


def plan_split(
    first_day: date,
    as_of: date,
    label_days: int,
    *,
    min_history_days: int = DEFAULT_MIN_HISTORY_DAYS,
    max_train_cutoffs: int = 24,
    min_train_cutoffs: int = 1,
    step_months: int = 1,
    purge: bool = True,
) -> SplitPlan:
    """Purged out-of-time cutoffs for a label window of ``label_days``.

    test  = the latest month start whose window ends on or before ``as_of``;
    valid = the latest month start whose window ends on or before ``test``;
    train = month starts (every ``step_months``) whose window ends on or before ``valid``,
    at least ``min_history_days`` after ``first_day``, the latest ``max_train_cutoffs`` of them.
    Raises :class:`PlanError` when fewer than ``min_train_cutoffs`` training cutoffs fit.

    ``purge=False`` is the fallback for data too short for purging (three disjoint label
    windows): the cutoffs are still strictly ordered in time (train < valid < test, one step
    apart, every label window inside the data known at ``as_of``), but consecutive label
    windows overlap, so validation and test scores are somewhat optimistic.
    """
    if label_days < 1:
        raise ValueError(f"label_days must be >= 1, got {label_days}")
    if as_of <= first_day:
        raise PlanError(f"as-of {as_of} is not after the first day of the data ({first_day})")
    window = timedelta(days=label_days)
    test = _latest_month_start(as_of - window)
    if purge:
        valid = _latest_month_start(test - window)
        last_train = valid - window
    else:
        valid = _months_before(test, step_months)
        last_train = _months_before(valid, step_months)
    earliest = first_day + timedelta(days=min_history_days)
    train = [c for c in monthly_cutoffs(earliest, last_train, step_months) if c >= earliest]
    train = train[-max_train_cutoffs:] if max_train_cutoffs > 0 else train
    if len(train) < min_train_cutoffs:
        span = (as_of - first_day).days
        raise PlanError(
            f"not enough history for a{' purged' if purge else 'n'} out-of-time split with a "
            f"{label_days}-day label "
            f"window: the data spans {span} days ({first_day} to {as_of}), which leaves "
            f"{len(train)} training cutoff(s) (need {min_train_cutoffs}); test cutoff {test}, "
            f"validation cutoff {valid}, training cutoffs must be on/before {last_train} and "
            f"on/after {earliest}. Use a shorter horizon or more data."
        )
    return SplitPlan(label_days=label_days, train=tuple(train), valid=valid, test=test,
                     purged=purge)


def _months_before(day: date, months: int) -> date:
    """The month start ``months`` months before the month of ``day``."""
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def longest_feasible_window(
    first_day: date, as_of: date, *, min_history_days: int = DEFAULT_MIN_HISTORY_DAYS,
    min_train_cutoffs: int = 1, step_days: int = 30,
) -> int | None:
    """The longest multiple of ``step_days`` for which :func:`plan_split` succeeds, if any."""
    best = None
    days = step_days
    while days * 3 < (as_of - first_day).days:
        try:
            plan_split(first_day, as_of, days, min_history_days=min_history_days,
                       min_train_cutoffs=min_train_cutoffs)
        except PlanError:
            break
        best = days
        days += step_days
    return best


def data_window(source: Source) -> tuple[date, date]:
    """First day of the data and the default as-of (the day after the last row)."""
    row = source.con.execute(
        "SELECT least((SELECT min(ts) FROM transactions), (SELECT min(ts) FROM events)), "
        "greatest((SELECT max(ts) FROM transactions), (SELECT max(ts) FROM events))"
    ).fetchall()[0]
    if not row or row[0] is None or row[1] is None:
        raise PlanError("the source has no transactions or events to train on")
    first, last = row
    return _as_date(first), _as_date(last) + timedelta(days=1)


def _as_date(value: object) -> date:
    if isinstance(value, pd.Timestamp):
        return value.date()
    if hasattr(value, "date") and callable(value.date):
        return value.date()
    assert isinstance(value, date)
    return value


def build_training_grid(
    source: Source,
    spec: FeatureSpec,
    *,
    as_of: date,
    churn_cutoffs: Sequence[date],
    horizon_days: int,
    clv_cutoffs: Sequence[date],
    clv_horizon_days: int,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Features and labels for the union of both targets' cutoffs, as one pandas frame.

    A label is only computed where its whole window ends on or before ``as_of``: ``churned`` for
    the churn cutoffs, ``future_spend`` for the CLV cutoffs; elsewhere it is missing (NA), so no
    row after ``as_of`` is ever read.
    """
    cutoffs = sorted(set(churn_cutoffs) | set(clv_cutoffs))
    frames = []
    # One builder for all cutoffs: it reads the files once and never a row from as_of on.
    builder = SnapshotBuilder(source, spec, as_of, cutoffs)
    for i, cutoff in enumerate(cutoffs):
        churn_ok = cutoff in churn_cutoffs
        clv_ok = cutoff in clv_cutoffs
        h = horizon_days if churn_ok else 1
        c = clv_horizon_days if clv_ok else 1
        for days in (h, c):
            if cutoff + timedelta(days=days) > as_of:
                raise PlanError(f"the label window of cutoff {cutoff} ({days} days) ends after "
                                f"the as-of date {as_of}")
        table = builder.snapshot(cutoff, h, c)
        df = table.to_pandas()
        df["churned"] = df["churned"].astype("float64") if churn_ok else np.nan
        df["future_spend"] = df["future_spend"].astype("float64") if clv_ok else np.nan
        df["future_orders"] = df["future_orders"].astype("float64") if clv_ok else np.nan
        frames.append(df)
        if progress:
            progress(i + 1, len(cutoffs))
    grid = pd.concat(frames, ignore_index=True)
    grid["as_of"] = pd.to_datetime(grid["as_of"]).dt.date
    return grid


def category_levels(spec: FeatureSpec, frame: pd.DataFrame | None = None) -> dict[str, list[str]]:
    """Fixed category levels per categorical feature: the spec's, else those seen in ``frame``."""
    levels: dict[str, list[str]] = {}
    for feat in spec.features():
        if feat.kind != "category":
            continue
        if feat.name in spec.attribute_categories:
            levels[feat.name] = list(spec.attribute_categories[feat.name])
        elif frame is not None and feat.name in frame:
            levels[feat.name] = sorted(str(v) for v in frame[feat.name].dropna().unique())
        else:
            levels[feat.name] = []
    return levels


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
        raise ValueError(f"feature frame is missing {len(missing)} column(s): "
                         f"{', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
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


def data_fingerprint(source: Source, as_of: date) -> dict[str, object]:
    """Row counts, min/max timestamps and a cheap content hash of each table, rows before as-of.

    The content hash is the XOR of DuckDB's per-row hashes of the contract columns: independent
    of row order, cheap (one scan), and changed by any edited, added or removed row.
    """
    parts: dict[str, object] = {}
    cutoff = f"DATE '{as_of.isoformat()}'"
    for table in sorted(source.tables):
        cols = list(source.columns.get(table, ()))
        if not cols:
            continue
        row_hash = "hash(" + ", ".join(f'"{c}"' for c in cols) + ")"
        ts_col = {"customers": "signup_date", "subscriptions": "start_date"}.get(table, "ts")
        where = f'WHERE "{ts_col}" < {cutoff}' if ts_col in cols else ""
        tmin_max = (f'min("{ts_col}"), max("{ts_col}")' if ts_col in cols
                    else "NULL, NULL")
        row = source.con.execute(
            f"SELECT count(*), {tmin_max}, bit_xor({row_hash}) FROM {table} {where}"
        ).fetchall()[0]
        assert row is not None
        parts[table] = {"rows": int(row[0]), "min": str(row[1]), "max": str(row[2]),
                        "hash": f"{int(row[3] or 0):016x}"}
    digest = hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()[:16]
    return {"fingerprint": digest, "tables": parts}
