"""Driving the real CLI in tests: one helper for a command that must succeed, one for the
registered versions as ``churnguard models --json`` lists them."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from churnguard.cli import app

runner = CliRunner()


def cli_ok(args: list[str]) -> str:
    """The output of ``churnguard ARGS``, which must exit 0 (the output and the exception are
    the assertion's message otherwise)."""
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


def registered_versions() -> dict[str, dict[str, Any]]:
    """Every registered version of the model, by version number, from ``models --json``."""
    rows = json.loads(cli_ok(["models", "--json"]))["versions"]
    return {r["version"]: r for r in rows}
