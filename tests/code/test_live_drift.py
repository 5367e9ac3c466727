"""The API's live score window (serving/live_drift.py): bin counts, eviction of the oldest rows,
a PSI equal to population_stability_index of the window's probabilities, reset on a model
change, the minimum rows; and its gauges in Metrics."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from churnguard.model.profile import (
    bin_counts,
    numeric_entry,
    population_stability_index,
    psi_from_counts,
)
from churnguard.serving.live_drift import ScoreWindow, reference_entry
from churnguard.serving.metrics import Metrics

RNG = np.random.default_rng(7)
REFERENCE = RNG.beta(2.0, 5.0, 5000)
ENTRY = numeric_entry(REFERENCE)


def window(size: int = 100, min_rows: int = 10) -> ScoreWindow:
    w = ScoreWindow(size, min_rows)
    w.reset(ENTRY, "1")
    return w


def test_counts_are_the_bins_of_the_scores_added() -> None:
    w = window()
    p = RNG.random(40)
    assert w.add(p, "1") == 40
    assert w.counts().tolist() == bin_counts(ENTRY, p).tolist()
    assert w.counts().sum() == w.rows == 40


def test_old_rows_leave_the_window_in_small_and_large_batches() -> None:
    w = window(size=100)
    seen: list[np.ndarray] = []
    for n in (30, 50, 45, 1, 99, 7, 250, 3, 100, 64):  # wraps, and batches over the size
        p = RNG.random(n)
        seen.append(p)
        w.add(p, "1")
        last = np.concatenate(seen)[-100:]
        assert w.rows == len(last)
        assert w.counts().tolist() == bin_counts(ENTRY, last).tolist()
        assert w.values_bins().tolist() == np.searchsorted(
            np.asarray(ENTRY["edges"]), last, side="left").tolist()
        assert w.psi() == pytest.approx(population_stability_index(ENTRY, last), abs=1e-12)


def test_psi_equals_population_stability_index_of_the_window() -> None:
    w = window(size=10_000, min_rows=500)
    shifted = RNG.beta(3.0, 4.0, 3000)
    w.add(shifted, "1")
    assert w.psi() == population_stability_index(ENTRY, shifted)
    assert w.psi() == psi_from_counts(ENTRY, bin_counts(ENTRY, shifted))
    assert w.psi() > 0.1
    same = ScoreWindow(10_000, 500)
    same.reset(ENTRY, "1")
    same.add(REFERENCE, "1")
    assert same.psi() == pytest.approx(0.0, abs=1e-12)


def test_no_psi_below_the_minimum_rows_or_without_a_reference() -> None:
    w = window(size=1000, min_rows=500)
    w.add(RNG.random(499), "1")
    assert w.state() == ("1", 499, None)
    w.add(RNG.random(1), "1")
    assert w.psi() is not None
    # A window smaller than the minimum shows the PSI once it is full.
    assert ScoreWindow(100, 500).min_rows == 100
    bare = ScoreWindow(100, 1)
    bare.reset(None, "2")
    assert bare.add(RNG.random(50), "2") == 0 and bare.state() == ("2", 0, None)


def test_reset_on_a_model_change_and_other_versions_left_out() -> None:
    w = window()
    w.add(RNG.random(80), "1")
    w.reset(ENTRY, "2")
    assert w.rows == 0 and w.counts().sum() == 0 and w.psi() is None
    assert w.add(RNG.random(20), "1") == 0  # a request scored by v1 before the swap
    w.add(np.array([0.1, np.nan, np.inf, 0.2]), "2")  # non-finite values are not scores
    assert w.rows == 2


def test_threads_adding_concurrently_lose_no_row() -> None:
    w = window(size=100_000)
    batches = [RNG.random(37) for _ in range(400)]

    def work(k: int) -> None:
        for b in batches[k::4]:
            w.add(b, "1")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.counts().tolist() == bin_counts(ENTRY, np.concatenate(batches)).tolist()


def test_reference_entry_of_a_bundle() -> None:
    assert reference_entry({}) is None
    assert reference_entry({"reference_profile": {"churn_probability": numeric_entry(
        np.full(3, np.nan))}}) is None
    assert reference_entry({"reference_profile": {"churn_probability": ENTRY}}) == ENTRY


def _samples(m: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in m.registry.collect():
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_gauges_follow_the_window_and_the_served_model() -> None:
    m = Metrics(live_window=1000, live_min_rows=100)
    m.serve_reference("1", {"reference_profile": {"churn_probability": ENTRY}})
    tiers = ["low"] * 60
    m.scored(RNG.random(60), tiers, "1")
    m.render()
    assert _samples(m, "churnguard_score_psi") == {}
    assert _samples(m, "churnguard_score_psi_window_rows") == {(): 60.0}
    p = RNG.random(60)
    m.scored(p, tiers, "1")
    text = m.render().decode()
    [psi] = _samples(m, "churnguard_score_psi").items()
    assert psi[0] == (("model_version", "1"),) and psi[1] == pytest.approx(m.live.psi())
    assert 'churnguard_score_psi{model_version="1"}' in text
    # A hot swap: an empty window for v2, v1's series gone.
    m.serve_reference("2", {"reference_profile": {"churn_probability": ENTRY}})
    m.render()
    assert _samples(m, "churnguard_score_psi") == {}
    assert _samples(m, "churnguard_score_psi_window_rows") == {(): 0.0}
    # A bundle without a reference profile: no PSI however much is scored.
    m.serve_reference("3", {})
    m.scored(RNG.random(500), ["low"] * 500, "3")
    m.render()
    assert _samples(m, "churnguard_score_psi") == {}


def test_with_workers_gauges_are_set_on_scoring_and_a_swap_sets_nan(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Multiprocess mode (--workers > 1): a scrape reads every worker's files, so each worker
    sets its gauges as it scores; series cannot be removed there (prometheus_client warns), so
    the previous version's reads NaN."""
    import math
    import warnings

    from churnguard.serving.metrics import MULTIPROC_ENV

    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    m = Metrics(live_window=1000, live_min_rows=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.serve_reference("1", {"reference_profile": {"churn_probability": ENTRY}})
        m.scored(RNG.random(150), ["low"] * 150, "1")
        # Set by scoring, without a render in this worker.
        assert _samples(m, "churnguard_score_psi") == {
            (("model_version", "1"),): pytest.approx(m.live.psi())}
        m.serve_reference("2", {"reference_profile": {"churn_probability": ENTRY}})
        [old] = _samples(m, "churnguard_score_psi").values()
        assert math.isnan(old)
