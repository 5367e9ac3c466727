"""The README's command examples run as written (offline ones), so the documentation stays true.

Every ``churnguard …`` line of the README's bash blocks that needs no server is run in order in a
scratch directory, through the installed console script. Only the demo size is scaled down
(``--customers``) to keep the suite fast; everything else is the README's own text.
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


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("churnguard ") and not line.startswith(NEEDS_SERVER):
                commands.append(line)
    return commands


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
    assert (tmp_path / "data" / "scores.parquet").exists()
    assert (tmp_path / "data" / "grid.parquet").exists()
