"""Bad settings stop every command with one clean message: exit 2, each bad variable named with
what is wrong, never its value, no traceback (churnguard/cli.py ``_settings``, which calls
``churnguard.config.load_settings``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnguard.cli import app

runner = CliRunner()
SECRET = "hunter2-not-a-number"
BAD = {"CHURNGUARD_HORIZON_DAYS": SECRET,
       "CHURNGUARD_ONLINE_STORE": f"ftp://crm:{SECRET}@cache:6379/0"}


def _commands(data: str, out: Path) -> list[list[str]]:
    return [
        ["data", "check", "--data", data],
        ["features", "build", "--data", data, "--as-of", "2025-05-01", "--out", str(out)],
        ["features", "grid", "--data", data, "--first", "2024-01-01", "--last", "2024-03-01",
         "--out", str(out)],
        ["features", "list", "--data", data],
        ["train", "--data", data],
        ["models"],
        ["promote", "1"],
        ["score", "--data", data, "--as-of", "2025-05-01", "--out", str(out)],
    ]


def test_every_command_reports_bad_settings_without_values(
        small_demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BAD.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CHURNGUARD_DATA_DIR", str(tmp_path / "store"))
    out = tmp_path / "out.parquet"
    for args in _commands(str(small_demo_dir), out):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        text = result.output
        assert "invalid settings" in text and all(name in text for name in BAD), (args, text)
        assert SECRET not in text and "Traceback" not in text, (args, text)
    assert not out.exists() and not (tmp_path / "store").exists()


def test_the_real_process_prints_one_message(small_demo_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, **BAD, "CHURNGUARD_DATA_DIR": str(tmp_path / "store")}
    done = subprocess.run([sys.executable, "-m", "churnguard.cli", "models"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: invalid settings"), done.stderr
    assert "CHURNGUARD_HORIZON_DAYS" in done.stderr and SECRET not in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
