"""The ``churnguard`` command line: a thin layer over the feature, training and serving functions.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (the data contract or an argument).
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from churnguard.config import Settings

app = typer.Typer(
    name="churnguard",
    help="Churn prediction and customer lifetime value: features, training, scoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
features_app = typer.Typer(help="Point-in-time features, labels and snapshot grids.",
                           no_args_is_help=True)
data_app = typer.Typer(help="Check a data source against the data contract.",
                       no_args_is_help=True)
app.add_typer(features_app, name="features")
app.add_typer(data_app, name="data")

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DataOpt = Annotated[
    str,
    typer.Option("--data", help="Source: a directory of Parquet/CSV files, a DuckDB file, or "
                 "a postgresql:// URL (add ?schema=NAME for a schema other than public)."),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(f"{option} must be a date like 2025-01-31, got {value!r}") from None


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


AllowUnknownOpt = Annotated[bool, typer.Option(
    "--allow-unknown-customers",
    help="Leave out (and report) rows whose customer is not in the customers table instead of "
    "failing.")]


def _open(data: str, settings: Settings, *, check_duplicates: bool = True,
          allow_unknown_customers: bool = False) -> Any:
    from churnguard.features.sources import DataContractError, connect, open_source

    con = connect(settings.duckdb_memory_limit, settings.duckdb_threads)
    try:
        source = open_source(data, con=con, check_duplicates=check_duplicates,
                             allow_unknown_customers=allow_unknown_customers)
    except DataContractError as exc:
        con.close()
        raise _fail(str(exc)) from None
    for issue in source.issues:
        err.print(f"[yellow]warning:[/] {issue}", highlight=False, soft_wrap=True)
    return source


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to create.")],
    customers: Annotated[int, typer.Option("--customers", min=1)] = 10_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    start: Annotated[str, typer.Option("--start", help="First day of the data.")] = "2023-01-01",
    end: Annotated[str, typer.Option("--end", help="Last day of the data (inclusive).")] = "2025-12-31",
    subscriptions: Annotated[bool, typer.Option(
        "--subscriptions/--no-subscriptions",
        help="Also write a subscriptions table (contractual business).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Write realistic synthetic CRM data, with its ground truth, in the data contract.

    Example: churnguard demo-data --out data/demo --customers 20000 --seed 7
    """
    from churnguard.features.demo_data import generate_demo_data

    start_d = _parse_date(start, "--start")
    end_d = _parse_date(end, "--end")
    assert start_d and end_d
    if end_d <= start_d:
        raise _fail("--end must be after --start")
    if fmt not in ("parquet", "csv"):
        raise _fail("--format must be parquet or csv")
    with _progress() as bar:
        task = bar.add_task("generating customers", total=customers)
        try:
            summary = generate_demo_data(
                out_dir, n_customers=customers, seed=seed, start=start_d, end=end_d,
                subscriptions=subscriptions, fmt=fmt,  # type: ignore[arg-type]
                progress=lambda done, total: bar.update(task, completed=done),
            )
        except ValueError as exc:
            raise _fail(str(exc)) from None
    out.print(
        f"wrote {summary.n_customers:,} customers, {summary.n_transactions:,} transactions, "
        f"{summary.n_events:,} events, {summary.n_campaign_contacts:,} campaign contacts to "
        f"{summary.out_dir} in {summary.seconds:.1f}s"
    )


@features_app.command("build")
def features_build(
    data: DataOpt,
    as_of: Annotated[str, typer.Option("--as-of", help="Cutoff date: features use rows "
                                       "strictly before it.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output .parquet or .csv file.")],
    engine: Annotated[str, typer.Option("--engine", help="duckdb (spark: later).")] = "duckdb",
    spec_file: Annotated[Path | None, typer.Option(
        "--spec", help="Feature spec JSON to build (default: inferred from the data).")] = None,
    allow_unknown_customers: AllowUnknownOpt = False,
) -> None:
    """Build point-in-time features of every customer as of a cutoff date.

    Example: churnguard features build --data data/demo --as-of 2025-10-01 --out features.parquet
    """
    from churnguard.features.build import infer_spec, write_features
    from churnguard.features.definitions import FeatureSpec

    settings = Settings()
    cutoff = _parse_date(as_of, "--as-of")
    assert cutoff
    if engine != "duckdb":
        raise _fail(f"unknown --engine {engine!r}; available: duckdb")
    if out_file.suffix.lower() not in (".parquet", ".csv"):
        raise _fail("--out must end in .parquet or .csv")
    with _open(data, settings, allow_unknown_customers=allow_unknown_customers) as source:
        spec = (FeatureSpec.from_dict(json.loads(spec_file.read_text())) if spec_file
                else infer_spec(source))
        summary = write_features(source, spec, cutoff, out_file)
    out.print(f"wrote {summary.n_rows:,} customers × {summary.n_features} features as of "
              f"{cutoff} to {summary.out} in {summary.seconds:.1f}s "
              f"(feature set {spec.version}, spec {summary.spec_fingerprint})")


