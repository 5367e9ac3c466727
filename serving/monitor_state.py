"""The last monitoring verdict: a small JSON summary of the latest ``churnguard monitor`` run,
written by the command (:func:`record_verdict`) and shown by the API in ``GET /v1/model``
(``monitoring``, :class:`VerdictReader`).

The file is replaced atomically (:func:`~churnguard.features.io.atomic_output`), so a reader
sees the previous verdict or the new one, never half a file. A file that cannot be read or is
not a verdict reads as no verdict, with a warning in the log: it never fails a request.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churnguard.features.io import atomic_output

log = logging.getLogger("churnguard.serving")

#: The reasons kept in the summary (the full list is in monitor.json).
MAX_REASONS = 10
VERDICTS = ("ok", "warn", "alert")


def verdict_summary(report: dict[str, Any], *, report_path: Path | None = None,
                    checked_at: datetime | None = None) -> dict[str, Any]:
    """The summary of a ``churnguard monitor`` report (serving/monitor.py) that
    :func:`record_verdict` writes."""
    reasons = [str(r) for r in report.get("reasons", [])]
    psi = (report.get("score") or {}).get("psi")
    return {
        "verdict": str(report["verdict"]),
        "reasons": reasons[:MAX_REASONS],
        "reasons_total": len(reasons),
        "as_of": report.get("as_of"),
        "model_version": None if report.get("model_version") is None
        else str(report["model_version"]),
        "checked_at": (checked_at or datetime.now(UTC)).isoformat(),
        "score_psi": float(psi) if isinstance(psi, int | float) and math.isfinite(psi)
        else None,
        "report_path": str(report_path) if report_path is not None else None,
    }


def record_verdict(report: dict[str, Any], path: Path, *,
                   report_path: Path | None = None) -> None:
    """Write the summary of ``report`` (verdict, first reasons, as_of, model_version,
    checked_at = now in UTC, score_psi, the path of the full monitor.json if known) to
    ``path``, atomically (its folder is created)."""
    body = verdict_summary(report, report_path=report_path)
    with atomic_output(Path(path)) as tmp:
        tmp.write_text(json.dumps(body, indent=2))


def last_verdict(path: Path) -> dict[str, Any] | None:
    """The summary :func:`record_verdict` wrote at ``path``; None when there is none, and
    None with a logged warning when the file cannot be read or is not a verdict."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read the last monitoring verdict %s: %s", path, exc)
        return None
    try:
        body = json.loads(text)
        return _checked(body)
    except (ValueError, TypeError) as exc:
        log.warning("ignoring the last monitoring verdict %s: %s", path, exc)
        return None


def _checked(body: Any) -> dict[str, Any]:
    """``body`` in the shape of ``GET /v1/model``'s ``monitoring``, or ValueError."""
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    if body.get("verdict") not in VERDICTS:
        raise ValueError(f"verdict is not one of {', '.join(VERDICTS)}")
    reasons = body.get("reasons") or []
    if not isinstance(reasons, list):
        raise ValueError("reasons is not a list")
    psi = body.get("score_psi")
    if psi is not None and not (isinstance(psi, int | float) and not isinstance(psi, bool)):
        raise ValueError("score_psi is not a number")

    def text(key: str) -> str | None:
        value = body.get(key)
        return None if value is None else str(value)

    return {"verdict": body["verdict"], "reasons": [str(r) for r in reasons[:MAX_REASONS]],
            "reasons_total": int(body.get("reasons_total", len(reasons))),
            "as_of": text("as_of"), "model_version": text("model_version"),
            "checked_at": text("checked_at"),
            "score_psi": float(psi) if psi is not None and math.isfinite(psi) else None,
            "report_path": text("report_path")}


class VerdictReader:
    """:func:`last_verdict` of ``path``, read again only when the file's modification time
    (or size) changes: one ``stat`` per call otherwise. Thread-safe; never raises."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._value: dict[str, Any] | None = None

    def get(self) -> dict[str, Any] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            key = None
        except OSError as exc:
            log.debug("cannot stat the last monitoring verdict %s: %s", self.path, exc)
            key = None
        else:
            key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if key is None:
                self._key, self._value = None, None
            elif key != self._key:
                try:
                    self._value = last_verdict(self.path)
                except Exception:  # never fail a request over it
                    log.exception("cannot read the last monitoring verdict %s", self.path)
                    self._value = None
                self._key = key  # a bad file is reported once, not on every request
            return self._value
