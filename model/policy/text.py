"""Numbers as the text Python's ``format`` writes, for a whole column at once.

The reasons and the JSON of a batch quote millions of numbers; formatting each with an f-string
was most of the batch job's own work. These functions give, for every element, exactly the
text of the Python expression they name (``format(v, ",.2f")``, ``repr(round(v, 4))``, …) as
an Arrow string array, from integer arithmetic on the numbers and Arrow's string kernels.

Exact where it is easy to be exact: a value is scaled to an integer with one floating-point
multiplication, which can land on the wrong side of a rounding tie only when the scaled value
is within an ulp of a half. Those elements, and non-finite or very large ones, are formatted by
Python itself, so the text never differs from the f-string it replaces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STRING = pa.string()
#: Scaled values below this are exact integers in float64 with at most 15 digits, so the text
#: of a rounded value also reads back (``repr``) as itself.
_EXACT = 1e15


def strings(values: Sequence[str | None]) -> pa.Array:
    """Python strings as an Arrow string array."""
    return pa.array(values, STRING)


def join(*parts: pa.Array | str | None) -> pa.Array:
    """Element-wise concatenation; a null part (or element) adds nothing."""
    cols = [p for p in parts if p is not None]
    return pc.binary_join_element_wise(*cols, "", null_handling="skip")


def _patched(out: pa.Array, bad: np.ndarray, x: np.ndarray,
             fmt: Callable[[float], str]) -> pa.Array:
    """``out`` with the elements where ``bad`` holds formatted by Python (``fmt``)."""
    if not bad.any():
        return out
    texts = np.asarray(out.to_numpy(zero_copy_only=False), dtype=object)
    rows = np.flatnonzero(bad)
    texts[rows] = [fmt(v) for v in x[rows].tolist()]
    return pa.array(texts, STRING)


def _digits(n: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(n, pa.int64()), STRING)


def _grouped(n: np.ndarray) -> pa.Array:
    """Non-negative integers (below 1e15) with thousands separators, as ``f"{n:,}"``."""
    groups = [n % 1000]
    while (rest := n // 1000 ** len(groups)).any():
        groups.append(rest % 1000)
    if len(groups) == 1:
        return _digits(n)
    lead = np.zeros(len(n), dtype=np.int64)  # the highest non-zero group, written unpadded
    for k, g in enumerate(groups):
        lead = np.where(g > 0, k, lead)
    parts: list[pa.Array | str | None] = []
    for k in range(len(groups) - 1, -1, -1):
        g = _digits(groups[k])
        lower = pc.binary_join_element_wise(",", pc.utf8_lpad(g, width=3, padding="0"), "")
        parts.append(pc.if_else(pa.array(lead == k), g,
                                pc.if_else(pa.array(lead > k), lower, None)))
    return join(*parts)


def fixed(x: np.ndarray, digits: int, *, grouped: bool = False,
          plus: bool = False) -> pa.Array:
    """``format(v, f"{'+' if plus else ''}{',' if grouped else ''}.{digits}f")``."""
    x = np.asarray(x, dtype=np.float64)
    spec = f"{'+' if plus else ''}{',' if grouped else ''}.{digits}f"
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.abs(x) * 10.0 ** digits
        bad = ~(scaled < _EXACT)  # NaN and inf too
        if digits:
            half = np.abs(scaled - np.floor(scaled) - 0.5)
            bad |= half <= 2 * np.spacing(np.where(bad, 1.0, scaled))
    r = np.rint(np.where(bad, 0.0, scaled)).astype(np.int64)
    unit = 10 ** digits
    whole = r // unit
    text = _grouped(whole) if grouped else _digits(whole)
    minus = np.signbit(x)
    sign: pa.Array | str = ("+" if plus else "") if not minus.any() else pc.if_else(
        pa.array(minus), "-", "+" if plus else "")
    parts: list[pa.Array | str | None] = [sign, text]
    if digits:
        parts += [".", pc.utf8_lpad(_digits(r % unit), width=digits, padding="0")]
    return _patched(join(*parts), bad, x, lambda v: format(v, spec))


def rounded(x: np.ndarray, digits: int) -> pa.Array:
    """``repr(round(v, digits))``: Python's ``round`` is the correctly rounded decimal, so its
    ``repr`` is :func:`fixed`'s text without trailing zeros (one kept after the point), except
    where ``repr`` switches to an exponent (below 1e-4) and for values too large for
    :func:`fixed` to be exact."""
    x = np.asarray(x, dtype=np.float64)
    text = pc.utf8_rtrim(fixed(x, digits), characters="0")
    text = pc.if_else(pc.ends_with(text, "."), pc.binary_join_element_wise(text, "0", ""),
                      text)
    with np.errstate(invalid="ignore"):
        odd = ((np.abs(x) < 1e-4) & (np.abs(x) >= 0.5 * 10.0 ** -digits)) | ~(
            np.abs(x) * 10.0 ** digits < _EXACT)
    return _patched(text, odd, x, lambda v: repr(round(v, digits)))


def percent(x: np.ndarray) -> pa.Array:
    """``format(v, ".0%")``, which formats ``v * 100`` (one float multiplication) as ``.0f``."""
    x = np.asarray(x, dtype=np.float64)
    return join(fixed(x * 100.0, 0), "%")


def whole(x: np.ndarray, how: str) -> np.ndarray:
    """``round(v)`` (``how="round"``, ties to even) or ``int(v)`` (``"trunc"``) of finite
    values as int64; 0 elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.abs(x) < _EXACT
    r = np.rint(x) if how == "round" else np.trunc(x)
    return np.where(ok, r, 0.0).astype(np.int64)


def counted(x: np.ndarray, word: str, how: str, unknown: str) -> pa.Array:
    """``f"{n} {word}{'s' if n != 1 else ''}"`` with ``n = round(v)`` or ``int(v)``
    (:func:`whole`); ``unknown`` where ``v`` is not finite."""
    x = np.asarray(x, dtype=np.float64)
    n = whole(x, how)
    text = join(_digits(n), f" {word}", pa.array(np.where(n != 1, "s", ""), STRING))
    with np.errstate(invalid="ignore"):
        big = np.isfinite(x) & ~(np.abs(x) < _EXACT)
    text = _patched(text, big, x, lambda v: f"{round(v) if how == 'round' else int(v)} "
                    f"{word}s")
    return pc.if_else(pa.array(np.isfinite(x)), text, unknown)
