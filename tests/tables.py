"""Tiny data sources in the data contract, written the way users write them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_source(
    directory: Path, tables: dict[str, pd.DataFrame], fmt: str = "csv"
) -> Path:
    """Write ``tables`` (name → frame) into ``directory`` as CSV or Parquet files."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        if fmt == "csv":
            frame.to_csv(directory / f"{name}.csv", index=False)
        else:
            frame.to_parquet(directory / f"{name}.parquet", index=False)
    return directory


def tiny_tables() -> dict[str, pd.DataFrame]:
    """Three customers with hand-checkable histories around a 2024-05-01 cutoff."""
    customers = pd.DataFrame({
        "customer_id": ["a", "b", "c"],
        "signup_date": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-06-01"]).date,
        "segment": ["x", "y", "x"],
    })
    transactions = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "a", "b", "a", "b"],
        "ts": pd.to_datetime([
            "2024-01-05 10:00", "2024-01-05 12:00", "2024-02-04 09:00", "2024-03-05 09:00",
            "2024-04-04 09:00", "2024-03-01 00:00", "2024-07-01 00:00", "2024-05-10 00:00",
        ]),
        "amount": [10.0, 5.0, 20.0, -5.0, 30.0, 100.0, 50.0, 40.0],
    })
    events = pd.DataFrame({
        "customer_id": ["a", "a", "a", "b", "a"],
        "ts": pd.to_datetime([
            "2024-04-28 10:00", "2024-04-29 10:00", "2024-04-29 11:00", "2024-03-01 00:00",
            "2024-05-02 00:00",
        ]),
        "event_type": ["login", "login", "complaint", "email_open", "login"],
        "count": [1, 2, 1, 1, 1],
    })
    return {"customers": customers, "transactions": transactions, "events": events}
