"""The one scoring path: an encoded feature matrix → every field of a score.

:func:`score_matrix` is the only code that turns feature rows into churn probability, CLV,
drivers, lifecycle stage, value tier and recommended actions. The API
(:mod:`churnguard.serving.scoring`), the batch job and Spark (:mod:`churnguard.serving.batch`)
and the MLflow pyfunc (:mod:`churnguard.model.pyfunc`) all call it, on a matrix from the
bundle's :class:`~churnguard.model.encode.RowEncoder`, so they cannot disagree.
"""

from __future__ import annotations

import functools
import logging
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import xgboost as xgb

from churnguard.model.bundle import ScoringBundle
from churnguard.model.encode import RowEncoder
from churnguard.model.policy import Assessment, Drivers, Policy, assess, rank_drivers
from churnguard.model.predictors import masked_matrix

log = logging.getLogger(__name__)

#: Rows on which the fast path is checked against the models' own methods, once per bundle.
FAST_CHECK_ROWS = 512


@dataclass
class FullScores:
    """The output of :func:`score_matrix`, aligned with the input rows."""

    churn_probability: np.ndarray
    clv: np.ndarray
    p_buy: np.ndarray
    expected_spend_if_buy: np.ndarray
    assessment: Assessment
    #: The ranked churn drivers (None: scored without drivers), with the encoded matrix and
    #: its encoder that give their values: :attr:`drivers` as dicts, :meth:`drivers_json` as
    #: the batch job writes them.
    ranked: Drivers | None
    frame: dict[str, np.ndarray]
    policy: Policy
    #: The CLV's 80 % prediction interval (README, "CLV intervals"); None for a bundle
    #: trained before intervals existed.
    clv_low: np.ndarray | None = None
    clv_high: np.ndarray | None = None
    X: np.ndarray | None = None
    encoder: RowEncoder | None = None

    def __len__(self) -> int:
        return len(self.churn_probability)

    @functools.cached_property
    def drivers(self) -> list[list[dict[str, Any]]] | None:
        """Each row's drivers as dicts (None: scored without drivers)."""
        if self.ranked is None:
            return None
        X, enc = self.X, self.encoder
        assert X is not None and enc is not None
        return self.ranked.dicts(lambda i, j: enc.display(X, i, j))

    def drivers_json(self) -> pa.Array | None:
        """Each row's :attr:`drivers` as the JSON text ``json.dumps`` writes, in an Arrow
        string array built a column at a time (None: scored without drivers)."""
        if self.ranked is None:
            return None
        X, enc = self.X, self.encoder
        assert X is not None and enc is not None
        return self.ranked.json(lambda rows, cols: enc.display_json(X, rows, cols))

    def actions(self, i: int) -> list[dict[str, Any]]:
        """Recommended actions of row ``i``, best first, each with its reason."""
        return self.assessment.actions(self.frame, self.policy, i)

    def rows(self) -> list[dict[str, Any]]:
        """Score fields of every row (without id, model version and time), for ``orjson``:
        the numbers and tiers as Python objects converted once for the whole batch, and each
        row's ``actions`` as an ``orjson.Fragment`` of the JSON text the policy writes
        (:meth:`Assessment.actions_json`), which ``orjson.dumps`` copies into its output as
        it is instead of the API decoding it into dicts only to encode them again (use
        :meth:`actions` for the dicts)."""
        a = self.assessment
        n = len(self)
        drivers = self.drivers if self.drivers is not None else [[] for _ in range(n)]
        lows = self.clv_low.tolist() if self.clv_low is not None else [None] * n
        highs = self.clv_high.tolist() if self.clv_high is not None else [None] * n
        return [{"churn_probability": p, "risk_tier": rt, "clv": c, "clv_low": lo,
                 "clv_high": hi, "value_tier": vt, "lifecycle_stage": st, "drivers": d,
                 "actions": orjson.Fragment(js)}
                for p, rt, c, lo, hi, vt, st, d, js in zip(
                    self.churn_probability.tolist(), a.risk_tier.tolist(), self.clv.tolist(),
                    lows, highs, a.value_tier.tolist(), a.lifecycle_stage.tolist(), drivers,
                    a.actions_json(self.policy), strict=True)]

    def top_actions(self) -> list[str]:
        """The id of each row's first recommended action (the catalog's no_action when none
        pays)."""
        ids = [act.id for act in self.policy.actions]
        return [ids[j] for j in self.assessment.recommendations(self.policy).first().tolist()]

    def to_frame(self) -> pd.DataFrame:
        """Every score field as a column (drivers and actions as lists of dicts)."""
        n = len(self)
        a = self.assessment
        missing = np.full(n, np.nan)
        return pd.DataFrame({
            "churn_probability": self.churn_probability, "clv": self.clv,
            "clv_low": missing if self.clv_low is None else self.clv_low,
            "clv_high": missing if self.clv_high is None else self.clv_high,
            "p_buy": self.p_buy, "expected_spend_if_buy": self.expected_spend_if_buy,
            "risk_tier": a.risk_tier, "value_tier": a.value_tier,
            "lifecycle_stage": a.lifecycle_stage,
            "drivers": self.drivers if self.drivers is not None else [[] for _ in range(n)],
            "actions": [self.actions(i) for i in range(n)]})


