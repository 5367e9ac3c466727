"""Live score drift: the PSI of the churn probabilities the API served lately against the
served bundle's reference profile (``bundle.metadata["reference_profile"]["churn_probability"]``,
model/profile.py), for ``/metrics`` (``churnguard_score_psi``).

:class:`ScoreWindow` holds the last ``size`` scores as their reference-bin indices in a ring
buffer, with the count per bin: adding a batch is a ``searchsorted`` and two ``bincount`` over
the batch (the rows it pushes out of the window leave their bins), and the PSI is computed from
the ~10 counts (:func:`~churnguard.model.profile.psi_from_counts`, the formula ``churnguard
monitor`` uses), so it equals
:func:`~churnguard.model.profile.population_stability_index` of the window's probabilities.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from churnguard.model.profile import psi_from_counts


def reference_entry(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The numeric profile entry of the churn probabilities in a bundle's ``metadata``; None
    when the bundle has no reference profile (or an empty entry)."""
    profile = metadata.get("reference_profile")
    entry = profile.get("churn_probability") if isinstance(profile, Mapping) else None
    if not isinstance(entry, Mapping) or entry.get("kind") != "numeric" \
            or not entry.get("shares"):
        return None
    if len(entry["shares"]) != len(entry.get("edges", ())) + 1:
        return None
    return dict(entry)


class ScoreWindow:
    """The bins of the last ``size`` finite churn probabilities of one model version.

    Thread-safe: :meth:`add` (request handlers), :meth:`reset` (the model poller) and
    :meth:`state` (a scrape) take one lock, each for O(batch + bins) numpy work."""

    def __init__(self, size: int, min_rows: int = 500) -> None:
        if size < 1:
            raise ValueError("the window needs at least one row")
        self.size = int(size)
        #: Rows needed before there is a PSI (a smaller window: once it is full).
        self.min_rows = max(1, min(int(min_rows), self.size))
        self._lock = threading.Lock()
        self._entry: dict[str, Any] | None = None
        self._edges = np.empty(0)
        self._version: str | None = None
        self._bins = np.zeros(self.size, dtype=np.int16)
        self._counts = np.zeros(1, dtype=np.int64)
        self._written = 0  # rows ever added since the reset; slot of the next: written % size

    def reset(self, entry: Mapping[str, Any] | None, version: str | None) -> None:
        """Start an empty window for ``version`` with the reference ``entry`` (None: no
        reference profile, so rows are not kept and there is no PSI)."""
        with self._lock:
            self._entry = dict(entry) if entry is not None else None
            self._edges = np.asarray(entry["edges"], dtype=float) if entry else np.empty(0)
            self._version = version
            self._counts = np.zeros(len(self._edges) + 1, dtype=np.int64)
            self._written = 0

    def add(self, churn_probability: np.ndarray, version: str | None) -> int:
        """Add a batch of scores of model ``version``; the oldest rows beyond ``size`` leave.
        Scores of another version than the window's (a request that started before a swap)
        and non-finite values are not added. Returns the rows added."""
        p = np.asarray(churn_probability, dtype=float)
        p = p[np.isfinite(p)]
        if p.size == 0:
            return 0
        with self._lock:
            if self._entry is None or version != self._version:
                return 0
            idx = np.searchsorted(self._edges, p, side="left").astype(np.int16)
            nbins = len(self._counts)
            if idx.size >= self.size:  # the batch alone fills the window
                idx = idx[-self.size:]
                start = (self._written + p.size - self.size) % self.size
                self._bins[:] = np.roll(idx, start)
                self._counts = np.bincount(idx, minlength=nbins).astype(np.int64)
            else:
                slots = (self._written + np.arange(idx.size)) % self.size
                filled = slots < min(self._written, self.size)  # slots holding a row
                if filled.any():
                    self._counts -= np.bincount(self._bins[slots[filled]], minlength=nbins)
                self._bins[slots] = idx
                self._counts += np.bincount(idx, minlength=nbins)
            self._written += p.size
            return int(p.size)

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def rows(self) -> int:
        return min(self._written, self.size)

    def counts(self) -> np.ndarray:
        """A copy of the count of the window's rows per reference bin."""
        with self._lock:
            return self._counts.copy()

    def values_bins(self) -> np.ndarray:
        """The bin index of each row in the window, oldest first (for tests and debugging)."""
        with self._lock:
            n = min(self._written, self.size)
            start = self._written % self.size if self._written >= self.size else 0
            return np.roll(self._bins, -start)[:n].copy()

    def state(self) -> tuple[str | None, int, float | None]:
        """(version, rows in the window, PSI): the PSI is None below ``min_rows`` rows or
        without a reference entry."""
        with self._lock:
            rows = min(self._written, self.size)
            if self._entry is None or rows < self.min_rows:
                return self._version, rows, None
            counts = self._counts.copy()
            entry = self._entry
            version = self._version
        return version, rows, psi_from_counts(entry, counts)

    def psi(self) -> float | None:
        return self.state()[2]
