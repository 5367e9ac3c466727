"""What several benchmarks share: cached demo data and a small fitted bundle."""

from __future__ import annotations

from pathlib import Path

from churnguard.features.demo_data import generate_demo_data
from churnguard.features.sources import open_source
from churnguard.model.bundle import ScoringBundle
from churnguard.training.models import BoostConfig
from churnguard.training.pipeline import TrainConfig, fit_models


def demo_data(cache: Path, customers: int, seed: int) -> Path:
    """Demo data for ``customers`` customers, generated once into ``cache``."""
    data = cache / f"demo-{customers}-seed{seed}"
    if not (data / "customers.parquet").exists():
        generate_demo_data(data, n_customers=customers, seed=seed)
    return data


def small_bundle(cache: Path) -> ScoringBundle:
    """A bundle fitted on 3,000 demo customers (the benchmarks measure scoring, not fitting)."""
    with open_source(demo_data(cache, 3000, 1)) as src:
        fitted = fit_models(src, config=TrainConfig(
            horizon_days=90, clv_horizon_days=180, max_train_cutoffs=6,
            boost=BoostConfig(n_estimators=300, early_stopping_rounds=20)))
    bundle: ScoringBundle = fitted.bundle
    return bundle


def force_champion(store: Path) -> str:
    """Make the newest version of the embedded store ``store`` champion, as a bench that
    measures the version it just trained needs, whatever the promotion gate decided (README,
    "Promotion"): the gate's decision and reason, for the bench's notes."""
    from churnguard.model.registry import Tracking
    from churnguard.training.registry import CHALLENGER, promote

    client = Tracking.resolve(store).client()
    mv = client.get_model_version_by_alias("churnguard", CHALLENGER)
    tags = mv.tags or {}
    decision = (f"v{mv.version}: gate {tags.get('gate_decision', '?')} "
                f"({tags.get('gate_reason', '')})")
    if tags.get("gate_decision") == CHALLENGER:
        promote(client, "churnguard", str(mv.version), force=True,
                reason="bench: measures the version it trained (promote --force)")
        print(f"the promotion gate kept {decision}; the bench promotes it with --force",
              flush=True)
    return decision
