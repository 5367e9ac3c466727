"""The reference profile a bundle carries: what its inputs and outputs looked like on the
training run's test snapshot, so that later data can be compared with it (drift).

Per numeric feature (and for churn probability and CLV): bin edges at the reference's deciles
and the share of non-null reference rows in each bin; per categorical feature: the share of
each level (levels outside the training levels count as ``__other__``); for both, the null
rate. :func:`population_stability_index` compares another sample with a profile entry:

    PSI = Σ_bins (q_b − p_b) · ln(q_b / p_b)

with p the reference shares and q the current ones, both floored at :data:`PSI_FLOOR`
(Siddiqi 2006, "Credit Risk Scorecards", Wiley, ch. 8; the usual reading: below 0.1 stable,
0.1–0.25 a shift worth a look, above 0.25 a major shift).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Quantile bins of a numeric profile (deciles; fewer where values repeat).
PROFILE_BINS = 10
#: Shares below this count as this in the PSI (an empty bin would make it infinite).
PSI_FLOOR = 1e-4
OTHER = "__other__"


def numeric_entry(values: np.ndarray | pd.Series, n_bins: int = PROFILE_BINS
                  ) -> dict[str, Any]:
    """Decile edges of the non-null values and the share of them in each bin; the null rate.
    Bin b holds edges[b-1] < x <= edges[b] (the first from −∞, the last to +∞)."""
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    finite = x[np.isfinite(x)]
    n = len(x)
    if finite.size == 0:
        return {"kind": "numeric", "edges": [], "shares": [], "null_rate": 1.0 if n else 0.0,
                "n": n}
    inner = np.unique(np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return {"kind": "numeric", "edges": inner.tolist(),
            "shares": _bin_shares(finite, inner).tolist(),
            "null_rate": 1.0 - finite.size / n, "n": n}


def _bin_shares(finite: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=len(edges) + 1)
    return counts / max(finite.size, 1)


def categorical_entry(values: pd.Series | Sequence[Any], levels: Sequence[str]
                      ) -> dict[str, Any]:
    """The share of each training level among the non-null values (others as ``__other__``);
    the null rate."""
    s = pd.Series(values, dtype=object)
    present = s[s.notna()].astype(str)
    n = len(s)
    known = list(levels)
    counts = present.value_counts()
    shares = {lv: float(counts.get(lv, 0)) / max(len(present), 1) for lv in known}
    shares[OTHER] = float(counts[~counts.index.isin(known)].sum()) / max(len(present), 1)
    return {"kind": "categorical", "shares": shares,
            "null_rate": 1.0 - len(present) / n if n else 0.0, "n": n}


def bin_counts(entry: Mapping[str, Any], values: np.ndarray | pd.Series | Sequence[Any]
               ) -> np.ndarray:
    """How many non-null ``values`` fall in each bin (or level) of a profile ``entry``: what a
    sample adds up chunk by chunk (:func:`psi_from_counts`)."""
    if entry["kind"] == "numeric":
        x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
        edges = np.asarray(entry["edges"], dtype=float)
        return np.bincount(np.searchsorted(edges, x[np.isfinite(x)], side="left"),
                           minlength=len(edges) + 1)
    s = pd.Series(values, dtype=object)
    counts = s[s.notna()].astype(str).value_counts()
    levels = [lv for lv in entry["shares"] if lv != OTHER]
    known = counts.index.isin(levels)
    return np.array([int(counts.get(lv, 0)) if lv != OTHER else int(counts[~known].sum())
                     for lv in entry["shares"]])


def current_shares(entry: Mapping[str, Any], values: np.ndarray | pd.Series | Sequence[Any]
                   ) -> np.ndarray:
    """The shares of ``values`` in the bins (or levels) of a profile ``entry``."""
    counts = bin_counts(entry, values)
    return counts / max(int(counts.sum()), 1)


def psi_from_counts(entry: Mapping[str, Any], counts: np.ndarray) -> float:
    """PSI (module docstring) of a sample given by its :func:`bin_counts` against ``entry``; 0
    for an entry with no non-null reference values."""
    ref = np.asarray(list(entry["shares"].values()) if entry["kind"] == "categorical"
                     else entry["shares"], dtype=float)
    if ref.size == 0:
        return 0.0
    cur = np.asarray(counts, dtype=float) / max(float(np.sum(counts)), 1.0)
    p, q = np.maximum(ref, PSI_FLOOR), np.maximum(cur, PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def population_stability_index(entry: Mapping[str, Any],
                               values: np.ndarray | pd.Series | Sequence[Any]) -> float:
    """PSI of ``values`` against a profile ``entry`` (module docstring); 0 for an entry with
    no non-null reference values."""
    return psi_from_counts(entry, bin_counts(entry, values))


def reference_profile(features: pd.DataFrame, kinds: Mapping[str, str],
                      levels: Mapping[str, Sequence[str]], *, churn_probability: np.ndarray,
                      clv: np.ndarray, snapshot: str) -> dict[str, Any]:
    """The profile of a model matrix's rows (``kinds``: feature → ``category`` or a numeric
    kind; ``levels``: the categorical features' training levels) and of the model's outputs
    on them, as plain JSON values."""
    entries: dict[str, Any] = {}
    for name, kind in kinds.items():
        col = features[name]
        if kind == "category":
            entries[name] = categorical_entry(col.astype(object).where(col.notna(), None),
                                              levels.get(name, ()))
        else:
            entries[name] = numeric_entry(col)
    return {"snapshot": snapshot, "rows": len(features), "bins": PROFILE_BINS,
            "features": entries,
            "churn_probability": numeric_entry(np.asarray(churn_probability, dtype=float)),
            "clv": numeric_entry(np.asarray(clv, dtype=float))}
