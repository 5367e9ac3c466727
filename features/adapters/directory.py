"""A directory of files: ``<table>.parquet``, a ``<table>/`` (or ``<table>.parquet/``) folder of
(hive-partitioned) Parquet files, or ``<table>.csv`` / ``<table>.csv.gz``. A table given in more
than one of these ways breaks the contract (which copy is meant is not for churnguard to guess).

CSV files are read with one fixed dialect, never sniffed (README, "Data contract"): comma
delimiter, double quotes (a quote inside a quoted value doubled), a header line naming the
columns, UTF-8 with or without a byte-order mark, lines ending in LF or CRLF (one kind per file).
Every value is read as text so that the contract check reports values that do not parse, with
examples; a line the reader cannot parse is reported with its number and what is wrong with it.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import duckdb

from churnguard.features.adapters.base import Attached, Explain, create_raw_view, engine_message
from churnguard.features.checks import MAX_EXAMPLES, DataContractError, Problem
from churnguard.features.contract import TABLES
from churnguard.features.sql import literal

# The dialect, as DuckDB's read_csv options (auto_detect off: nothing is guessed).
_CSV_DIALECT = ("header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
                "encoding = 'utf-8', strict_mode = true")
_DIALECT_TEXT = "comma-separated, double quotes, a header line, UTF-8, LF or CRLF line endings"
BOM = b"\xef\xbb\xbf"


def attach(con: duckdb.DuckDBPyConnection, location: str) -> Attached:
    path = Path(location)
    if not path.is_dir():
        raise DataContractError(
            [Problem("source", None, 0, f"{location!r} is not a directory, a DuckDB file or a "
                     "postgresql:// URL")]
        )
    present = set()
    parquet: dict[str, str] = {}
    files: dict[str, str] = {}
    explain: dict[str, Explain] = {}
    problems: list[Problem] = []
    for name in TABLES:
        found = _candidates(path, name)
        if len(found) > 1:
            problems.append(Problem(name, None, 0, (
                f"is given more than once in {location}: {' and '.join(f for f, _ in found)}; "
                "keep one of them (move or rename the others)")))
            continue
        if not found:
            continue
        _, target = found[0]
        files[name] = str(target)
        if target.suffix == ".parquet" and target.is_file():
            parquet[name] = str(target)
            create_raw_view(con, name, f"SELECT * FROM read_parquet({literal(str(target))})")
        elif target.is_dir():
            glob = str(target / "**" / "*.parquet")
            parquet[name] = glob
            create_raw_view(con, name, f"SELECT * FROM read_parquet({literal(glob)}, "
                                       "hive_partitioning = true)")
        else:
            header = _csv_header(name, target)
            if isinstance(header, Problem):
                problems.append(header)
                continue
            create_raw_view(con, name, f"SELECT * FROM {_read_csv(target, header)}")
            explain[name] = _csv_read_problem(header)
        present.add(name)
    if problems:
        raise DataContractError(problems)
    return Attached(location, frozenset(present), parquet, files, explain)


def _candidates(path: Path, name: str) -> list[tuple[str, Path]]:
    """Every way ``name`` is given in ``path``: (how messages show it, the file or folder)."""
    found = []
    for shown in (f"{name}.parquet", f"{name}.csv", f"{name}.csv.gz"):
        if (path / shown).is_file():
            found.append((shown, path / shown))
    for shown in (f"{name}.parquet", name):
        folder = path / shown
        if folder.is_dir() and any(folder.rglob("*.parquet")):
            found.append((f"{shown}/ (a folder of Parquet files)", folder))
    return found


# ---------------------------------------------------------------------------------------------
# CSV


def _open_bytes(file: Path) -> io.BufferedIOBase:
    return gzip.open(file, "rb") if file.suffix == ".gz" else open(file, "rb")


def _csv_header(table: str, file: Path) -> list[str] | Problem:
    """The column names of the header line, or the problem with it."""
    def lines(raw: io.BufferedIOBase) -> Iterator[str]:
        # Decoded one line at a time, as the csv module asks for them: only the header's lines
        # are read (a bad byte further down is the reader's to report, with its line number).
        first = True
        while line := raw.readline():
            yield (line.removeprefix(BOM) if first else line).decode("utf-8")
            first = False

    try:
        with _open_bytes(file) as raw:
            row = next(csv.reader(lines(raw), delimiter=",", quotechar='"', strict=True), None)
    except UnicodeDecodeError:
        return Problem(table, None, 0, f"cannot be read from {file}: the header line is not "
                       "UTF-8 text; save the file as UTF-8")
    except (csv.Error, OSError, EOFError, zlib.error) as exc:
        return Problem(table, None, 0, f"cannot be read from {file}: {exc}")
    if row is None:
        return Problem(table, None, 0, f"the file is empty ({file} has no header line and no "
                       "rows); write the header line and the rows, or remove the file")
    names = [n.strip() or f"column{i}" for i, n in enumerate(row)]
    if not any(n.strip() for n in row):
        return Problem(table, None, 0, f"the first line of {file} is blank; it must be the "
                       "header line naming the columns")
    if len(names) == 1 and any(sep in names[0] for sep in ";\t|"):
        return Problem(table, None, 0, f"the header line of {file} is one column "
                       f"({names[0][:60]!r}): the values must be separated by commas")
    contract = {c.name for c in TABLES[table].columns}
    twice = sorted(n for n, k in Counter(names).items() if k > 1 and n in contract)
    if twice:
        return Problem(table, ", ".join(twice), 0, f"is named more than once in the header line "
                       f"of {file}; keep one column of each name")
    # Other repeated names get a suffix, as extra columns they are ignored anyway.
    seen: Counter[str] = Counter()
    unique = []
    for n in names:
        seen[n] += 1
        unique.append(n if seen[n] == 1 else f"{n}_{seen[n] - 1}")
    return unique


def _read_csv(file: Path, header: list[str], rejects: str | None = None) -> str:
    """The read_csv call reading ``file`` as text columns named by its header."""
    columns = "{" + ", ".join(f"{literal(n)}: 'VARCHAR'" for n in header) + "}"
    extra = (f", store_rejects = true, rejects_table = {literal(rejects)}, "
             f"rejects_scan = {literal(rejects + '_scan')}") if rejects else ""
    return f"read_csv({literal(str(file))}, columns = {columns}, {_CSV_DIALECT}{extra})"


def _csv_read_problem(header: list[str]) -> Explain:
    def explain(con: duckdb.DuckDBPyConnection, table: str, file: str,
                exc: duckdb.Error) -> Problem:
        return _explain_csv(con, table, Path(file), header, exc)
    return explain


_CSV_ERRORS = {
    "TOO MANY COLUMNS": "more values than the header has columns",
    "MISSING COLUMNS": "fewer values than the header has columns",
    "UNQUOTED VALUE": "a quoted value that is not closed (or a stray quote)",
    "INVALID ENCODING": "text that is not UTF-8",
    "LINE SIZE OVER MAXIMUM": "a line longer than the reader's maximum",
    "INVALID STATE": "text the CSV parser cannot read",
}


def _explain_csv(con: duckdb.DuckDBPyConnection, table: str, file: Path, header: list[str],
                 exc: duckdb.Error) -> Problem:
    """Why DuckDB could not read ``file`` (run only after it failed): the lines it cannot parse,
    counted, with examples; or mixed line endings, which stop the reader altogether."""
    rejects = "_churnguard_rejects"
    rows: list[tuple[object, ...]] = []
    try:
        for t in (rejects, f"{rejects}_scan"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
        # A second scan that sets the bad lines aside (in a table) instead of stopping.
        con.execute(f"SELECT count(*) FROM {_read_csv(file, header, rejects)}").fetchall()
        rows = con.execute(f"SELECT line, error_type, error_message FROM {rejects} "
                           "ORDER BY line").fetchall()
    except duckdb.Error:
        endings = _line_endings(file)
        if endings is not None:
            return Problem(table, None, 0, (
                f"{file} mixes line endings: {endings}; save it with one kind of line ending, "
                "LF or CRLF (e.g. with `dos2unix` or an editor's line-ending setting)"))
    finally:
        for t in (rejects, f"{rejects}_scan"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    if not rows:
        return Problem(table, None, 0, f"cannot be read from {file} as CSV "
                       f"({_DIALECT_TEXT}): {engine_message(exc)}")
    first: dict[int, tuple[str, str]] = {}  # line → its first error (type, message)
    for line, kind, message in rows:
        first.setdefault(int(str(line)), (str(kind), str(message)))
    lines = sorted(first)
    examples = tuple(
        f"line {line}: {_CSV_ERRORS.get(first[line][0], first[line][1].split('. ')[0])}"
        for line in lines[:MAX_EXAMPLES])
    noun = "line" if len(lines) == 1 else "lines"
    return Problem(table, None, 0, (
        f"{len(lines):,} {noun} of {file} cannot be read as CSV ({_DIALECT_TEXT}); fix or "
        f"remove {'it' if len(lines) == 1 else 'them'}"), examples)


def _line_endings(file: Path) -> str | None:
    """A description of the line endings if ``file`` mixes CRLF and bare LF, else None."""
    crlf = lf = 0
    first_lf = first_crlf = 0
    line = 0
    prev = b""
    with _open_bytes(file) as f:
        while chunk := f.read(1 << 20):
            start = 0
            while (i := chunk.find(b"\n", start)) != -1:
                line += 1
                before = chunk[i - 1:i] if i else prev
                if before == b"\r":
                    crlf += 1
                    first_crlf = first_crlf or line
                else:
                    lf += 1
                    first_lf = first_lf or line
                start = i + 1
            prev = chunk[-1:]
    if not (crlf and lf):
        return None
    return (f"{crlf:,} lines end in CRLF (the first is line {first_crlf}) and {lf:,} in LF "
            f"alone (the first is line {first_lf})")
