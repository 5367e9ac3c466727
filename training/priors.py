"""The BTYD priors the boosters can start from, and the candidate models built on them.

One BG/NBD + Gamma-Gamma prior per snapshot, fitted on that snapshot's own feature rows (what
was known at its cutoff), and one on the feature rows as of ``as_of`` for the shipped bundle.
The candidates, tried for churn and for CLV alike: plain XGBoost; XGBoost boosting from the
BTYD prior, with and without splits on raw customer age; the prior alone (no trees: learning
rate 0), recalibrated. The one with the best cross-fitted validation score is shipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import date

import numpy as np

from churnguard.features.build import build_features
from churnguard.features.definitions import FeatureSpec
from churnguard.features.sources import Source
from churnguard.model.encode import model_matrix
from churnguard.model.predictors import Prior, SbgPrior
from churnguard.training.data import TrainingData
from churnguard.training.models import AGE_FEATURES, BoostConfig, fit_btyd_prior

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotPriors:
    """A prior per grid cutoff, and ``final`` (as of ``as_of``) for the bundle: a
    :class:`BtydPrior` per snapshot, or for a contractual label one :class:`SbgPrior` for
    every snapshot (:func:`sbg_snapshot_priors`). Empty (``final`` None) when a prior could
    not be fitted."""

    data: TrainingData
    by_cutoff: dict[date, Prior]
    final: Prior | None

    def margin(self, kind: str, horizon_days: int, mask: np.ndarray) -> np.ndarray:
        """The ``kind`` margin (``churn``, ``buy`` or ``spend``) of the masked rows, each row
        from the prior of its own cutoff."""
        cut = self.data.grid["as_of"].to_numpy()[mask]
        Xm = self.data.X[mask]
        out = np.zeros(int(mask.sum()))
        for c in np.unique(cut):
            sel = cut == c
            out[sel] = self.by_cutoff[c].margins(Xm[sel], horizon_days)[kind]
        return out


def fit_snapshot_priors(
    source: Source, spec: FeatureSpec, data: TrainingData, as_of: date, *, seed: int = 0,
) -> SnapshotPriors:
    """Fit the priors of every grid cutoff and of ``as_of``; none, with a warning, if any fit
    fails."""
    cuts = data.grid["as_of"].to_numpy()
    try:
        # BG/NBD: its fit takes seconds; Pareto/NBD (fit_btyd_prior(family=None) picks by
        # likelihood) can take minutes per snapshot on young customer bases.
        now = model_matrix(build_features(source, spec, as_of).to_pandas(), spec, data.levels)
        final = fit_btyd_prior(now, family="bgnbd", seed=seed)
        by_cutoff: dict[date, Prior] = {
            c: fit_btyd_prior(data.X[cuts == c], family=final.family, seed=seed)
            for c in sorted(set(cuts))}
    except (ValueError, RuntimeError, KeyError) as exc:  # ConvergenceError is a RuntimeError
        log.warning("BG/NBD + Gamma-Gamma prior skipped: %s", exc)
        return SnapshotPriors(data, {}, None)
    return SnapshotPriors(data, by_cutoff, final)


@dataclass(frozen=True)
class Candidate:
    """One model variant: does it boost from the prior, which columns are hidden from its
    trees, and its booster settings."""

    name: str
    use_prior: bool
    masked: tuple[str, ...]
    boost: BoostConfig


def candidates(boost: BoostConfig, priors: SnapshotPriors) -> list[Candidate]:
    """Plain XGBoost, plus the three prior-based variants when there is a prior (two for the
    sBG prior: it reads no customer age)."""
    out = [Candidate("xgboost", False, (), boost)]
    no_trees = replace(boost, learning_rate=0.0, n_estimators=2, early_stopping_rounds=1)
    if isinstance(priors.final, SbgPrior):
        return [*out, Candidate("sbg_prior_xgboost", True, (), boost),
                Candidate("sbg_prior", True, (), no_trees)]
    if priors.final is not None:
        out += [Candidate("btyd_prior_xgboost", True, (), boost),
                Candidate("btyd_prior_xgboost_no_age", True, AGE_FEATURES, boost),
                Candidate("btyd_prior", True, (), no_trees)]
    return out


def sbg_snapshot_priors(data: TrainingData, train: np.ndarray, labelled: np.ndarray,
                        window_days: int) -> SnapshotPriors:
    """The contractual label's prior: an :class:`SbgPrior` fitted on the churn training rows'
    renewal decisions serves every snapshot (its labels are the training rows': validation
    and test stay out of sample), and one fitted on every ``labelled`` row goes in the
    bundle; none, with a warning, if the training rows have no renewal decisions."""
    from churnguard.training.baselines import SbgBaseline

    y = data.churned
    try:
        fitted = SbgBaseline(window_days).fit(data.X[train], y[train]).prior
        final = SbgBaseline(window_days).fit(data.X[labelled], y[labelled]).prior
    except ValueError as exc:
        log.warning("no sBG prior for the churn model (%s)", exc)
        return SnapshotPriors(data, {}, None)
    assert fitted is not None
    cuts = sorted(set(data.grid["as_of"].to_numpy()))
    return SnapshotPriors(data, dict.fromkeys(cuts, fitted), final)
