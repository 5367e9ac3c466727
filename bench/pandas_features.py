"""The pandas reference for the feature benchmark: churnguard's features, written in pandas.

This is the comparison churnguard's DuckDB build is measured against, so it is meant to be what a
competent pandas user would write, not a straw man: Parquet is read with pyarrow (only the
needed columns, the cutoff pushed down as a row filter, ids read as dictionaries), customer ids
become integer codes once, and every aggregate is a vectorised ``groupby`` over those codes (no
Python loop over customers or rows).

It computes the same features with the same names and definitions as
``churnguard.features.definitions`` (as of one cutoff T, from rows strictly before T; windows
are [T - w, T) on calendar days; plus the time of year of T).
``tests/code/test_bench_pandas_parity.py`` checks that both agree value for value on demo data,
which is what makes the timing comparison honest.

Out of scope (churnguard does these as data checks, the reference does not): contract type
checks, dropping exact duplicate rows and rows dated in the future, and subscription features
(the benchmark's demo data has no subscriptions table).

Run: ``python bench/pandas_features.py --data DIR --as-of 2025-07-01 --out features.parquet``
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PURCHASE_WINDOWS = (30, 90, 180, 365)
INTERACTION_WINDOWS = (7, 30, 90)
MAX_EVENT_TYPES = 16
COMPLAINT_TYPES = ("complaint",)
TICKET_TYPES = ("support_ticket",)


def slug(value: str) -> str:
    """Column-name-safe form of an event type (same rule as churnguard)."""
    text = re.sub(r"[^0-9a-zA-Z]+", "_", value.strip().lower()).strip("_")
    return text or "blank"


def _day_numbers(values: pd.Series) -> np.ndarray:
    """Calendar day (days since 1970-01-01) of each timestamp or date."""
    return values.to_numpy().astype("datetime64[D]").astype(np.int64)


def _codes(ids: pd.Series, population: pd.Index) -> np.ndarray:
    """Position of each id in ``population`` (-1 when the customer is not in it)."""
    cat = ids.astype("category") if not isinstance(ids.dtype, pd.CategoricalDtype) else ids
    return cat.cat.set_categories(population).cat.codes.to_numpy()


def _read(path: Path, columns: list[str], before: datetime | None = None) -> pd.DataFrame:
    filters = [("ts", "<", pa.scalar(before, pa.timestamp("s")))] if before else None
    table = pq.read_table(path, columns=columns, filters=filters,
                          read_dictionary=[c for c in ("customer_id", "event_type")
                                           if c in columns])
    return table.to_pandas()


def infer_event_types(data: Path, limit: int = MAX_EVENT_TYPES) -> tuple[str, ...]:
    """The most frequent event types (ties by name), sorted, as churnguard's spec picks them."""
    counts = _read(data / "events.parquet", ["event_type"])["event_type"].value_counts()
    frame = counts.rename("n").rename_axis("event_type").reset_index()
    frame["event_type"] = frame["event_type"].astype(str)
    top = frame.sort_values(["n", "event_type"], ascending=[False, True]).head(limit)
    return tuple(sorted(top["event_type"]))


def attribute_columns(data: Path) -> list[str]:
    """Categorical (string or boolean) customer columns other than the id and signup date."""
    schema = pq.read_schema(data / "customers.parquet")
    return [
        f.name for f in schema
        if f.name not in ("customer_id", "signup_date")
        and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
             or pa.types.is_dictionary(f.type) or pa.types.is_boolean(f.type))
    ]


def _ratio(num: pd.Series | np.ndarray, den: pd.Series | np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den == 0, np.nan, num / den)


