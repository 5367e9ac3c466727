"""The knobs of one training run, shared by every training step."""

from __future__ import annotations

from dataclasses import dataclass, field

from churnguard.config import DEFAULT_GRACE_DAYS
from churnguard.features.build import LabelMode
from churnguard.training.models import BoostConfig


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of one training run (the CLI fills them from options and Settings)."""

    horizon_days: int = 90
    #: The churn label: "noncontractual" (no purchase in the horizon) or "contractual" (no
    #: subscription active at the horizon, with ``grace_days``); features.build.label_sql.
    label: LabelMode = "noncontractual"
    grace_days: int = DEFAULT_GRACE_DAYS
    clv_horizon_days: int = 365
    #: When the CLV horizon leaves no room for a purged split, fall back to the longest
    #: feasible one (a multiple of 30 days) instead of failing. The CLI sets it when the user
    #: did not pass --clv-horizon-days explicitly.
    clv_horizon_auto: bool = False
    max_train_cutoffs: int = 24
    min_history_days: int = 90
    boost: BoostConfig = field(default_factory=BoostConfig)
    refit: bool = True
    experiment: str = "churnguard"
    model_name: str = "churnguard"
    seed: int = 0
    #: The promotion gate's class minimums per test snapshot (training/registry.py).
    gate_min_positives: int = 50
    gate_min_negatives: int = 50
