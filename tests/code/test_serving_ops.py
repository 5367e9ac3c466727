"""Unit logic behind the operational checks: the bundle self-check, strict bundle loading, the
public/private split of problems, local registries, the model-info gauge across swaps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from churnguard.model.bundle import BundleError, ScoringBundle
from churnguard.model.registry import Tracking, load_bundle, self_check, self_check_rows


def _edited(src: Path, out: Path, edit: Any) -> Path:
    shutil.copytree(src, out)
    meta = json.loads((out / "bundle.json").read_text())
    edit(meta)
    (out / "bundle.json").write_text(json.dumps(meta))
    return out


def test_self_check_rows_come_from_the_spec(fake_bundle: Any) -> None:
    X = self_check_rows(fake_bundle)
    assert X.shape == (3, len(fake_bundle.feature_names))
    assert (np.nan_to_num(X[0]) == 0).all()


def test_self_check_passes_a_good_bundle_and_leaves_the_fast_path_unchecked(
        fake_bundle_dir: Path) -> None:
    bundle, label = load_bundle(str(fake_bundle_dir))
    assert label == str(fake_bundle_dir) and bundle.fast_path is None


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("scale", float("nan"), "CLV out of range or not finite"),
    ("smear", float("inf"), "scoring raised an error")])
def test_self_check_refuses_non_finite_clv(fake_bundle_dir: Path, tmp_path: Path, field: str,
                                           value: float, reason: str) -> None:
    def edit(meta: dict[str, Any]) -> None:
        meta["clv"][field] = value

    bad = _edited(fake_bundle_dir, tmp_path / "bad", edit)
    with pytest.raises(BundleError) as info:
        load_bundle(str(bad))
    assert info.value.reason == f"failed its self-check ({reason})"
    assert str(bad) not in info.value.reason


def test_self_check_refuses_churn_probabilities_outside_0_1(fake_bundle_dir: Path,
                                                            tmp_path: Path) -> None:
    def edit(meta: dict[str, Any]) -> None:
        meta["calibrator"] = {"method": "isotonic", "a": 1.0, "b": 0.0, "x": [0.0, 1.0],
                              "y": [float("nan"), float("nan")]}

    bundle = ScoringBundle.load(_edited(fake_bundle_dir, tmp_path / "bad", edit))
    with pytest.raises(BundleError) as info:
        self_check(bundle)
    assert info.value.reason == ("failed its self-check (churn probability out of range or "
                                 "not finite)")


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda m: m.pop("spec"), "invalid bundle files"),
    (lambda m: m.update(levels=[1, 2]), "invalid bundle files"),
    (lambda m: m["clv"].update(scale="many"), "invalid bundle files"),
    (lambda m: m.update(format="<script>"), "unsupported bundle format"),
    (lambda m: m.update(format=7), "unsupported bundle format 7"),
])
def test_bundle_json_that_is_not_a_bundle_is_a_bundle_error(fake_bundle_dir: Path,
                                                            tmp_path: Path, edit: Any,
                                                            reason: str) -> None:
    with pytest.raises(BundleError) as info:
        ScoringBundle.load(_edited(fake_bundle_dir, tmp_path / "bad", edit))
    assert info.value.reason == reason


def test_booster_file_that_is_not_xgboost_is_a_bundle_error(fake_bundle_dir: Path,
                                                            tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(fake_bundle_dir, bad)
    (bad / "churn.ubj").write_bytes(b"\x80\x04not a booster")
    with pytest.raises(BundleError) as info:
        ScoringBundle.load(bad)
    assert info.value.reason == "invalid bundle files"


def test_self_check_accepts_a_trained_bundle(small_fitted: Any) -> None:
    self_check(small_fitted.bundle)  # a real fit (slow): no false refusals


@pytest.mark.parametrize(("uri", "local"), [
    ("sqlite:////data/mlflow.db", True), ("file:///data/mlruns", True), ("/data/mlruns", True),
    ("http://mlflow:5000", False), ("https://mlflow.example.com", False),
    ("postgresql://u@db/mlflow", False), ("databricks", False)])
def test_tracking_local(uri: str, local: bool) -> None:
    assert Tracking(uri=uri).local is local


def test_problem_public_text_and_details() -> None:
    from churnguard.serving.model import Problem

    p = Problem("store_unavailable", "the store does not answer", detail="redis://h:1 refused")
    assert p.public() == "store_unavailable: the store does not answer"
    assert p.to_dict()["detail"] == "redis://h:1 refused" and p.to_dict()["since"]


def test_model_info_gauge_follows_swaps_without_clearing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import warnings

    from churnguard.serving.metrics import MULTIPROC_ENV, Metrics

    m = Metrics()
    m.set_model("churnguard", None)
    m.set_model("churnguard", "1")
    m.set_model("churnguard", "2")
    text = m.render().decode()
    assert 'churnguard_model_info{name="churnguard",version="2"} 1.0' in text
    assert 'version="1"' not in text and "churnguard_model_loaded 1.0" in text

    # prometheus_client warns on clear()/remove() in multiprocess mode, on every start.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    mp = Metrics()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mp.set_model("churnguard", None)
        mp.set_model("churnguard", "1")
        mp.set_model("churnguard", "2")


def test_a_policy_given_after_scoring_is_the_one_used(fake_bundle_dir: Path) -> None:
    """Training attaches the policy (catalog + value tiers) to a bundle that has scored
    already; the parsed policy must follow the new dict, not stay cached."""
    from churnguard.model.bundle import ScoringBundle
    from churnguard.model.policy import load_catalog

    bundle = ScoringBundle.load(fake_bundle_dir)
    first = bundle.policy_obj()
    bundle.policy = load_catalog().fit_value_tiers(np.arange(100.0)).to_dict()
    assert bundle.policy_obj() is not first
    assert bundle.policy_obj().value_cuts == load_catalog().fit_value_tiers(
        np.arange(100.0)).value_cuts
    assert bundle.policy_obj() is bundle.policy_obj()  # parsed once per dict
