"""The README's command examples run as written, so the documentation stays true.

Every ``churnguard …`` line of the README's bash blocks is run in order in a scratch directory,
through the installed console script; then the README's ``churnguard serve`` line starts the
API on the model just trained and its ``curl`` examples are run against it. Only the demo size
(``--customers``) and the port are changed (to keep the suite fast and the port free);
everything else is the README's own text. Not run: ``make``, ``source`` and ``mlflow ui``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
# Commands that start a server or need one (they are tested through the API tests).
NEEDS_SERVER = ("churnguard serve",)
SMALL_DEMO = "600"


def readme_lines() -> list[str]:
    """Every line of the README's bash blocks, without trailing comments."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    # A line ending in a backslash continues on the next one.
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines()]


def readme_commands() -> list[str]:
    return [line for line in readme_lines()
            if line.startswith("churnguard ") and not line.startswith(NEEDS_SERVER)]


def readme_api_examples() -> tuple[dict[str, str], list[str], list[str]]:
    """The ``churnguard serve`` line (its environment and arguments) and the shell lines of
    the curl examples (variable assignments and curl commands)."""
    (serve,) = [line for line in readme_lines() if "churnguard serve" in line
                and not line.startswith("churnguard")]
    words = shlex.split(serve)
    env = dict(w.split("=", 1) for w in words[:words.index("churnguard")])
    args = words[words.index("churnguard") + 1:]
    shell = [line for line in readme_lines()
             if line.startswith("curl ") or re.match(r"^[A-Z_]+=\S+$", line)]
    return env, args, shell


def test_the_readme_lists_the_main_commands():
    commands = " ".join(readme_commands())
    for verb in ("demo-data", "data check", "features build", "features grid", "train",
                 "models", "score"):
        assert f"churnguard {verb}" in commands


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("churnguard")
    env = {**os.environ, "CHURNGUARD_DATA_DIR": str(tmp_path / "data")}
    env.pop("MLFLOW_TRACKING_URI", None)
    seen = []
    for command in readme_commands():
        if command in seen:
            continue  # the same example repeated in another section
        seen.append(command)
        argv = shlex.split(command)
        if "--customers" in argv:
            argv[argv.index("--customers") + 1] = SMALL_DEMO
        proc = subprocess.run([str(exe), *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        # The README's defaults fit the demo: nothing warns about them. (train on the scaled-down
        # demo may warn about its size, e.g. too few campaign contacts; not about its horizon.)
        output = proc.stdout + proc.stderr
        if argv[1] != "train":
            assert "warning" not in output.lower(), f"{command}\n{output[-2000:]}"
        assert "too short for a purged split" not in output, output[-2000:]
    assert (tmp_path / "data" / "scores.parquet").exists()
    assert (tmp_path / "data" / "grid.parquet").exists()
    _run_api_examples(exe, env, tmp_path)


def _run_api_examples(exe: Path, env: dict[str, str], cwd: Path) -> None:
    """The README's serve line and curl examples, on a free port instead of 8000."""
    import socket
    import time

    import httpx

    serve_env, args, shell = readme_api_examples()
    assert len([line for line in shell if line.startswith("curl ")]) >= 5, shell
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args[args.index("--port") + 1] = str(port)
    log = (cwd / "serve.log").open("w")
    proc = subprocess.Popen([str(exe), *args], cwd=cwd, env={**env, **serve_env},
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (
                cwd / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json().get("ready"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        # curl -f: an HTTP error status fails the line (the README's curl -s hides it).
        script = "\n".join(["set -e", *(line.replace("localhost:8000", f"localhost:{port}")
                                        .replace("curl -s ", "curl -sf ") for line in shell)])
        out = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert '"customer_id":"C0000042"' in out.stdout and '"assignments"' in out.stdout
        assert "churnguard_requests_total" in out.stdout or "# HELP" in out.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
