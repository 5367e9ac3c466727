"""The last monitoring verdict (serving/monitor_state.py): what ``churnguard monitor`` records
and ``GET /v1/model`` shows; a missing or corrupt file reads as none."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from churnguard.serving.monitor_state import (
    MAX_REASONS,
    VerdictReader,
    last_verdict,
    record_verdict,
)


def _report(**kw: Any) -> dict[str, Any]:
    base = {"verdict": "warn", "as_of": "2026-02-01", "model_version": "3",
            "reasons": [f"reason {i}" for i in range(14)], "score": {"psi": 0.12},
            "features": [{"name": "x", "psi": 0.5}]}
    return {**base, **kw}


def test_record_verdict_writes_a_summary_that_last_verdict_reads(tmp_path: Path) -> None:
    path = tmp_path / "monitoring" / "last_verdict.json"
    assert last_verdict(path) is None
    record_verdict(_report(), path, report_path=tmp_path / "m" / "monitor.json")
    v = last_verdict(path)
    assert v is not None
    assert v["verdict"] == "warn" and v["as_of"] == "2026-02-01" and v["model_version"] == "3"
    assert v["reasons"] == [f"reason {i}" for i in range(MAX_REASONS)]
    assert v["reasons_total"] == 14 and v["score_psi"] == 0.12
    assert v["report_path"] == str(tmp_path / "m" / "monitor.json")
    assert v["checked_at"].endswith("+00:00")
    assert "features" not in json.loads(path.read_text())  # a summary, not the report
    assert [p.name for p in path.parent.iterdir()] == ["last_verdict.json"]  # no temporaries
    record_verdict(_report(score={"psi": float("nan")}), path)
    assert last_verdict(path)["score_psi"] is None  # type: ignore[index]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"verdict": "great"}',
                                  '{"verdict": "ok", "reasons": "x"}', ""])
def test_a_corrupt_verdict_is_none_with_a_warning(tmp_path: Path, text: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "last_verdict.json"
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="churnguard.serving"):
        assert last_verdict(path) is None
    assert "last monitoring verdict" in caplog.text


def test_the_reader_rereads_only_a_changed_file(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "last_verdict.json"
    reader = VerdictReader(path)
    assert reader.get() is None
    record_verdict(_report(verdict="ok"), path)
    assert reader.get()["verdict"] == "ok"  # type: ignore[index]
    record_verdict(_report(verdict="alert"), path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert reader.get()["verdict"] == "alert"  # type: ignore[index]
    path.write_text("garbage")
    with caplog.at_level(logging.WARNING, logger="churnguard.serving"):
        assert reader.get() is None and reader.get() is None
    assert caplog.text.count("last monitoring verdict") == 1  # once per version of the file
    path.unlink()
    assert reader.get() is None