@features_app.command("grid")
def features_grid(
    data: DataOpt,
    first: Annotated[str, typer.Option("--first", help="First cutoff (month start).")],
    last: Annotated[str, typer.Option("--last", help="Last cutoff; its label window must end "
                                      "within the data.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output .parquet file.")],
    every_months: Annotated[int, typer.Option("--every-months", min=1)] = 1,
    horizon_days: Annotated[int | None, typer.Option("--horizon-days", min=1)] = None,
    clv_horizon_days: Annotated[int | None, typer.Option("--clv-horizon-days", min=1)] = None,
    contractual: Annotated[bool, typer.Option(
        "--contractual/--noncontractual",
        help="Churn = the subscription ends (needs a subscriptions table).")] = False,
    allow_unknown_customers: AllowUnknownOpt = False,
) -> None:
    """Build the snapshot grid: several cutoffs stacked, each with features and labels.

    Example: churnguard features grid --data data/demo --first 2024-01-01 --last 2025-06-01
    --out grid.parquet
    """
    import pyarrow.parquet as pq

    from churnguard.features.build import build_snapshot_grid, infer_spec, monthly_cutoffs
    from churnguard.features.io import atomic_output

    settings = Settings()
    first_d, last_d = _parse_date(first, "--first"), _parse_date(last, "--last")
    assert first_d and last_d
    horizon = horizon_days or settings.horizon_days
    clv_horizon = clv_horizon_days or settings.clv_horizon_days
    cutoffs = monthly_cutoffs(first_d, last_d, every_months)
    if not cutoffs:
        raise _fail("no month start lies between --first and --last")
    with _open(data, settings, allow_unknown_customers=allow_unknown_customers) as source:
        if contractual and not source.has("subscriptions"):
            raise _fail("--contractual needs a subscriptions table in the source")
        end = source.data_end()
        label_end = cutoffs[-1].toordinal() + max(horizon, clv_horizon)
        if end is not None and label_end > end.date().toordinal() + 1:
            err.print(f"[yellow]warning:[/] the label window of the last cutoff "
                      f"({cutoffs[-1]}) runs past the data's last day ({end.date()}): its "
                      "labels are incomplete")
        spec = infer_spec(source)
        with _progress() as bar:
            task = bar.add_task("cutoffs", total=len(cutoffs))
            table = build_snapshot_grid(
                source, spec, cutoffs, horizon_days=horizon, clv_horizon_days=clv_horizon,
                mode="contractual" if contractual else "noncontractual",
                progress=lambda done, total: bar.update(task, completed=done),
            )
        with atomic_output(out_file) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    out.print(f"wrote {table.num_rows:,} rows ({len(cutoffs)} cutoffs) to {out_file}")


@features_app.command("list")
def features_list(
    data: Annotated[str | None, typer.Option(
        "--data", help="Source to infer event types and attributes from.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List every feature with its family, type and description."""
    from churnguard.features.build import infer_spec
    from churnguard.features.definitions import FEATURE_SET_VERSION, FeatureSpec, feature_catalog

    if data:
        with _open(data, Settings(), check_duplicates=False,
                   allow_unknown_customers=True) as source:
            spec = infer_spec(source)
    else:
        spec = FeatureSpec(event_types=("login", "email_open", "complaint", "support_ticket"))
    catalog = feature_catalog(spec)
    if as_json:
        out.print_json(json.dumps({"version": FEATURE_SET_VERSION, "features": catalog}))
        return
    table = Table("name", "family", "type", "description", title=f"feature set "
                  f"{FEATURE_SET_VERSION}")
    for row in catalog:
        table.add_row(row["name"], row["family"], row["kind"], row["description"])
    out.print(table)


@data_app.command("check")
def data_check(data: DataOpt, allow_unknown_customers: AllowUnknownOpt = False) -> None:
    """Check a source against the data contract and report suspicious rows.

    Exit code 2 if the source breaks the contract. Example: churnguard data check --data data/demo
    """
    with _open(data, Settings(), allow_unknown_customers=allow_unknown_customers) as source:
        counts = {t: source.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]  # type: ignore[index]
                  for t in sorted(source.tables)}
        end = source.data_end()
    for table, n in counts.items():
        out.print(f"{table}: {n:,} rows")
    out.print(f"data ends {end}; {len(source.issues)} issue(s) reported")


def main() -> None:  # pragma: no cover - console entry point wrapper
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()

