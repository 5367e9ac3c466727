"""Tracking location, promotion by hand, and the versions listing on an embedded store."""

from __future__ import annotations

from pathlib import Path

import pytest

from churnguard.model.registry import Tracking
from churnguard.training.registry import champion_version, list_versions, promote


def test_tracking_resolves_embedded_store_or_given_uri(tmp_path: Path) -> None:
    embedded = Tracking.resolve(tmp_path / "data")
    assert embedded.uri == f"sqlite:///{(tmp_path / 'data').resolve()}/mlflow.db"
    assert embedded.artifact_root == (tmp_path / "data" / "mlartifacts").resolve().as_uri()
    server = Tracking.resolve(tmp_path / "data", "http://mlflow:5000")
    assert server.uri == "http://mlflow:5000" and server.artifact_root is None


def test_promote_respects_the_gate_unless_forced(tmp_path: Path) -> None:
    tracking = Tracking.resolve(tmp_path)
    client = tracking.client()
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=str(tmp_path))
    client.set_model_version_tag("m", "1", "gate_decision", "champion")
    client.set_model_version_tag("m", "2", "gate_decision", "challenger")
    client.set_model_version_tag("m", "2", "gate_reason", "worse on CLV MAE")
    client.set_registered_model_alias("m", "challenger", "2")

    assert champion_version(client, "m") is None
    assert promote(client, "m", "1").promote
    assert champion_version(client, "m") == "1"
    refused = promote(client, "m", "2")
    assert not refused.promote and "worse on CLV MAE" in refused.reason
    assert champion_version(client, "m") == "1"
    assert promote(client, "m", "2", force=True).promote
    assert champion_version(client, "m") == "2"
    with pytest.raises(ValueError, match="no version 9"):
        promote(client, "m", "9")

    rows = list_versions(client, "m")
    assert [r["version"] for r in rows] == ["2", "1"]
    assert rows[0]["aliases"] == ["challenger", "champion"] and rows[1]["aliases"] == []
    assert rows[0]["gate_reason"] == "worse on CLV MAE"
    assert list_versions(client, "unknown-model") == []
