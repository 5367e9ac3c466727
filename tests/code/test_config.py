"""Settings: strict values, and errors that name the variable and never repeat its value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from churnguard.config import Settings, SettingsError, load_settings, memory_limit
from churnguard.features.sources import connect

SECRET = "s3cr3t-passw0rd-do-not-print"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CHURNGUARD_") or name == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(name)


def test_bad_settings_are_one_message_naming_each_variable_without_its_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: a bad CHURNGUARD_* variable gave pydantic's traceback, input values included
    # (a Redis URL's password, an API key).
    monkeypatch.setenv("CHURNGUARD_ONLINE_STORE", f"postgres://crm:{SECRET}@db/crm")
    monkeypatch.setenv("CHURNGUARD_PORT", f"80{SECRET}")
    monkeypatch.setenv("CHURNGUARD_LOG_LEVEL", SECRET)
    monkeypatch.setenv("CHURNGUARD_DUCKDB_MEMORY_LIMIT", f"1GB'; {SECRET}")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    text = str(exc.value)
    assert SECRET not in text and "input_value" not in text
    assert isinstance(exc.value, ValueError)
    assert [name for name, _ in exc.value.problems] == [
        "CHURNGUARD_DUCKDB_MEMORY_LIMIT", "CHURNGUARD_PORT", "CHURNGUARD_ONLINE_STORE",
        "CHURNGUARD_LOG_LEVEL"]
    assert text.splitlines()[0] == "invalid settings:"
    assert "  - CHURNGUARD_PORT: Input should be a valid integer" in text
    assert "  - CHURNGUARD_DUCKDB_MEMORY_LIMIT: expected a size such as 1536MB" in text
    assert "Traceback" not in text and "pydantic" not in text


def test_an_aliased_variable_is_named_by_its_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNGUARD_HORIZON_DAYS", "0")
    monkeypatch.setenv("CHURNGUARD_MODEL_NAME", "")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert dict(exc.value.problems) == {
        "CHURNGUARD_HORIZON_DAYS": "Input should be greater than or equal to 1",
        "CHURNGUARD_MODEL_NAME": "String should have at least 1 character"}


def test_good_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNGUARD_DUCKDB_MEMORY_LIMIT", "2gb")
    settings = load_settings()
    assert isinstance(settings, Settings) and settings.duckdb_memory_limit == "2GB"


@pytest.mark.parametrize(("value", "expected"), [
    ("1536MB", "1536MB"), ("2GB", "2GB"), (" 4GiB ", "4GIB"), ("1.5gb", "1.5GB"),
    ("75%", "75%"), ("512 MB", "512MB"),
])
def test_memory_limit_accepts_sizes_and_shares(value: str, expected: str) -> None:
    assert memory_limit(value) == expected


@pytest.mark.parametrize("value", [
    "", "lots", "2", "GB", "0MB", "0%", "150%", "-1GB", "1e3MB", "2 G B", "1GB; SELECT 1",
    "1GB'; COPY (SELECT 42) TO 'x.csv'; SELECT '1B",
])
def test_memory_limit_rejects_anything_else(value: str) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        memory_limit(value)


def test_connect_hands_settings_to_duckdb_as_options_never_as_sql(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: CHURNGUARD_DUCKDB_MEMORY_LIMIT reached a SET statement as SQL text.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="expected a size"):
        connect("1GB'; COPY (SELECT 42) TO 'x.csv'; SELECT '1B")
    with pytest.raises(ValueError, match="threads"):
        connect("1GB", threads=0)
    assert list(tmp_path.iterdir()) == []
    # A temp directory whose path holds quotes is an option value like any other.
    quoted = tmp_path / "it's \"tmp\""
    quoted.mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(quoted))
    con = connect("75%", threads=1)
    try:
        row = con.execute("SELECT current_setting('threads'), current_setting('temp_directory'), "
                          "current_setting('TimeZone')").fetchall()[0]
    finally:
        con.close()
    assert row[0] == 1 and str(row[1]).startswith(str(quoted)) and row[2] == "UTC"
