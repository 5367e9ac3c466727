"""The registered model's versions, its aliases and the promotion rule.

Aliases: ``challenger`` points at the newest version, ``champion`` at the version that scores.
A version becomes champion when :func:`promotion_decision` says it beats the current champion
on the *same* out-of-time test snapshot (the champion is re-scored on the new test cutoffs), or
when a user forces it with ``churnguard promote VERSION --force``. The decision and its reason
are tags on the version (``gate_decision``, ``gate_reason``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"

#: Tolerances of the promotion rule (see :func:`promotion_decision`).
LOG_LOSS_TOL = 0.005  # relative
CLV_MAE_TOL = 0.02  # relative
CLV_GINI_TOL = 0.01  # absolute

#: Run metrics shown by ``churnguard models``.
KEY_METRICS = ("test_churn_roc_auc", "test_churn_log_loss", "test_churn_ece",
               "test_clv_mae", "test_clv_normalized_gini", "test_clv_total_error")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def promotion_decision(new: dict[str, float], champion: dict[str, float] | None) -> Decision:
    """Does the new version beat the champion on the same test snapshot?

    Rule: with no champion, promote. Otherwise the new version must be no worse beyond a small
    tolerance on all three of churn log loss (≤ champion * (1 + 0.5 %)), CLV MAE
    (≤ champion * (1 + 2 %)) and CLV normalized Gini (≥ champion - 0.01), *and* strictly
    better on churn log loss or CLV MAE. Ties stay challenger. Keys: ``churn_log_loss``,
    ``clv_mae``, ``clv_normalized_gini``.
    """
    if champion is None:
        return Decision(True, "no champion yet")
    keys = ("churn_log_loss", "clv_mae", "clv_normalized_gini")
    for key in keys:
        if key not in new or not math.isfinite(new[key]):
            return Decision(False, f"new version has no finite {key}")
        if key not in champion or not math.isfinite(champion[key]):
            return Decision(True, f"champion has no finite {key} on the new test snapshot")
    ll, c_ll = new["churn_log_loss"], champion["churn_log_loss"]
    mae, c_mae = new["clv_mae"], champion["clv_mae"]
    gini, c_gini = new["clv_normalized_gini"], champion["clv_normalized_gini"]
    summary = (f"log loss {ll:.4f} vs {c_ll:.4f}, CLV MAE {mae:.2f} vs {c_mae:.2f}, "
               f"CLV Gini {gini:.3f} vs {c_gini:.3f}")
    worse = []
    if ll > c_ll * (1 + LOG_LOSS_TOL):
        worse.append("churn log loss")
    if mae > c_mae * (1 + CLV_MAE_TOL):
        worse.append("CLV MAE")
    if gini < c_gini - CLV_GINI_TOL:
        worse.append("CLV Gini")
    if worse:
        return Decision(False, f"worse than the champion on {', '.join(worse)} ({summary})")
    if ll < c_ll or mae < c_mae:
        return Decision(True, f"beats the champion ({summary})")
    return Decision(False, f"no better than the champion ({summary})")


def alias_map(client: Any, name: str) -> dict[str, list[str]]:
    """version → aliases of the registered model ``name``."""
    model = client.get_registered_model(name)
    out: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        out.setdefault(str(version), []).append(alias)
    return out


def champion_version(client: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def promote(client: Any, name: str, version: str, *, force: bool = False,
            reason: str | None = None) -> Decision:
    """Point ``champion`` at ``version``.

    Without ``force`` a version whose training-time gate said ``challenger`` is refused (the
    gate compared it with the then champion on its own test snapshot); ``force`` overrides.
    """
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise ValueError(f"model {name!r} has no version {version}") from None
    tags = mv.tags or {}
    if not force and tags.get("gate_decision") == CHALLENGER:
        return Decision(False, "the promotion gate kept this version as challenger: "
                        f"{tags.get('gate_reason', 'no reason recorded')} "
                        "(use --force to promote anyway)")
    client.set_registered_model_alias(name, CHAMPION, str(version))
    why = reason or ("forced by the user" if force else "promoted by the user")
    client.set_model_version_tag(name, str(version), "promoted_reason", why)
    return Decision(True, why)


def list_versions(client: Any, name: str) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first: version, aliases, run, gate tags, key metrics."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = alias_map(client, name)
    except MlflowException:
        return []
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(client.get_run(mv.run_id).data.metrics)
            except MlflowException:
                metrics = {}
        tags = mv.tags or {}
        rows.append({
            "version": str(mv.version),
            "aliases": sorted(aliases.get(str(mv.version), [])),
            "created": int(mv.creation_timestamp or 0),
            "run_id": mv.run_id,
            "as_of": tags.get("as_of", ""),
            "test_cutoff": tags.get("test_cutoff", ""),
            "gate_decision": tags.get("gate_decision", ""),
            "gate_reason": tags.get("gate_reason", ""),
            # Versions registered before labels were tagged are non-contractual.
            "churn_label": tags.get("churn_label", "noncontractual"),
            "metrics": {k: metrics[k] for k in KEY_METRICS if k in metrics},
        })
    rows.sort(key=lambda r: int(r["version"]), reverse=True)
    return rows
