"""The scoring bundle: churn + CLV models + feature spec + action policy, saved as plain files.

Training writes a bundle (:mod:`churnguard.training.pipeline`); the API, the batch job, Spark
and the MLflow pyfunc read it and score it with :func:`churnguard.model.score.score_matrix`.
Files: ``bundle.json`` (spec, category levels, calibrator, CLV factors and the hurdle's
measured spend distribution for the CLV interval, metadata, the action ``policy``),
``churn.ubj``, and for the hurdle CLV model ``clv_buy.ubj``, ``clv_spend.ubj`` (XGBoost's
own format; a contractual bundle's CLV model is a few numbers in ``bundle.json``).
Loading reads these files only: nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import xgboost as xgb

from churnguard.features.definitions import FeatureSpec
from churnguard.model.encode import RowEncoder
from churnguard.model.errors import BundleError
from churnguard.model.policy import Policy, load_catalog
from churnguard.model.predictors import (
    AnyClvModel,
    Calibrator,
    ChurnModel,
    ClvModel,
    ContractClvModel,
    SpendQuantiles,
)

BUNDLE_FORMAT = 1
#: The files of a bundle directory; a directory without all of them is not a bundle.
BUNDLE_FILES = ("bundle.json", "churn.ubj")
#: The hurdle CLV model's boosters (bundles whose ``clv`` is not ``kind: contract``).
HURDLE_FILES = ("clv_buy.ubj", "clv_spend.ubj")


@dataclass
class ScoringBundle:
    """Everything needed to score a feature row: spec, category levels, the fitted models and
    the action policy (as its dict; :meth:`policy_obj` parses it once)."""

    spec: FeatureSpec
    levels: dict[str, list[str]]
    churn: ChurnModel
    clv: AnyClvModel
    horizon_days: int
    clv_horizon_days: int
    metadata: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] | None = None
    #: Whether the fast scoring path was shown to equal the models' own methods on this
    #: bundle (None: not checked yet); see :func:`churnguard.model.score.score_matrix`.
    fast_path: bool | None = field(default=None, init=False, repr=False, compare=False)
    _policy: Policy | None = field(default=None, init=False, repr=False, compare=False)
    #: The ``policy`` dict that ``_policy`` was parsed from: a new dict given to ``policy`` (as
    #: training does when it attaches the catalog and value tiers) is parsed again.
    _policy_of: Any = field(default=None, init=False, repr=False, compare=False)
    _encoder: RowEncoder | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def feature_names(self) -> list[str]:
        return self.spec.feature_names()

    def policy_obj(self) -> Policy:
        """The bundle's action policy (the default catalog, without value tiers, if none)."""
        if self._policy is None or self._policy_of is not self.policy:
            self._policy_of = self.policy
            self._policy = (Policy.from_dict(self.policy, source="bundle policy")
                            if self.policy else load_catalog())
        return self._policy

    def encoder(self) -> RowEncoder:
        if self._encoder is None:
            self._encoder = RowEncoder(self.spec, self.levels)
        return self._encoder

    def encode(self, features: pd.DataFrame) -> np.ndarray:
        """Feature rows of a pandas frame as the encoded matrix (see
        :meth:`RowEncoder.encode_frame`)."""
        return self.encoder().encode_frame(features)

    def encode_arrow(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """Feature rows of an Arrow table as the encoded matrix (see
        :meth:`RowEncoder.encode_arrow`)."""
        return self.encoder().encode_arrow(table)

    def set_threads(self, n: int) -> ScoringBundle:
        """XGBoost threads per prediction for every booster (1 where parallelism comes from
        elsewhere: API workers, Spark tasks)."""
        for booster in self.boosters():
            booster.set_param({"nthread": n})
        return self

    def boosters(self) -> tuple[xgb.Booster, ...]:
        """Every XGBoost booster the bundle scores with."""
        return (self.churn.booster, *self.clv.boosters)

    # -- persistence ---------------------------------------------------------------------

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.churn.booster.save_model(directory / "churn.ubj")
        if isinstance(self.clv, ClvModel):
            self.clv.buy.save_model(directory / "clv_buy.ubj")
            self.clv.spend.save_model(directory / "clv_spend.ubj")
            clv: dict[str, Any] = {"smear": self.clv.smear, "scale": self.clv.scale,
                                   "info": self.clv.info}
            if self.clv.quantiles is not None:
                clv["quantiles"] = self.clv.quantiles.to_dict()
        else:
            clv = self.clv.to_dict()
        meta = {
            "format": BUNDLE_FORMAT,
            "spec": self.spec.to_dict(),
            "levels": self.levels,
            "calibrator": self.churn.calibrator.to_dict() if self.churn.calibrator else None,
            "churn_info": self.churn.info,
            "clv": clv,
            "horizon_days": self.horizon_days,
            "clv_horizon_days": self.clv_horizon_days,
            "metadata": self.metadata,
            "policy": self.policy,
        }
        (directory / "bundle.json").write_text(json.dumps(meta, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> ScoringBundle:
        """Read a bundle directory (its JSON and the boosters' native files); raises
        :class:`BundleError` for a directory that is not a bundle of this format, or whose
        files are not what this format stores (nothing in them is run)."""
        directory = Path(directory)
        absent = [name for name in BUNDLE_FILES if not (directory / name).is_file()]
        if absent:
            raise BundleError(f"{directory} is not a churnguard bundle (missing "
                              f"{', '.join(absent)})",
                              reason=f"not a churnguard bundle (no {absent[0]})")
        try:
            meta = json.loads((directory / "bundle.json").read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{directory}/bundle.json is not valid JSON ({exc})",
                              reason="bundle.json is not valid JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            shown = f" {found}" if isinstance(found, int) and not isinstance(found, bool) else ""
            raise BundleError(f"unsupported bundle format {found!r} "
                              f"(this churnguard reads format {BUNDLE_FORMAT})",
                              reason=f"unsupported bundle format{shown}")
        try:
            bundle = cls._from_files(directory, meta)
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # XGBoostError too
            # A bundle.json with missing or mistyped fields, or a booster file XGBoost cannot
            # read: not a bundle of this format.
            what = f"missing field {exc}" if isinstance(exc, KeyError) else (
                f"{type(exc).__name__}: {str(exc)[:300]}")
            raise BundleError(f"{directory} is not a valid churnguard bundle ({what})",
                              reason="invalid bundle files") from None
        # The scoring path hands the boosters encoded matrices without per-call feature-name
        # checks: it relies on every booster reading the spec's columns in order.
        names = bundle.feature_names
        for b in bundle.boosters():
            if b.feature_names is not None and list(b.feature_names) != names:
                raise BundleError(f"{directory}: the boosters do not read the feature spec's "
                                  "columns in order; the bundle is inconsistent",
                                  reason="inconsistent bundle (boosters and feature spec "
                                  "disagree)")
        return bundle

    @classmethod
    def _from_files(cls, directory: Path, meta: dict[str, Any]) -> ScoringBundle:
        def booster(name: str) -> xgb.Booster:
            b = xgb.Booster()
            b.load_model(directory / name)
            return b

        cal = Calibrator.from_dict(meta["calibrator"]) if meta["calibrator"] else None
        clv: AnyClvModel
        if meta["clv"].get("kind") == "contract":
            clv = ContractClvModel.from_dict(meta["clv"])
        else:
            absent = [name for name in HURDLE_FILES if not (directory / name).is_file()]
            if absent:
                raise BundleError(f"{directory} is not a churnguard bundle (missing "
                                  f"{', '.join(absent)})",
                                  reason=f"not a churnguard bundle (no {absent[0]})")
            # A bundle saved before CLV intervals has no "quantiles": it loads and scores
            # with clv_low / clv_high null (the same format: nothing it has changed meaning).
            quantiles = meta["clv"].get("quantiles")
            clv = ClvModel(buy=booster("clv_buy.ubj"), spend=booster("clv_spend.ubj"),
                           smear=float(meta["clv"]["smear"]),
                           scale=float(meta["clv"]["scale"]), info=meta["clv"].get("info", {}),
                           quantiles=SpendQuantiles.from_dict(quantiles) if quantiles else None)
        return cls(
            spec=FeatureSpec.from_dict(meta["spec"]),
            levels={k: list(v) for k, v in meta["levels"].items()},
            churn=ChurnModel(booster=booster("churn.ubj"), calibrator=cal,
                             info=meta.get("churn_info", {})),
            clv=clv,
            horizon_days=int(meta["horizon_days"]),
            clv_horizon_days=int(meta["clv_horizon_days"]),
            metadata=meta.get("metadata", {}),
            policy=meta.get("policy"),
        )
