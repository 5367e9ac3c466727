"""Training data: the date range of a source, the snapshot grid of both targets' cutoffs, its
model matrix and row masks, and the data fingerprint logged with every run.

The cutoffs come from the split plan (:mod:`churnguard.training.split`); every label window
ends on or before ``as_of``, so no row from ``as_of`` on is ever read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from churnguard.features.build import LabelMode, SnapshotBuilder
from churnguard.features.definitions import FeatureSpec
from churnguard.features.sources import Source
from churnguard.model.encode import model_matrix
from churnguard.training.split import PlanError, SplitPlan

__all__ = [
    "PlanError",
    "SplitRows",
    "TrainingData",
    "build_training_grid",
    "category_levels",
    "data_fingerprint",
    "data_window",
    "training_data",
]


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
    label: LabelMode = "noncontractual",
    grace_days: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Features and labels for the union of both targets' cutoffs, as one pandas frame.

    ``label`` picks the churn label (:func:`churnguard.features.build.label_sql`); a
    contractual grid holds only the customers subscribed at each cutoff, and its churn label
    window is ``horizon_days`` + ``grace_days`` long.

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
        g = grace_days if churn_ok and label == "contractual" else 0
        c = clv_horizon_days if clv_ok else 1
        for days in (h + g, c):
            if cutoff + timedelta(days=days) > as_of:
                raise PlanError(f"the label window of cutoff {cutoff} ({days} days) ends after "
                                f"the as-of date {as_of}")
        table = builder.snapshot(cutoff, h, c, label, grace_days=g)
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


@dataclass(frozen=True)
class SplitRows:
    """Boolean row masks of the grid: one target's training, validation and test cutoffs."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def all(self) -> np.ndarray:
        """Every row of the plan (what the shipped model is refitted on)."""
        return self.train | self.valid | self.test


@dataclass(frozen=True)
class TrainingData:
    """The snapshot grid (features + labels, one row per customer and cutoff), its model
    matrix ``X`` (same row order) and the category levels that matrix was encoded with."""

    grid: pd.DataFrame
    X: pd.DataFrame
    levels: dict[str, list[str]]

    def rows(self, cutoffs: Iterable[date]) -> np.ndarray:
        """Mask of the rows of these cutoffs."""
        return self.grid["as_of"].isin(tuple(cutoffs)).to_numpy()

    def split_rows(self, plan: SplitPlan) -> SplitRows:
        return SplitRows(self.rows(plan.train), self.rows((plan.valid,)),
                         self.rows((plan.test,)))

    @property
    def churned(self) -> np.ndarray:
        """The churn label as float (NaN on rows that are not churn cutoffs)."""
        return self.grid["churned"].to_numpy(dtype=float)

    @property
    def future_spend(self) -> np.ndarray:
        """The CLV target as float (NaN on rows that are not CLV cutoffs)."""
        return self.grid["future_spend"].to_numpy(dtype=float)


def training_data(
    source: Source,
    spec: FeatureSpec,
    *,
    as_of: date,
    churn_plan: SplitPlan,
    clv_plan: SplitPlan,
    label: LabelMode = "noncontractual",
    grace_days: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingData:
    """Build the grid of both plans' cutoffs and encode it with levels fixed from it. A
    contractual churn plan's label window is the horizon plus the grace period."""
    g = grace_days if label == "contractual" else 0
    grid = build_training_grid(
        source, spec, as_of=as_of, churn_cutoffs=churn_plan.all,
        horizon_days=churn_plan.label_days - g, clv_cutoffs=clv_plan.all,
        clv_horizon_days=clv_plan.label_days, label=label, grace_days=g, progress=progress)
    levels = category_levels(spec, grid)
    return TrainingData(grid=grid, X=model_matrix(grid, spec, levels), levels=levels)


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