def score_matrix(bundle: ScoringBundle, X: np.ndarray, *, drivers: bool = True) -> FullScores:
    """Score an encoded feature matrix (rows from :meth:`ScoringBundle.encode`,
    :meth:`~ScoringBundle.encode_arrow` or :meth:`RowEncoder.encode_records`).

    Churn probability (calibrated, in the bundle's churn horizon), CLV (expected spend in the
    CLV horizon, never negative) with its two hurdle parts and its 80 % prediction interval
    (``clv_low`` .. ``clv_high``, quantiles of the CLV model's predictive distribution:
    :meth:`~churnguard.model.predictors.ClvModel.interval`), then the policy's risk and value
    tier, lifecycle stage and recommended actions, and with ``drivers`` the actionable features
    raising each churn score most (TreeSHAP contributions, :func:`contributions`; context
    features such as the season are left out, and a null value says what null means).
    """
    enc = bundle.encoder()
    core = _core_checked(bundle, X)
    p, clv = core["churn_probability"], core["clv"]
    frame: dict[str, np.ndarray] = {name: X[:, j] for j, name in enumerate(enc.names)}
    frame["churn_probability"] = p
    frame["clv"] = clv
    policy = bundle.policy_obj()
    top: Drivers | None = None
    if drivers:
        shown, meanings = _driver_info(enc)
        top = rank_drivers(contributions(bundle, X)[:, :-1], enc.names, enc.descriptions,
                           policy.top_drivers, shown=shown, null_meanings=meanings)
    return FullScores(churn_probability=p, clv=clv, p_buy=core["p_buy"],
                      expected_spend_if_buy=core["expected_spend_if_buy"],
                      assessment=assess(frame, policy), ranked=top, frame=frame,
                      policy=policy, clv_low=core.get("clv_low"),
                      clv_high=core.get("clv_high"), X=X, encoder=enc)


