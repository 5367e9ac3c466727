"""The notebooks run top to bottom on small demo data (the model report on a small registered
champion from a real training run), and are stored without outputs.

The notebooks read their inputs from environment variables (``CHURNGUARD_NOTEBOOK_DATA``: the
data source; ``CHURNGUARD_DATA_DIR`` / ``MLFLOW_TRACKING_URI``: the MLflow store), which the
kernel inherits from this process.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("01_explore_customers.ipynb", "02_model_report.ipynb")
#: Notebooks that load the champion and report its training run's test metrics beside the
#: baselines': they need a real training fit (``small_fitted``, slow). The others read only
#: the data.
NEEDS_TRAINING_RUN = frozenset({"02_model_report.ipynb"})
CELL_TIMEOUT = 180  # seconds per cell


def register_champion(bundle: Any, data_dir: Path, *, metrics: dict[str, float] | None = None,
                      params: dict[str, str] | None = None, name: str = "churnguard") -> str:
    """Register ``bundle`` as ``name@champion`` in the embedded MLflow store of ``data_dir``, in
    a run that carries ``metrics`` and ``params`` (a training run's test metrics of the model
    and its baselines, as ``churnguard train`` logs them; see :func:`trained_champion`). The
    bundle object is not modified (the registered copy gets the run id in its metadata)."""
    import mlflow

    from churnguard.model.pyfunc import ChurnguardPyfunc
    from churnguard.model.registry import Tracking

    tracking = Tracking.resolve(data_dir)
    tracking.activate()
    with mlflow.start_run(experiment_id=tracking.experiment_id("notebook-tests")) as run, \
            tempfile.TemporaryDirectory() as tmp:
        # MLflow metric names allow [\w\-./ :] only.
        if metrics:
            mlflow.log_metrics({re.sub(r"[^\w\-./ :]", "_", k): float(v)
                                for k, v in metrics.items()})
        if params:
            mlflow.log_params(params)
        registered = copy.copy(bundle)
        registered.metadata = {**bundle.metadata, "run_id": run.info.run_id}
        bundle_dir = registered.save(Path(tmp) / "bundle")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ChurnguardPyfunc(), artifacts={"bundle": str(bundle_dir)},
            registered_model_name=name, pip_requirements=["churnguard"])
    version = str(info.registered_model_version)
    tracking.client().set_registered_model_alias(name, "champion", version)
    return version


def trained_champion(fitted: Any) -> tuple[Any, dict[str, float], dict[str, str]]:
    """(bundle, metrics, params) of a real training run (``Fitted``) for
    :func:`register_champion`: the bundle with the default action policy, value tiers fixed on
    its test predictions, and the run's test metrics and cutoffs."""
    from churnguard.model.policy import load_catalog

    bundle = fitted.bundle
    if bundle.policy is None:
        bundle.policy = load_catalog().fit_value_tiers(fitted.clv_preds["churnguard"]).to_dict()
    params = {"as_of": fitted.as_of.isoformat(),
              "churn_test_cutoff": fitted.churn_plan.test.isoformat(),
              "clv_test_cutoff": fitted.clv_plan.test.isoformat()}
    return bundle, dict(fitted.metrics), params


def _clean_mlflow_env() -> pytest.MonkeyPatch:
    mp = pytest.MonkeyPatch()
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CHURNGUARD_MLFLOW_TRACKING_URI"):
        mp.delenv(var, raising=False)
    return mp


@pytest.fixture(scope="module")
def notebook_store(small_fitted: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded MLflow store whose champion is the session's small *trained* model, in a run
    with its real test metrics: the model report compares them with the baselines'."""
    data_dir = tmp_path_factory.mktemp("notebook-store")
    bundle, metrics, params = trained_champion(small_fitted)
    mp = _clean_mlflow_env()
    try:
        register_champion(bundle, data_dir, metrics=metrics, params=params)
    finally:
        mp.undo()
    return data_dir


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name: str) -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{name}: code cells {dirty} have outputs or execution counts; clear "
                       "them before committing (Jupyter: Edit > Clear Outputs of All Cells)")
    assert "widgets" not in nb.metadata, f"{name}: widget state stored in the metadata"
    assert nb.cells[0].cell_type == "markdown", f"{name} should open with an explanation"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in NEEDS_TRAINING_RUN else n for n in NOTEBOOKS])
def test_notebook_runs(name: str, small_demo_dir: Path, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CHURNGUARD_MLFLOW_TRACKING_URI",
                "CHURNGUARD_MODEL_NAME", "CHURNGUARD_MODEL_ALIAS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CHURNGUARD_NOTEBOOK_DATA", str(small_demo_dir))
    # Only the model report reads a store (the real fit happens only for it); the others get
    # an empty data dir, so they cannot depend on a model by accident.
    store = (request.getfixturevalue("notebook_store") if name in NEEDS_TRAINING_RUN
             else tmp_path / "no-store")
    monkeypatch.setenv("CHURNGUARD_DATA_DIR", str(store))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{name} failed:\n{exc}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
    assert images >= 4, f"{name} drew only {images} figure(s)"
