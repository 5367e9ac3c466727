"""The ``churnguard`` command line: a thin layer over the feature, training and serving functions.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (the data contract or an argument).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
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


@contextlib.contextmanager
def _open(data: str, settings: Settings, *, thorough: bool = False,
          allow_unknown_customers: bool = False) -> Iterator[Any]:
    """Open a source; contract violations anywhere inside the block exit with code 2."""
    from churnguard.features.sources import DataContractError, connect, open_source

    con = connect(settings.duckdb_memory_limit, settings.duckdb_threads)
    try:
        source = open_source(data, con=con, thorough=thorough,
                             allow_unknown_customers=allow_unknown_customers)
        yield source
        for issue in source.issues:
            err.print(f"[yellow]warning:[/] {issue}", highlight=False)
    except DataContractError as exc:
        raise _fail(str(exc)) from None
    finally:
        con.close()


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to create.")],
    customers: Annotated[int, typer.Option("--customers", min=1)] = 10_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    start: Annotated[str, typer.Option("--start", help="First day of the data.")] = "2023-01-01",
    end: Annotated[str, typer.Option(
        "--end", help="Last day of the data (inclusive).")] = "2025-12-31",
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
                else infer_spec(source, as_of=cutoff))
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
        with _open(data, Settings(), allow_unknown_customers=True) as source:
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
    from datetime import timedelta

    from churnguard.features.build import infer_spec, materialize_features

    with _open(data, Settings(), thorough=True,
               allow_unknown_customers=allow_unknown_customers) as source:
        counts = {t: source.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                  for t in sorted(source.tables)}
        end = source.data_end()
        if end is not None:
            # The checks that ride along in the feature aggregation, over every row.
            materialize_features(source, infer_spec(source), end.date() + timedelta(days=1))
    for table, n in counts.items():
        out.print(f"{table}: {n:,} rows")
    out.print(f"data ends {end}; {len(source.issues)} issue(s) reported")


def _tracking(settings: Settings) -> Any:
    from churnguard.training.registry import Tracking

    return Tracking.resolve(settings.data_dir, settings.mlflow_tracking_uri)


@app.command("train")
def train_cmd(
    data: DataOpt,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Train only on rows strictly before this date; every label window ends "
        "on or before it (default: the day after the last row).")] = None,
    horizon_days: Annotated[int | None, typer.Option(
        "--horizon-days", min=1,
        help="Churn window after each cutoff (default: settings).")] = None,
    clv_horizon_days: Annotated[int | None, typer.Option(
        "--clv-horizon-days", min=1,
        help="CLV window (default: settings; shortened with a warning when the data is too "
        "short for a purged split).")] = None,
    experiment: Annotated[str | None, typer.Option(
        "--experiment", help="MLflow experiment name (default: settings).")] = None,
    max_train_cutoffs: Annotated[int, typer.Option(
        "--max-train-cutoffs", min=1, help="Most recent monthly training cutoffs to use.")] = 24,
    refit: Annotated[bool, typer.Option(
        "--refit/--no-refit", help="Refit the churn model on train + validation snapshots.")
    ] = True,
    allow_unknown_customers: AllowUnknownOpt = False,
) -> None:
    """Train the churn + CLV models and baselines, log them to MLflow, register a version.

    The new version gets the alias 'challenger'; it becomes 'champion' only if it beats the
    current champion on the same out-of-time test snapshot.

    Example: churnguard train --data data/demo --as-of 2025-12-01 --horizon-days 90
    """
    from churnguard.training.data import PlanError
    from churnguard.training.pipeline import TrainConfig, train

    settings = Settings()
    cutoff = _parse_date(as_of, "--as-of")
    config = TrainConfig(
        horizon_days=horizon_days or settings.horizon_days,
        clv_horizon_days=clv_horizon_days or settings.clv_horizon_days,
        clv_horizon_auto=clv_horizon_days is None,
        max_train_cutoffs=max_train_cutoffs, refit=refit,
        experiment=experiment or settings.experiment, model_name=settings.model_name,
    )
    with _open(data, settings, allow_unknown_customers=allow_unknown_customers) as source, \
            _progress() as bar:
        task = bar.add_task("snapshot grid", total=None)
        try:
            result = train(
                source, _tracking(settings), as_of=cutoff, config=config,
                say=lambda m: err.print(m, highlight=False, soft_wrap=True),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except PlanError as exc:
            raise _fail(str(exc)) from None
    m = result.metrics
    table = Table("model", "ROC AUC", "log loss", "ECE", "lift@10", "CLV MAE", "CLV Gini",
                  "CLV total err", title=f"test snapshot {result.churn_plan.test} "
                  f"(CLV {result.clv_plan.test})")
    for label, churn, clv in (("churnguard", "test_churn_", "test_clv_"),
                              ("logreg", "test_baseline_logreg_churn_", None),
                              ("BG/NBD+GG", "test_baseline_btyd_churn_",
                               "test_baseline_btyd_clv_")):
        def f(key: str | None, fmt: str = "{:.3f}") -> str:
            return fmt.format(m[key]) if key and key in m else "-"
        table.add_row(label, f(churn + "roc_auc"), f(churn + "log_loss"), f(churn + "ece"),
                      f(churn + "lift_at_10", "{:.2f}"),
                      f(clv and clv + "mae", "{:,.1f}"), f(clv and clv + "normalized_gini"),
                      f(clv and clv + "total_error", "{:+.1%}"))
    out.print(table)
    out.print(f"registered {settings.model_name} v{result.version} "
              f"({'champion' if result.promoted else 'challenger'}: {result.reason}); "
              f"run {result.run_id}")


@app.command("promote")
def promote_cmd(
    version: Annotated[str, typer.Argument(help="Model version to make champion.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Promote even if the training-time gate kept it as challenger.")] = False,
) -> None:
    """Point the 'champion' alias at a model version.

    Example: churnguard promote 3 --force
    """
    from churnguard.training.registry import promote

    settings = Settings()
    tracking = _tracking(settings)
    try:
        decision = promote(tracking.client(), settings.model_name, version, force=force)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if not decision.promote:
        raise _fail(f"v{version} not promoted: {decision.reason}")
    out.print(f"{settings.model_name} v{version} is now champion ({decision.reason})")


@app.command("models")
def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the registered model's versions with aliases, gate decisions and key metrics.

    Example: churnguard models
    """
    from churnguard.training.registry import list_versions

    settings = Settings()
    rows = list_versions(_tracking(settings).client(), settings.model_name)
    if as_json:
        out.print_json(json.dumps({"model": settings.model_name, "versions": rows}))
        return
    if not rows:
        out.print(f"no versions of {settings.model_name!r} yet; run churnguard train")
        return
    table = Table(title=f"registered model {settings.model_name}")
    table.add_column("version", no_wrap=True)
    table.add_column("aliases", no_wrap=True)
    for header in ("AUC", "log loss", "ECE", "CLV MAE", "CLV Gini"):
        table.add_column(header, justify="right")
    table.add_column("gate")
    for r in rows:
        mt = r["metrics"]

        def g(key: str, fmt: str = "{:.3f}", mt: dict[str, float] = mt) -> str:
            return fmt.format(mt[key]) if key in mt else "-"
        table.add_row(r["version"], " ".join(r["aliases"]),
                      g("test_churn_roc_auc"), g("test_churn_log_loss"), g("test_churn_ece"),
                      g("test_clv_mae", "{:,.1f}"), g("test_clv_normalized_gini"),
                      r["gate_decision"])
    out.print(table)
    for r in rows:
        if r["gate_reason"]:
            out.print(f"v{r['version']} (as of {r['as_of']}, test cutoff {r['test_cutoff']}): "
                      f"{r['gate_reason']}", highlight=False)