def predict_outputs(bundle: ScoringBundle, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Only the churn probability and the CLV of an encoded matrix: :func:`score_matrix`'s
    numbers without the policy (tiers, actions), for work that needs no more (monitoring)."""
    core = _core_checked(bundle, X)
    return core["churn_probability"], core["clv"]


#: Per encoder (one per loaded bundle): which features may be listed as drivers, and what a
#: null value of each means — derived from the feature definitions once, not per call.
_DRIVER_INFO: weakref.WeakKeyDictionary[RowEncoder, tuple[np.ndarray, dict[str, str]]] = (
    weakref.WeakKeyDictionary())


def _driver_info(enc: RowEncoder) -> tuple[np.ndarray, dict[str, str]]:
    """The actionable-feature mask over the encoder's columns (context features count in the
    score but are never drivers: features/definitions, ``Role``) and the null meanings."""
    info = _DRIVER_INFO.get(enc)
    if info is None:
        feats = enc.spec.features()
        info = (np.array([f.role == "actionable" for f in feats], dtype=bool),
                {f.name: f.null_meaning for f in feats if f.null_meaning is not None})
        _DRIVER_INFO[enc] = info
    return info


def contributions(bundle: ScoringBundle, X: np.ndarray) -> np.ndarray:
    """Per-feature contributions to the churn model's raw log-odds (XGBoost ``pred_contribs``,
    i.e. TreeSHAP values; Lundberg et al. 2020, Nature MI 2(1)): n × (features + 1), the last
    column the bias; without a BTYD prior each row sums to the raw (uncalibrated) log-odds."""
    enc = bundle.encoder()
    # One thread for small batches: building a DMatrix with an OpenMP team costs milliseconds.
    # The columns are the encoder's, i.e. the booster's own order (ScoringBundle.load checks
    # it), so the per-call feature-name checks are skipped; the types stay so that categorical
    # splits read level codes.
    d = xgb.DMatrix(masked_matrix(X, enc.names, bundle.churn.masked), feature_types=enc.types,
                    enable_categorical=True, nthread=1 if len(X) < 1024 else None)
    return np.asarray(bundle.churn.booster.predict(d, pred_contribs=True,
                                                   validate_features=False))


def _core(bundle: ScoringBundle, X: np.ndarray) -> dict[str, np.ndarray]:
    """Churn probability, CLV, P(buy) and spend through the models' own predict methods on
    the model matrix (the reference the fast path is checked against)."""
    frame = bundle.encoder().frame(X)
    p_buy, spend = bundle.clv.components(frame)
    return {"churn_probability": bundle.churn.predict(frame),
            "clv": np.maximum(bundle.clv.scale * p_buy * spend, 0.0),
            "p_buy": p_buy, "expected_spend_if_buy": spend * bundle.clv.scale,
            **_interval(bundle.clv.interval(frame, p_buy, spend))}


def _interval(bounds: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    return {} if bounds is None else {"clv_low": bounds[0], "clv_high": bounds[1]}


def _core_fast(bundle: ScoringBundle, X: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`_core` on the encoded matrix without building pandas frames: the same model
    steps (prior base margins, masked columns, calibration) with XGBoost ``inplace_predict``,
    which reads the same float32 numbers as a DMatrix."""
    names = bundle.encoder().names
    churn, clv = bundle.churn, bundle.clv
    p = churn.predict_encoded(X, names)
    p_buy, spend = clv.components_encoded(X, names)
    return {"churn_probability": p, "clv": np.maximum(clv.scale * p_buy * spend, 0.0),
            "p_buy": p_buy, "expected_spend_if_buy": spend * clv.scale,
            **_interval(clv.interval(X, p_buy, spend, names))}


def _core_checked(bundle: ScoringBundle, X: np.ndarray) -> dict[str, np.ndarray]:
    """The fast path once it has been shown to equal :func:`_core` bit for bit on this bundle
    (checked on the first :data:`FAST_CHECK_ROWS` rows it scores); otherwise, with a warning
    logged once, the models' own methods."""
    if bundle.fast_path is None:
        head = X[:FAST_CHECK_ROWS]
        slow = _core(bundle, head)
        try:
            fast = _core_fast(bundle, head)
            bundle.fast_path = slow.keys() == fast.keys() and all(
                np.array_equal(slow[k], fast[k], equal_nan=True) for k in slow)
            why = "its results differ from the models' own predict methods"
        except Exception as exc:  # a model step the fast path does not know
            bundle.fast_path = False
            why = f"it failed ({type(exc).__name__}: {exc})"
        if not bundle.fast_path:
            log.warning("scoring this bundle through the models' own predict methods, which "
                        "is several times slower: the fast path (inplace_predict) was not used "
                        "because %s", why)
        if len(X) == len(head):
            return slow
    if bundle.fast_path:
        return _core_fast(bundle, X)
    return _core(bundle, X)