def build_features_pandas(
    data: str | Path,
    as_of: date,
    *,
    event_types: Sequence[str] | None = None,
    complaint_types: Sequence[str] = COMPLAINT_TYPES,
    ticket_types: Sequence[str] = TICKET_TYPES,
) -> pd.DataFrame:
    """Features of every customer signed up before ``as_of``, from rows strictly before it."""
    data = Path(data)
    t = int(np.datetime64(as_of, "D").astype(np.int64))
    cutoff = datetime(as_of.year, as_of.month, as_of.day)
    types = tuple(event_types) if event_types is not None else infer_event_types(data)
    attrs = attribute_columns(data)

    # Population: customers who signed up before the cutoff.
    cust = _read(data / "customers.parquet", ["customer_id", "signup_date", *attrs])
    cust = cust[_day_numbers(cust["signup_date"]) < t].drop_duplicates("customer_id")
    population = pd.Index(cust["customer_id"].astype(str), name="customer_id")
    n = len(population)
    tenure = (t - _day_numbers(cust["signup_date"])).astype(np.float64)

    def full(series: pd.Series, fill: float | int = 0) -> np.ndarray:
        """A per-customer aggregate (indexed by code) as an array over the population."""
        return series.reindex(range(n), fill_value=fill).to_numpy()

    out: dict[str, np.ndarray | pd.Series] = {}

    # ---- purchases ------------------------------------------------------------------------
    tx = _read(data / "transactions.parquet", ["customer_id", "ts", "amount"], cutoff)
    code = _codes(tx["customer_id"], population)
    keep = code >= 0
    amount = tx["amount"].to_numpy()[keep]
    tx = pd.DataFrame({"c": code[keep], "day": _day_numbers(tx["ts"])[keep], "net": amount})
    pos = amount > 0
    tx["orders"] = pos.astype(np.int64)
    tx["gross"] = np.where(pos, amount, 0.0)
    tx["refunds"] = (amount < 0).astype(np.int64)
    tx["refund_amount"] = np.where(amount < 0, -amount, 0.0)

    totals = tx.groupby("c", sort=False)[["orders", "gross", "net"]].sum()
    bought = tx.loc[pos].groupby("c", sort=False)["day"].agg(["min", "max"])
    windows = {
        w: tx.loc[tx["day"].to_numpy() >= t - w]
        .groupby("c", sort=False)[["orders", "net", "refunds", "refund_amount"]].sum()
        for w in PURCHASE_WINDOWS
    }

    # Gaps between consecutive distinct purchase days of each customer.
    key = np.unique(tx["c"].to_numpy()[pos] * np.int64(1 << 32) + (tx["day"].to_numpy()[pos]
                                                                    + (1 << 31)))
    pc_code, pc_day = key >> 32, (key & 0xFFFFFFFF) - (1 << 31)
    gap = pd.Series(np.diff(pc_day, prepend=0), dtype=np.float64)
    gap[np.r_[True, pc_code[1:] != pc_code[:-1]]] = np.nan
    gaps = gap.groupby(pc_code, sort=False).agg(["count", "mean", "std"])
    del tx, key, gap

    orders = full(totals["orders"])
    last_purchase = t - full(bought["max"], np.nan)
    out["days_since_last_purchase"] = last_purchase
    out["days_since_first_purchase"] = t - full(bought["min"], np.nan)
    out["tenure_days"] = tenure
    out["orders_total"] = orders
    out["purchase_days_total"] = np.where(orders > 0, full(gaps["count"]) + 1, 0)
    out["spend_total"] = full(totals["net"], 0.0)
    out["avg_order_value"] = _ratio(full(totals["gross"], np.nan), orders)
    for w in PURCHASE_WINDOWS:
        out[f"orders_{w}d"] = full(windows[w]["orders"])
        out[f"spend_{w}d"] = full(windows[w]["net"], 0.0)
    gap_mean = full(gaps["mean"], np.nan)
    out["gap_mean_days"] = gap_mean
    out["gap_std_days"] = full(gaps["std"], np.nan)
    out["overdue_ratio"] = _ratio(last_purchase, gap_mean)
    rate_window = np.clip(tenure, 90, 365)
    out["purchase_trend"] = _ratio(out["orders_90d"] / 90.0,
                                   full(windows[365]["orders"], np.nan) / rate_window)
    # Time of year of the cutoff (the same value for every customer).
    day_of_year = as_of.timetuple().tm_yday
    out["season_sin"] = np.full(n, np.sin(2 * np.pi * day_of_year / 365.25))
    out["season_cos"] = np.full(n, np.cos(2 * np.pi * day_of_year / 365.25))
    out["refunds_365d"] = full(windows[365]["refunds"])
    out["refund_amount_365d"] = full(windows[365]["refund_amount"], 0.0)

    # ---- interactions ---------------------------------------------------------------------
    ev = _read(data / "events.parquet", ["customer_id", "ts", "event_type", "count"], cutoff)
    code = _codes(ev["customer_id"], population)
    keep = code >= 0
    etype = ev["event_type"].astype("category")
    counts = ev["count"].fillna(1).to_numpy(dtype=np.int64)[keep]
    ev = pd.DataFrame({"c": code[keep], "day": _day_numbers(ev["ts"])[keep],
                       "type": etype.cat.codes.to_numpy()[keep],
                       "n": counts})
    categories = list(etype.cat.categories.astype(str))
    del etype

    def type_mask(frame: pd.DataFrame, wanted: Sequence[str]) -> np.ndarray:
        wanted_codes = [i for i, name in enumerate(categories) if name in set(wanted)]
        return np.isin(frame["type"].to_numpy(), wanted_codes)

    last_event = ev.groupby("c", sort=False)["day"].max()
    complaint = type_mask(ev, complaint_types)
    last_complaint = ev.loc[complaint].groupby("c", sort=False)["day"].max()
    year = ev.loc[ev["day"].to_numpy() >= t - 365]
    year_complaints = year.loc[type_mask(year, complaint_types)].groupby("c", sort=False)["n"]
    year_tickets = year.loc[type_mask(year, ticket_types)].groupby("c", sort=False)["n"]
    total_365 = year.groupby("c", sort=False)["n"].sum()
    del ev

    # The last 90 days: per-type counts per window, distinct active days.
    recent = year.loc[year["day"].to_numpy() >= t - 90]
    del year
    by_window: dict[int, pd.DataFrame] = {}
    total: dict[int, pd.Series] = {}
    for w in INTERACTION_WINDOWS:
        rows = recent.loc[recent["day"].to_numpy() >= t - w]
        total[w] = rows.groupby("c", sort=False)["n"].sum()
        by_window[w] = rows.groupby(["c", "type"], sort=False)["n"].sum().unstack(fill_value=0)
    active = recent[["c", "day"]].drop_duplicates()
    active_30 = active.loc[active["day"].to_numpy() >= t - 30].groupby("c", sort=False).size()
    active_90 = active.groupby("c", sort=False).size()
    recent_complaints = recent.loc[type_mask(recent, complaint_types)].groupby("c", sort=False)
    recent_tickets = recent.loc[type_mask(recent, ticket_types)].groupby("c", sort=False)

    for w in INTERACTION_WINDOWS:
        out[f"events_{w}d"] = full(total[w])
        for name in types:
            code_of = categories.index(name) if name in categories else None
            column = by_window[w].get(code_of) if code_of is not None else None
            out[f"{slug(name)}_{w}d"] = (
                full(column) if column is not None else np.zeros(n, dtype=np.int64)
            )
    out["active_days_30d"] = full(active_30)
    out["active_days_90d"] = full(active_90)
    out["days_since_last_interaction"] = t - full(last_event, np.nan)
    out["interaction_trend"] = _ratio(out["events_30d"] / 30.0,
                                      full(total[90], np.nan) / 90.0)
    out["interaction_trend_90_365"] = _ratio(out["events_90d"] / 90.0,
                                             full(total_365, np.nan) / rate_window)
    out["complaints_90d"] = full(recent_complaints["n"].sum())
    out["complaints_365d"] = full(year_complaints.sum())
    out["days_since_last_complaint"] = t - full(last_complaint, np.nan)
    out["tickets_90d"] = full(recent_tickets["n"].sum())
    out["tickets_365d"] = full(year_tickets.sum())

    # ---- attributes -----------------------------------------------------------------------
    for col in attrs:
        values = cust[col]
        if pd.api.types.is_bool_dtype(values):
            values = values.map({True: "true", False: "false"})
        out[col] = values.astype(object).where(values.notna(), None).to_numpy()

    frame = pd.DataFrame(out)
    for name, values_ in out.items():
        if name in attrs:
            continue
        is_int = name not in _FLOAT_FEATURES and not name.startswith("days_since")
        frame[name] = np.asarray(values_, dtype=np.int64 if is_int else np.float64)
    frame.insert(0, "as_of", pd.Timestamp(as_of).as_unit("s"))
    frame.insert(0, "customer_id", population.to_numpy())
    return frame


_FLOAT_FEATURES = frozenset(
    ["tenure_days", "spend_total", "avg_order_value", "gap_mean_days", "gap_std_days",
     "overdue_ratio", "purchase_trend", "season_sin", "season_cos", "refund_amount_365d",
     "interaction_trend", "interaction_trend_90_365"]
    + [f"spend_{w}d" for w in PURCHASE_WINDOWS]
)


def write_features_pandas(data: Path, as_of: date, out: Path) -> int:
    """Build the features and write them to ``out`` as Parquet (zstd), like the CLI does."""
    frame = build_features_pandas(data, as_of)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(1, "as_of", pc.cast(table["as_of"], pa.date32()))
    pq.write_table(table, out, compression="zstd")
    return len(frame)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Directory of Parquet tables.")
    parser.add_argument("--as-of", type=date.fromisoformat, required=True, help="Cutoff date.")
    parser.add_argument("--out", type=Path, required=True, help="Output .parquet file.")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = write_features_pandas(args.data, args.as_of, args.out)
    print(f"wrote {rows:,} customers as of {args.as_of} to {args.out} in "
          f"{time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
