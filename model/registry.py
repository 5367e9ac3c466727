"""Where bundles live: the MLflow tracking/registry location, and reading a registered bundle.

Training registers each bundle as an MLflow pyfunc whose artifact ``bundle`` is the bundle
directory (:mod:`churnguard.model.pyfunc`). :func:`load_bundle` reads that directory's plain
files (JSON and the boosters' native format) from the registry; it never unpickles the pyfunc
wrapper, so moving an alias cannot make a reader run code that came with a model version.
MLflow is imported only when a function here runs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from churnguard.model.bundle import BundleError, ScoringBundle

#: The pyfunc artifact that holds the bundle directory.
BUNDLE_ARTIFACT = "bundle"


@dataclass(frozen=True)
class Tracking:
    """Where runs and models go: a tracking URI and, for the embedded store, an artifact root."""

    uri: str
    artifact_root: str | None = None

    @classmethod
    def resolve(cls, data_dir: Path, tracking_uri: str | None = None) -> Tracking:
        """``tracking_uri`` when given (e.g. ``MLFLOW_TRACKING_URI`` → an ``mlflow server``),
        else the embedded store: ``sqlite:///<data_dir>/mlflow.db`` with artifacts in
        ``<data_dir>/mlartifacts``."""
        if tracking_uri:
            return cls(uri=tracking_uri)
        root = Path(data_dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(uri=f"sqlite:///{root / 'mlflow.db'}",
                   artifact_root=(root / "mlartifacts").as_uri())

    def activate(self) -> None:
        """Point the ``mlflow`` fluent API at this store (call when a command starts)."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self, name: str) -> str:
        client = self.client()
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        location = f"{self.artifact_root}/{name}" if self.artifact_root else None
        return str(client.create_experiment(name, artifact_location=location))


def load_bundle(model_uri: str) -> tuple[ScoringBundle, str]:
    """The bundle behind ``model_uri`` and its version label.

    ``model_uri``: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN_ID/PATH``, a
    local MLflow model directory, or a bundle directory. The label is the registered version
    for ``models:/`` URIs, else the URI. Raises :class:`~churnguard.model.bundle.BundleError`
    when the model is not a churnguard bundle (MLflow's own errors when it cannot be reached).
    """
    local = Path(model_uri)
    if "://" not in model_uri and (local / "bundle.json").is_file():
        return ScoringBundle.load(local), model_uri
    version = _version_of(model_uri)
    # An alias is resolved once, so the bundle read is the version reported even when the
    # alias moves meanwhile.
    concrete = (f"models:/{model_uri.removeprefix('models:/').split('@', 1)[0]}/{version}"
                if version and "@" in model_uri else model_uri)
    with tempfile.TemporaryDirectory(prefix="churnguard-bundle-") as tmp:
        bundle = ScoringBundle.load(_download_bundle(concrete, Path(tmp)))
    return bundle, version or model_uri


def _download_bundle(model_uri: str, dst: Path) -> Path:
    """Download the MLmodel file, find the bundle artifact it names, download only that."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    local = Path(model_uri)
    if "://" not in model_uri and local.is_dir():
        return local / _bundle_path(model_uri, local / "MLmodel")
    repo = get_artifact_repository(model_uri)
    rel = _bundle_path(model_uri, Path(repo.download_artifacts("MLmodel", str(dst))))
    return Path(repo.download_artifacts(str(rel), str(dst)))


def _bundle_path(model_uri: str, mlmodel: Path) -> PurePosixPath:
    """The bundle artifact's path inside the model, from its MLmodel file (read as YAML data)."""
    import yaml

    if not mlmodel.is_file():
        raise BundleError(f"{model_uri} is not an MLflow model (no MLmodel file)")
    try:
        meta = yaml.safe_load(mlmodel.read_text())
    except yaml.YAMLError as exc:
        raise BundleError(f"{model_uri}: unreadable MLmodel file ({exc})") from None
    try:
        rel = meta["flavors"]["python_function"]["artifacts"][BUNDLE_ARTIFACT]["path"]
    except (KeyError, TypeError):
        raise BundleError(f"{model_uri} is not a churnguard model: its MLmodel names no "
                          f"'{BUNDLE_ARTIFACT}' artifact") from None
    path = PurePosixPath(str(rel))
    if path.is_absolute() or ".." in path.parts:
        raise BundleError(f"{model_uri}: the bundle artifact path {rel!r} leaves the model")
    return path


def _version_of(model_uri: str) -> str | None:
    """The registered version a ``models:/`` URI points at (None for other URIs)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri.removeprefix("models:/")
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return str(MlflowClient().get_model_version_by_alias(name, alias).version)
        name, _, version = rest.partition("/")
        return version or None
    except MlflowException:
        return None
