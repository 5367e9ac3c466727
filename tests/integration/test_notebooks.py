"""The notebooks run top to bottom on small demo data and a small registered champion, and are
stored without outputs.

The notebooks read their inputs from environment variables (``CHURNGUARD_NOTEBOOK_DATA``: the
data source; ``CHURNGUARD_DATA_DIR`` / ``MLFLOW_TRACKING_URI``: the MLflow store), which the
kernel inherits from this process.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("01_explore_customers.ipynb", "02_model_report.ipynb")
CELL_TIMEOUT = 180  # seconds per cell


def register_champion(fitted: Any, data_dir: Path, name: str = "churnguard") -> str:
    """Register a fitted bundle (with the default action policy, value tiers fixed on its test
    predictions) as ``name@champion`` in the embedded MLflow store of ``data_dir``, in a run
    that carries the test metrics of the model and its baselines, as ``churnguard train``
    logs them."""
    import mlflow

    from churnguard.model.policy import load_catalog
    from churnguard.model.pyfunc import ChurnguardPyfunc
    from churnguard.model.registry import Tracking

    bundle = fitted.bundle
    if bundle.policy is None:
        bundle.policy = load_catalog().fit_value_tiers(fitted.clv_preds["churnguard"]).to_dict()
    tracking = Tracking.resolve(data_dir)
    tracking.activate()
    with mlflow.start_run(experiment_id=tracking.experiment_id("notebook-tests")) as run, \
            tempfile.TemporaryDirectory() as tmp:
        # MLflow metric names allow [\w\-./ :] only.
        mlflow.log_metrics({re.sub(r"[^\w\-./ :]", "_", k): float(v)
                            for k, v in fitted.metrics.items()})
        mlflow.log_params({"as_of": fitted.as_of.isoformat(),
                           "churn_test_cutoff": fitted.churn_plan.test.isoformat(),
                           "clv_test_cutoff": fitted.clv_plan.test.isoformat()})
        bundle.metadata["run_id"] = run.info.run_id
        bundle_dir = bundle.save(Path(tmp) / "bundle")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ChurnguardPyfunc(), artifacts={"bundle": str(bundle_dir)},
            registered_model_name=name, pip_requirements=["churnguard"])
    version = str(info.registered_model_version)
    tracking.client().set_registered_model_alias(name, "champion", version)
    return version


@pytest.fixture(scope="module")
def notebook_store(small_fitted: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded MLflow store whose champion is the session's small fitted model."""
    data_dir = tmp_path_factory.mktemp("notebook-store")
    mp = pytest.MonkeyPatch()
    try:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
                    "CHURNGUARD_MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        register_champion(small_fitted, data_dir)
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


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, small_demo_dir: Path, notebook_store: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CHURNGUARD_MLFLOW_TRACKING_URI",
                "CHURNGUARD_MODEL_NAME", "CHURNGUARD_MODEL_ALIAS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CHURNGUARD_NOTEBOOK_DATA", str(small_demo_dir))
    monkeypatch.setenv("CHURNGUARD_DATA_DIR", str(notebook_store))
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
