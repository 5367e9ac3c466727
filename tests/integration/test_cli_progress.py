"""Off a terminal (cron, CI, a pipe) long commands say what they are doing: a line when a step
starts, counts while it runs, and a heartbeat naming the step when nothing else was logged for
a while (churnguard/cli.py, ``_Steps``)."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from churnguard import cli
from tests.cli import cli_ok

runner = CliRunner()
TRAIN = ["--max-train-cutoffs", "3", "--horizon-days", "60", "--clv-horizon-days", "90"]


class TimedLines(io.TextIOBase):
    """A stderr that is not a terminal and notes when each line arrives."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._part = ""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._part += text
        *done, self._part = self._part.split("\n")
        now = time.monotonic()
        self.lines.extend((now, line) for line in done)
        return len(text)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def largest_gap(self) -> float:
        times = [t for t, _ in self.lines]
        return max(b - a for a, b in itertools.pairwise(times))


@pytest.fixture()
def stderr(monkeypatch: pytest.MonkeyPatch) -> TimedLines:
    """The CLI's stderr console on a non-terminal that timestamps lines; short intervals."""
    lines = TimedLines()
    monkeypatch.setattr(cli, "err", Console(file=lines, soft_wrap=True, width=200))
    monkeypatch.setattr(cli, "HEARTBEAT_SECONDS", 0.3)
    monkeypatch.setattr(cli, "PROGRESS_SECONDS", 0.0)
    return lines



def test_train_off_a_terminal_logs_every_step_and_a_heartbeat_in_long_ones(
        stderr: TimedLines, small_demo_dir: Path, embedded_store: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that runs silent for 4 s (the baselines, slowed down here) is covered by
    heartbeats naming it: no gap between two lines comes near it."""
    import churnguard.training.pipeline as pipeline

    fit_baselines = pipeline.fit_baselines

    def slow_baselines(*args: Any, **kwargs: Any) -> Any:
        time.sleep(4.0)
        return fit_baselines(*args, **kwargs)

    monkeypatch.setattr(pipeline, "fit_baselines", slow_baselines)
    out = cli_ok(["train", "--data", str(small_demo_dir), *TRAIN])
    assert "registered churnguard v1" in out
    text = stderr.text()
    for step in ("snapshot grid …", "snapshot grid: 1/", "fitting churn model",
                 "fitting CLV model", "fitting baselines",
                 "… still working; last step: fitting baselines, ",
                 "registered churnguard v1"):
        assert step in text, step
    grid = [line for _, line in stderr.lines if "snapshot grid: " in line]
    assert "(100%)" in grid[-1]
    assert stderr.largest_gap() < 3.0, stderr.text()
    assert "\r" not in text and "\x1b[" not in text  # no bar drawn on a non-terminal


def test_score_grid_and_demo_data_log_their_counts(stderr: TimedLines, small_demo_dir: Path,
                                                   fake_bundle_dir: Path,
                                                   tmp_path: Path) -> None:
    cli_ok(["score", "--data", str(small_demo_dir), "--as-of", "2025-05-01", "--out",
         str(tmp_path / "s.parquet"), "--model", str(fake_bundle_dir), "--chunk-size", "100"])
    counts = [line.split("scoring customers: ")[1] for _, line in stderr.lines
              if "scoring customers: " in line]
    assert counts[0].startswith("0/") and counts[1].startswith("100/")
    assert "(100%)" in counts[-1] and len(counts) >= 5

    cli_ok(["features", "grid", "--data", str(small_demo_dir), "--first", "2024-01-01",
         "--last", "2024-04-01", "--out", str(tmp_path / "grid.parquet")])
    assert "snapshot grid cutoffs: 4/4 (100%)" in stderr.text()

    cli_ok(["demo-data", "--out", str(tmp_path / "demo"), "--customers", "300", "--seed", "3"])
    assert "generating customers …" in stderr.text()
    assert "generating customers: 300/300 (100%)" in stderr.text()


def test_piped_output_shows_the_progress_lines(tmp_path: Path) -> None:
    """The real process, its output a pipe (as `make demo | cat`): the lines are there."""
    done = subprocess.run(
        [sys.executable, "-m", "churnguard.cli", "demo-data", "--out", str(tmp_path / "d"),
         "--customers", "200", "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "generating customers …" in done.stderr
    assert "generating customers: 200/200 (100%)" in done.stderr