@app.command("score")
def score_cmd(
    data: DataOpt,
    as_of: Annotated[str, typer.Option("--as-of", help="Score every customer signed up before "
                                       "this date, from rows strictly before it.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output .parquet or .csv file.")],
    model: Annotated[str | None, typer.Option(
        "--model", help="Model URI (default: models:/<model name>@<alias> from settings).")
    ] = None,
    allow_unknown_customers: AllowUnknownOpt = False,
) -> None:
    """Batch-score every customer as of a date with the champion (or --model) bundle.

    Example: churnguard score --data data/demo --as-of 2026-01-01 --out scores.parquet
    """
    from churnguard.features.io import atomic_output
    from churnguard.training.pipeline import load_bundle, score_source

    settings = Settings()
    cutoff = _parse_date(as_of, "--as-of")
    assert cutoff
    if out_file.suffix.lower() not in (".parquet", ".csv"):
        raise _fail("--out must end in .parquet or .csv")
    tracking = _tracking(settings)
    tracking.activate()
    uri = model or f"models:/{settings.model_name}@{settings.model_alias}"
    try:
        bundle, version = load_bundle(uri)
    except Exception as exc:  # MlflowException, OSError: the model cannot be loaded
        raise _fail(f"cannot load model {uri}: {exc}") from None
    with _open(data, settings, allow_unknown_customers=allow_unknown_customers) as source:
        try:
            scores = score_source(source, bundle, cutoff, version)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    with atomic_output(out_file) as tmp:
        if out_file.suffix.lower() == ".csv":
            scores.to_csv(tmp, index=False)
        else:
            scores.to_parquet(tmp, index=False)
    out.print(f"scored {len(scores):,} customers as of {cutoff} with {uri} (v{version}) "
              f"to {out_file}")


def main() -> None:  # pragma: no cover - console entry point wrapper
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()

