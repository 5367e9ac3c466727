"""The project as the image ships it: a wheel built from exactly what the Dockerfile copies,
installed into a fresh virtual environment, started with the Dockerfile's ENTRYPOINT/CMD and
ENV (read from the Dockerfile, so they cannot drift) against a small registered model, and
answering /healthz and /readyz; the image's HEALTHCHECK command passes too.

Third-party dependencies come read-only from the running (dev) environment: a ``.pth`` line
appends its site-packages *after* the fresh venv's own, so ``churnguard`` itself is imported
from the wheel (asserted) while numpy, mlflow, xgboost … are not reinstalled (that takes
minutes on two cores). Every requirement of the wheel is checked against what is importable.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import venv
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_dockerfile import DOCKERFILE, ROOT, runtime_env, stages
from tests.integration.test_notebooks import register_champion

API_KEY = "fresh-venv-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _context(dest: Path) -> Path:
    """The Docker build context as the builder stage sees it: the files its COPY lines name."""
    dest.mkdir(parents=True, exist_ok=True)
    for kind, args in stages()[0]:
        if kind != "COPY" or args.startswith("--from"):
            continue
        *srcs, _ = args.split()
        for src in srcs:
            path = ROOT / src.rstrip("/")
            if path.is_dir():
                shutil.copytree(path, dest / path.name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, dest / path.name)
    return dest


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fresh-venv")
    src = _context(tmp / "context")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--wheel-dir", str(wheels), str(src)], check=True, timeout=300)
    wheel = next(wheels.glob("churnguard-*.whl"))
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True, text=True
                               ).stdout.strip())
    # Read-only base for third-party packages, after the venv's own site-packages.
    (site / "zz_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "--no-index", "--quiet", "--no-compile", str(wheel)], check=True,
                   timeout=300)
    return env_dir


def test_wheel_installs_and_imports_from_itself(fresh_venv: Path) -> None:
    py = fresh_venv / "bin" / "python"
    code = """
import importlib, json
from importlib import metadata
from packaging.requirements import Requirement
mods = {m: importlib.import_module(m).__file__ for m in (
    "churnguard.cli", "churnguard.features.build", "churnguard.training.pipeline",
    "churnguard.model.score", "churnguard.serving.app")}
missing = []
for r in metadata.requires("churnguard") or []:
    req = Requirement(r)
    if req.marker and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        v = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        missing.append(f"{req} (not installed)"); continue
    if not req.specifier.contains(v, prereleases=True):
        missing.append(f"{req} (have {v})")
import churnguard.model
res = list(__import__("importlib.resources").resources.files("churnguard.model").iterdir())
print(json.dumps({"mods": mods, "missing": missing,
                  "yaml": sorted(p.name for p in res if p.name.endswith(".yaml"))}))
"""
    out = json.loads(subprocess.run([str(py), "-c", code], check=True, capture_output=True,
                                    text=True, cwd=fresh_venv, timeout=180).stdout)
    for mod, file in out["mods"].items():
        assert file.startswith(str(fresh_venv)), f"{mod} imported from {file}, not the wheel"
    assert not out["missing"], f"unsatisfied requirements: {out['missing']}"
    assert "actions.yaml" in out["yaml"], "package data missing from the wheel"
    assert (fresh_venv / "bin" / "churnguard").is_file(), "console script not installed"


@pytest.fixture(scope="module")
def served_store(fake_bundle: Any, small_source: Any,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What would be mounted at the image's /data: an embedded MLflow store with a champion
    (the session's fake-fit bundle: serving needs *a* fitted model, not a good one) and the
    feature snapshot."""
    from churnguard.features.build import write_features

    data_dir = tmp_path_factory.mktemp("image-data")
    mp = pytest.MonkeyPatch()
    try:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
                    "CHURNGUARD_MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        register_champion(fake_bundle, data_dir)
    finally:
        mp.undo()
    write_features(small_source, fake_bundle.spec,
                   date.fromisoformat(fake_bundle.metadata["as_of"]),
                   data_dir / "features.parquet")
    return data_dir


def _image_command() -> list[str]:
    runtime = stages()[-1]
    entry = [json.loads(a) for k, a in runtime if k == "ENTRYPOINT"][-1]
    cmd = [json.loads(a) for k, a in runtime if k == "CMD"]
    return [*entry, *(cmd[-1] if cmd else [])]


def _get(url: str, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_service_starts_like_the_image(fresh_venv: Path, served_store: Path,
                                       tmp_path: Path) -> None:
    bin_dir = fresh_venv / "bin"
    image_env = runtime_env(DOCKERFILE)
    port = _free_port()
    env = {
        # A clean environment: only what the image sets, plus the deployment's configuration.
        "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "LANG": "C.UTF-8",
        **{k: v.replace("/opt/venv/bin", str(bin_dir)).replace("$PATH", "/usr/bin:/bin")
           for k, v in image_env.items()},
        "CHURNGUARD_DATA_DIR": str(served_store),  # the volume mounted at /data
        "CHURNGUARD_API_KEYS": API_KEY,
        "CHURNGUARD_PORT": str(port),  # 8000 may be taken on a test machine
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
    }
    assert env["PATH"].startswith(str(bin_dir))
    command = _image_command()
    assert command[:2] == ["churnguard", "serve"]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(bin_dir / command[0]), *command[1:]], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready: tuple[int, dict[str, Any]] | None = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"churnguard serve exited:\n{_tail(tmp_path)}"
            try:
                ready = _get(base + "/readyz", timeout=2)
                if ready[0] == 200:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        assert ready and ready[0] == 200, f"/readyz: {ready}\n{_tail(tmp_path)}"
        assert ready[1]["ready"] is True and ready[1]["status"] == "ok", ready
        assert ready[1]["model_version"] == "1"
        assert _get(base + "/healthz") == (200, {"status": "ok"})

        # The image's HEALTHCHECK, run as Docker would (its CMD array, the image's python).
        health = " ".join(a for k, a in stages()[-1] if k == "HEALTHCHECK")
        check = json.loads(health[health.index("CMD") + 3:].strip())
        check[0] = str(bin_dir / check[0])
        assert subprocess.run(check, env=env, timeout=30).returncode == 0

        # Both workers answer an authenticated request with the served model.
        req = urllib.request.Request(base + "/v1/model", headers={"X-API-Key": API_KEY})
        for _ in range(N_MODEL_REQUESTS):
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert json.loads(resp.read())["version"] == "1"
        # Whichever worker answers the scrape, it counts every worker's requests.
        assert image_env.get("CHURNGUARD_WORKERS", "1") != "1"
        for _ in range(4):
            with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
                text = resp.read().decode()
            assert _counter(text, "churnguard_http_requests_total", 'route="/v1/model"',
                            'status="200"') == N_MODEL_REQUESTS, text[:3000]
            assert 'churnguard_model_loaded{pid="' in text
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
        log.close()
    # The whole log: with an access-log line per request, the start is far from its tail.
    text = (tmp_path / "serve.log").read_text()
    assert "Uvicorn running" in text or "Started" in text, _tail(tmp_path)


N_MODEL_REQUESTS = 12


def _counter(text: str, name: str, *labels: str) -> float:
    """The value of the sample of counter ``name`` whose labels include all ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(lb in line for lb in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _tail(tmp_path: Path) -> str:
    return (tmp_path / "serve.log").read_text()[-4000:]
