"""Where bundles live: the MLflow tracking/registry location, and reading a registered bundle.

Training registers each bundle as an MLflow pyfunc whose artifact ``bundle`` is the bundle
directory (:mod:`churnguard.model.pyfunc`, logged from code: no pickle). :func:`load_bundle`
reads that directory's plain files (JSON and the boosters' native format) from the registry;
it never runs or unpickles anything a version holds (a ``python_model.pkl`` or code file is not
even downloaded), so moving an alias cannot make a reader run code that came with a version.
A bundle is accepted only when its files are a valid bundle and it passes :func:`self_check`.
MLflow is imported only when a function here runs, the bundle (XGBoost) only to load one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from churnguard.model.errors import BundleError

if TYPE_CHECKING:  # the bundle imports XGBoost: only loading one needs it
    from churnguard.model.bundle import ScoringBundle

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

    @property
    def local(self) -> bool:
        """Whether the store is a local file (SQLite, a directory), reached without a
        network."""
        if "://" in self.uri:
            return self.uri.split("://", 1)[0] in ("file", "sqlite")
        return self.uri.startswith(("/", ".", "~"))  # a directory; not e.g. "databricks"

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
    when the model is not a churnguard bundle or fails :func:`self_check` (MLflow's own
    errors when it cannot be reached).
    """
    from churnguard.model.bundle import ScoringBundle

    local = Path(model_uri)
    if "://" not in model_uri and (local / "bundle.json").is_file():
        bundle = ScoringBundle.load(local)
        self_check(bundle, model_uri)
        return bundle, model_uri
    version = _version_of(model_uri)
    # An alias is resolved once, so the bundle read is the version reported even when the
    # alias moves meanwhile.
    concrete = (f"models:/{model_uri.removeprefix('models:/').split('@', 1)[0]}/{version}"
                if version and "@" in model_uri else model_uri)
    with tempfile.TemporaryDirectory(prefix="churnguard-bundle-") as tmp:
        bundle = ScoringBundle.load(_download_bundle(concrete, Path(tmp)))
    self_check(bundle, concrete)
    return bundle, version or model_uri


def self_check(bundle: ScoringBundle, label: str = "the bundle") -> None:
    """Score a few synthetic rows built from the bundle's own feature spec
    (:func:`self_check_rows`) through :func:`~churnguard.model.score.score_matrix`, with
    drivers and actions; raise :class:`BundleError` unless every churn probability is in
    [0, 1] and every CLV is finite and non-negative (a bundle that scores NaN must never be
    served or batch-scored)."""
    from churnguard.model.score import score_matrix

    X = self_check_rows(bundle)
    try:
        full = score_matrix(bundle, X, drivers=True)
        full.to_frame()  # tiers, stages, actions and their reasons
    except Exception as exc:  # whatever the files make the scoring path do
        raise BundleError(f"{label} fails its self-check: scoring synthetic rows raised "
                          f"{type(exc).__name__}: {exc}",
                          reason="failed its self-check (scoring raised an error)") from None
    finally:
        # score_matrix verifies its fast path on the first rows it scores: let that be real
        # rows, not these synthetic ones.
        bundle.fast_path = None
    p, clv = np.asarray(full.churn_probability, float), np.asarray(full.clv, float)
    bad = {"churn probability": not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()),
           "CLV": not (np.isfinite(clv).all() and (clv >= 0).all())}
    if any(bad.values()):
        what = " and ".join(k for k, v in bad.items() if v)
        raise BundleError(f"{label} fails its self-check on synthetic rows: churn probabilities "
                          f"{p.tolist()} (must be in [0, 1]), CLVs {clv.tolist()} (must be "
                          "finite and non-negative)",
                          reason=f"failed its self-check ({what} out of range or not finite)")


def self_check_rows(bundle: ScoringBundle) -> np.ndarray:
    """Three encoded rows from the bundle's spec alone: every number 0 with categories
    missing; every number 1 with each category's first level; floats missing (integers 0)
    with each category's last level."""
    enc = bundle.encoder()
    rows: list[dict[str, Any]] = []
    for number, level in ((0, None), (1, 0), (None, -1)):
        row: dict[str, Any] = {}
        for name, kind in zip(enc.names, enc.kinds, strict=True):
            if kind == "category":
                levels = enc.levels[name]
                row[name] = levels[level] if level is not None and levels else None
            elif kind == "int":
                row[name] = number or 0
            else:
                row[name] = None if number is None else float(number)
        rows.append(row)
    return enc.encode_records(rows)


def _download_bundle(model_uri: str, dst: Path) -> Path:
    """Download the MLmodel file, find the bundle artifact it names, download only that."""
    local = Path(model_uri)
    if "://" not in model_uri and local.is_dir():
        return local / _bundle_path(model_uri, local / "MLmodel")
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(model_uri)
    rel = _bundle_path(model_uri, Path(repo.download_artifacts("MLmodel", str(dst))))
    return Path(repo.download_artifacts(str(rel), str(dst)))


def _bundle_path(model_uri: str, mlmodel: Path) -> PurePosixPath:
    """The bundle artifact's path inside the model, from its MLmodel file (read as YAML data)."""
    import yaml

    if not mlmodel.is_file():
        raise BundleError(f"{model_uri} is not an MLflow model (no MLmodel file)",
                          reason="not an MLflow model (no MLmodel file)")
    try:
        meta = yaml.safe_load(mlmodel.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BundleError(f"{model_uri}: unreadable MLmodel file ({exc})",
                          reason="unreadable MLmodel file") from None
    try:
        rel = meta["flavors"]["python_function"]["artifacts"][BUNDLE_ARTIFACT]["path"]
    except (KeyError, TypeError):
        raise BundleError(f"{model_uri} is not a churnguard model: its MLmodel names no "
                          f"'{BUNDLE_ARTIFACT}' artifact",
                          reason=f"not a churnguard model (no '{BUNDLE_ARTIFACT}' artifact)"
                          ) from None
    path = PurePosixPath(str(rel))
    if not isinstance(rel, str) or path.is_absolute() or ".." in path.parts or not path.parts:
        raise BundleError(f"{model_uri}: the bundle artifact path {rel!r} leaves the model",
                          reason="bundle artifact path outside the model")
    return path


def _version_of(model_uri: str) -> str | None:
    """The registered version a ``models:/`` URI points at (None for other URIs)."""
    if not model_uri.startswith("models:/"):
        return None  # without importing MLflow (seconds), which a local model does not need
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    rest = model_uri.removeprefix("models:/")
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return str(MlflowClient().get_model_version_by_alias(name, alias).version)
        name, _, version = rest.partition("/")
        return version or None
    except MlflowException:
        return None
