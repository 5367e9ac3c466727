"""The ``churnguard`` command line: a thin layer over the feature, training and serving functions.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (the data contract or an argument).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from churnguard.config import DEFAULT_GRACE_DAYS, Settings

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


#: Off a terminal (cron, CI, Airflow, a pipe) progress bars are off; a long step logs a count
#: line at most every PROGRESS_SECONDS instead, and a heartbeat naming the step when the
#: churnguard logger has written nothing for HEARTBEAT_SECONDS (README, "CLI").
PROGRESS_SECONDS = 10.0
HEARTBEAT_SECONDS = 20.0

log = logging.getLogger("churnguard.cli")


class _Activity(logging.Filter):
    """On the CLI's log handler: when the churnguard logger last wrote a line, and the last
    progress note (not a heartbeat), which the heartbeat repeats as the step still running."""

    def __init__(self) -> None:
        super().__init__()
        self.last = self.since = time.monotonic()
        self.step = ""

    def filter(self, record: logging.LogRecord) -> bool:
        self.last = time.monotonic()
        if record.levelno == logging.INFO and not getattr(record, "heartbeat", False):
            step = getattr(record, "step", None) or record.getMessage().splitlines()[0][:100]
            if step != self.step:
                self.step, self.since = step, self.last
        return True


_activity = _Activity()


@app.callback()
def _main(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also show debug messages.")] = False) -> None:
    """Route churnguard's log messages (progress notes, warnings) to stderr through rich."""
    from rich.logging import RichHandler

    logger = logging.getLogger("churnguard")
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False,
                          rich_tracebacks=False)
    handler.addFilter(_activity)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


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


def _settings() -> Settings:
    """This run's settings (:func:`~churnguard.config.load_settings`); a bad variable exits 2
    with one message naming each bad variable and what is wrong, never a value or a traceback.
    """
    from churnguard.config import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise _fail(str(exc)) from None


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class _Steps:
    """The progress of a long command. On a terminal: a rich bar for the counted step. Off a
    terminal: log lines through the churnguard logger (so cron, CI and ``make demo | tee`` show
    them): the step when it starts, its count at most every :data:`PROGRESS_SECONDS` and when
    complete, and, while a step runs that counts nothing (fitting, a feature build, a
    commit), a heartbeat naming the step still running every :data:`HEARTBEAT_SECONDS` of
    silence."""

    def __init__(self, description: str, total: int | None = None) -> None:
        self.description = description
        self.total = total
        self.tty = err.is_terminal
        self._bar: Progress | None = None
        self._task: Any = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._started = time.monotonic()
        self._logged = 0.0
        self._done = -1

    def __enter__(self) -> _Steps:
        self._started = time.monotonic()
        if self.tty:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"),
                                 TimeElapsedColumn(), console=err, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
            return self
        log.info("%s …", self.description)
        self._logged = time.monotonic()
        self._beat = threading.Thread(target=self._heartbeat, name="churnguard-heartbeat",
                                      daemon=True)
        self._beat.start()
        return self

    def update(self, done: int, total: int | None = None) -> None:
        """Progress callback ``(done, total)`` of the counted step."""
        self.total = total if total is not None else self.total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total)
            return
        now = time.monotonic()
        complete = self.total is not None and done >= self.total
        first = self._done < 0  # announces the total
        if done == self._done or not (first or complete
                                      or now - self._logged >= PROGRESS_SECONDS):
            return
        self._done, self._logged = done, now
        of = f"/{self.total:,}" if self.total else ""
        pct = f" ({done / self.total:.0%})" if self.total else ""
        log.info("%s: %s%s%s, %s", self.description, f"{done:,}", of, pct,
                 _elapsed(now - self._started), extra={"step": self.description})

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, HEARTBEAT_SECONDS / 4)):
            now = time.monotonic()
            if now - _activity.last >= HEARTBEAT_SECONDS:
                log.info("… still working; last step: %s, %s ago (%s elapsed)",
                         _activity.step or self.description, _elapsed(now - _activity.since),
                         _elapsed(now - self._started), extra={"heartbeat": True})

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


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
        help="A subscription business instead (B2B SaaS: monthly, six-month and annual "
        "terms, renewal-driven churn, invoices as transactions, daily usage rollups as events, "
        "a subscriptions table; ground truth with each renewal's true cancellation "
        "probability).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    drift: Annotated[list[str] | None, typer.Option(
        "--drift", metavar="KIND[:TARGET[:AMOUNT]]@DATE",
        help="Inject a fault from DATE on, for monitoring to find (repeatable; retail demo "
        "only; recorded in ground_truth/drift.json). Kinds: broken-feed[:EVENT_TYPE] (rows of "
        "one event type stop arriving; default web_visit), acquisition-shift[:CHANNEL_OR_REGION"
        "[:SHARE]] (extra sign-ups make it SHARE of new customers; default social:0.6), "
        "price-change[:FACTOR] (order values x FACTOR; default 1.4), churn-rise[:SEGMENT"
        "[:FACTOR]] (churn hazard x FACTOR; default smb:3). Example: --drift "
        "broken-feed:email_open@2025-06-01")] = None,
) -> None:
    """Write realistic synthetic CRM data, with its ground truth, in the data contract.

    Example: churnguard demo-data --out data/demo --customers 20000 --seed 7
    """
    from churnguard.features.demo_data import generate_demo_data
    from churnguard.features.demo_drift import parse_drift, validate_drifts

    start_d = _parse_date(start, "--start")
    end_d = _parse_date(end, "--end")
    assert start_d and end_d
    if end_d <= start_d:
        raise _fail("--end must be after --start")
    if fmt not in ("parquet", "csv"):
        raise _fail("--format must be parquet or csv")
    try:
        drifts = validate_drifts(tuple(parse_drift(d) for d in drift or ()), start_d, end_d)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if drifts and subscriptions:
        raise _fail("--drift is supported for the retail demo only, not with --subscriptions")
    with _Steps("generating customers", total=customers) as steps:
        try:
            summary = generate_demo_data(
                out_dir, n_customers=customers, seed=seed, start=start_d, end=end_d,
                subscriptions=subscriptions, fmt=fmt,  # type: ignore[arg-type]
                progress=steps.update, drift=drifts,
            )
        except ValueError as exc:
            raise _fail(str(exc)) from None
    out.print(
        f"wrote {summary.n_customers:,} customers, {summary.n_transactions:,} transactions, "
        f"{summary.n_events:,} events, {summary.n_campaign_contacts:,} campaign contacts to "
        f"{summary.out_dir} in {summary.seconds:.1f}s"
    )
    for d in summary.drift:
        extra = (f" ({summary.n_extra_customers:,} extra customers)"
                 if d.kind == "acquisition-shift" else "")
        out.print(f"injected {d.label}{extra}", highlight=False)
    if summary.drift:
        out.print(f"faults recorded in {summary.out_dir / 'ground_truth' / 'drift.json'}",
                  highlight=False)


@features_app.command("build")
def features_build(
    data: DataOpt,
    as_of: Annotated[str, typer.Option("--as-of", help="Cutoff date: features use rows "
                                       "strictly before it.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output .parquet or .csv file.")],
    engine: Annotated[str, typer.Option("--engine", help="duckdb or spark (the same feature "
                                        "SQL, transpiled; Parquet sources).")] = "duckdb",
    spec_file: Annotated[Path | None, typer.Option(
        "--spec", help="Feature spec JSON to build (default: inferred from the data).")] = None,
    allow_unknown_customers: AllowUnknownOpt = False,
) -> None:
    """Build point-in-time features of every customer as of a cutoff date.

    Example: churnguard features build --data data/demo --as-of 2025-10-01 --out features.parquet
    """
    from churnguard.features.build import infer_spec, write_features
    from churnguard.features.definitions import FeatureSpec

    settings = _settings()
    cutoff = _parse_date(as_of, "--as-of")
    assert cutoff
    if engine not in ("duckdb", "spark"):
        raise _fail(f"unknown --engine {engine!r}; available: duckdb, spark")
    if out_file.suffix.lower() not in (".parquet", ".csv"):
        raise _fail("--out must end in .parquet or .csv")
    if engine == "spark":
        _features_build_spark(data, cutoff, out_file, spec_file, allow_unknown_customers,
                              settings)
        return
    with _Steps(f"building features as of {cutoff}"), \
            _open(data, settings, allow_unknown_customers=allow_unknown_customers) as source:
        spec = (FeatureSpec.from_dict(json.loads(spec_file.read_text())) if spec_file
                else infer_spec(source, as_of=cutoff))
        summary = write_features(source, spec, cutoff, out_file)
    out.print(f"wrote {summary.n_rows:,} customers × {summary.n_features} features as of "
              f"{cutoff} to {summary.out} in {summary.seconds:.1f}s "
              f"(feature set {spec.version}, spec {summary.spec_fingerprint})")


def _features_build_spark(data: str, cutoff: date, out_file: Path, spec_file: Path | None,
                          allow_unknown_customers: bool, settings: Settings) -> None:
    from churnguard.features.build import infer_spec
    from churnguard.features.definitions import FeatureSpec
    from churnguard.features.sources import DataContractError
    from churnguard.features.spark import open_spark_source, spark_session, write_spark_features

    start = time.perf_counter()
    with _Steps(f"building features as of {cutoff} with Spark"):
        spark = spark_session()
        try:
            src = open_spark_source(spark, data,
                                    allow_unknown_customers=allow_unknown_customers)
            if spec_file:
                spec = FeatureSpec.from_dict(json.loads(spec_file.read_text()))
            else:
                # The spec (event types, categories) is inferred as on DuckDB, from the data.
                with _open(data, settings,
                           allow_unknown_customers=allow_unknown_customers) as s:
                    spec = infer_spec(s, as_of=cutoff)
            n_rows = write_spark_features(src, spec, cutoff, str(out_file))
        except DataContractError as exc:
            raise _fail(str(exc)) from None
    for issue in src.issues:
        err.print(f"[yellow]warning:[/] {issue}", highlight=False)
    out.print(f"wrote {n_rows:,} customers × {len(spec.features())} features as of {cutoff} "
              f"to {out_file} in {time.perf_counter() - start:.1f}s with Spark "
              f"(feature set {spec.version}, spec {spec.fingerprint()})")


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
    from churnguard.features.build import infer_spec, monthly_cutoffs, write_snapshot_grid

    settings = _settings()
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
        spec = infer_spec(source, as_of=cutoffs[0])
        with _Steps("snapshot grid cutoffs", total=len(cutoffs)) as steps:
            summary = write_snapshot_grid(
                source, spec, cutoffs, out_file, horizon_days=horizon,
                clv_horizon_days=clv_horizon,
                mode="contractual" if contractual else "noncontractual",
                progress=steps.update,
            )
    out.print(f"wrote {summary.n_rows:,} rows ({len(cutoffs)} cutoffs) to {out_file} in "
              f"{summary.seconds:.1f}s")


@features_app.command("list")
def features_list(
    data: Annotated[str | None, typer.Option(
        "--data", help="Source to infer event types and attributes from.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List every feature with its family, type and description.

    Without --data, the catalog of the default event types; with it, the event types and
    customer attributes that data would give.

    Example: churnguard features list --data data/demo --json
    """
    from churnguard.features.build import infer_spec
    from churnguard.features.definitions import FEATURE_SET_VERSION, FeatureSpec, feature_catalog

    if data:
        with _open(data, _settings(), allow_unknown_customers=True) as source:
            spec = infer_spec(source)
    else:
        spec = FeatureSpec(event_types=("login", "email_open", "complaint", "support_ticket"))
    catalog = feature_catalog(spec)
    if as_json:
        out.print_json(json.dumps({"version": FEATURE_SET_VERSION, "features": catalog}))
        return
    table = Table("name", "family", "type", "role", "description", "null means",
                  title=f"feature set {FEATURE_SET_VERSION}")
    for row in catalog:
        table.add_row(row["name"], row["family"], row["kind"], row["role"], row["description"],
                      row.get("null_meaning", ""))
    out.print(table)


@data_app.command("check")
def data_check(data: DataOpt, allow_unknown_customers: AllowUnknownOpt = False) -> None:
    """Check a source against the data contract and report suspicious rows.

    Exit code 2 if the source breaks the contract. Example: churnguard data check --data data/demo
    """
    from datetime import timedelta

    from churnguard.features.build import infer_spec, materialize_features

    settings = _settings()
    with _Steps("checking the source"), _open(
            data, settings, thorough=True,
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


def _tracking(settings: Settings, *, create: bool = True) -> Any:
    """The MLflow store of the settings (:meth:`Tracking.resolve`). With ``create=False``,
    None when it is the embedded store and that does not exist yet: commands that only read the
    registry (models, promote, score) then create no data folder and no ``mlflow.db``."""
    from churnguard.model.registry import Tracking

    embedded_db = Path(settings.data_dir) / "mlflow.db"  # Tracking.resolve's embedded store
    if not create and not settings.mlflow_tracking_uri and not embedded_db.is_file():
        return None
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
        help="CLV window (default: CHURNGUARD_CLV_HORIZON_DAYS, else 365 days shortened to "
        "the longest a purged split of the data allows).")] = None,
    experiment: Annotated[str | None, typer.Option(
        "--experiment", help="MLflow experiment name (default: settings).")] = None,
    max_train_cutoffs: Annotated[int, typer.Option(
        "--max-train-cutoffs", min=1, help="Most recent monthly training cutoffs to use.")] = 24,
    refit: Annotated[bool, typer.Option(
        "--refit/--no-refit", help="Refit the churn model on train + validation snapshots.")
    ] = True,
    actions: Annotated[Path | None, typer.Option(
        "--actions", help="Action catalog YAML put in the model bundle (default: settings "
        "CHURNGUARD_ACTIONS_CATALOG, else churnguard's actions.yaml).")] = None,
    min_uplift_customers: Annotated[int | None, typer.Option(
        "--min-uplift-customers", min=1,
        help="Customers needed in each arm (treated, hold-out) of the campaign log before an "
        "action's measured effect replaces the catalog's prior (default: 200).")] = None,
    seed: Annotated[int, typer.Option(
        "--seed", min=0,
        help="Seed of the boosters' row and column sampling, the calibration folds and the "
        "BTYD fit sample: the same data, --as-of and seed give the same model.")] = 0,
    allow_unknown_customers: AllowUnknownOpt = False,
    contractual: Annotated[bool | None, typer.Option(
        "--contractual/--noncontractual",
        help="Churn label: contractual (no subscription active at the horizon) or "
        "non-contractual (no purchase in the horizon). Default: contractual when the source has "
        "a subscriptions table.")] = None,
    grace_days: Annotated[int, typer.Option(
        "--grace-days", min=0, max=365,
        help="Contractual label: a lapse that a new subscription ends within this many days "
        "is not churn (a late payment).")] = DEFAULT_GRACE_DAYS,
) -> None:
    """Train the churn + CLV models and baselines, log them to MLflow, register a version.

    The new version gets the alias 'challenger'; it becomes 'champion' only if it beats the
    current champion on the same out-of-time test snapshot. With a campaigns table, action
    effects are measured on its randomised hold-outs and replace the catalog's priors.

    Example: churnguard train --data data/demo --as-of 2025-12-01 --horizon-days 90
    """
    from churnguard.features.build import LabelMode
    from churnguard.model.policy import PolicyError, load_catalog
    from churnguard.training.models import BoostConfig
    from churnguard.training.pipeline import TrainConfig, train
    from churnguard.training.split import PlanError
    from churnguard.training.uplift import UpliftError

    settings = _settings()
    cutoff = _parse_date(as_of, "--as-of")
    catalog = actions or settings.actions_catalog
    try:
        load_catalog(catalog)  # before opening the data: a bad catalog fails at once
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    config = TrainConfig(
        horizon_days=horizon_days or settings.horizon_days, grace_days=grace_days,
        clv_horizon_days=clv_horizon_days or settings.clv_horizon_days,
        # Neither --clv-horizon-days nor CHURNGUARD_CLV_HORIZON_DAYS: the default adapts to a
        # history too short for it (README "Training and the model registry").
        clv_horizon_auto=(clv_horizon_days is None
                          and "clv_horizon_days" not in settings.model_fields_set),
        max_train_cutoffs=max_train_cutoffs, refit=refit,
        experiment=experiment or settings.experiment, model_name=settings.model_name,
        seed=seed, boost=BoostConfig(seed=seed),
        gate_min_positives=settings.gate_min_positives,
        gate_min_negatives=settings.gate_min_negatives,
    )
    with _Steps("snapshot grid") as steps, \
            _open(data, settings, allow_unknown_customers=allow_unknown_customers) as source:
        if contractual and not source.has("subscriptions"):
            raise _fail("--contractual needs a subscriptions table in the source")
        kind: LabelMode = ("contractual" if (source.has("subscriptions") if contractual is None
                                             else contractual) else "noncontractual")
        config = dataclasses.replace(config, label=kind)
        log.info("churn label: %s%s", kind,
                 f" (grace period {grace_days} days)" if kind == "contractual" else "")
        try:
            result = train(
                source, _tracking(settings), as_of=cutoff, config=config,
                progress=steps.update, actions_catalog=catalog,
                uplift_min_customers=min_uplift_customers,
            )
        except (PlanError, PolicyError, UpliftError) as exc:
            raise _fail(str(exc)) from None
    m = result.metrics

    def f(key: str, fmt: str = "{:.3f}") -> str:
        return fmt.format(m[key]) if key in m else "-"

    # Two tables, so that each fits an 80-column log. "AUC active": among the customers with a
    # purchase in the year before the test cutoff (model/evaluate.py, active_churn_metrics);
    # long-lapsed customers are easy to rank and raise the plain ROC AUC.
    churn_table = Table("model", "ROC AUC", "AUC active", "log loss", "ECE", "lift@10",
                        title=f"churn ({config.label}), test snapshot {result.churn_plan.test}")
    rows = [("churnguard", "test_churn_"), ("logreg", "test_baseline_logreg_churn_"),
            ("BG/NBD", "test_baseline_btyd_churn_")]
    if config.label == "contractual":  # the contractual baseline in place of BG/NBD's churn
        rows[-1] = ("sBG", "test_baseline_sbg_churn_")
    for label, key in rows:
        churn_table.add_row(label, f(key + "roc_auc"), f(key + "roc_auc_active_365d"),
                            f(key + "log_loss"), f(key + "ece"), f(key + "lift_at_10", "{:.2f}"))
    # "80% cover": the share of customers whose spend fell in their 80 % CLV interval
    # (README "CLV intervals"); the baseline has no interval.
    clv_table = Table("model", "CLV MAE", "CLV Gini", "CLV total err", "80% cover",
                      title=f"CLV, test snapshot {result.clv_plan.test}")
    for label, key in (("churnguard", "test_clv_"), ("BG/NBD+GG", "test_baseline_btyd_clv_")):
        clv_table.add_row(label, f(key + "mae", "{:,.1f}"), f(key + "normalized_gini"),
                          f(key + "total_error", "{:+.1%}"),
                          f(key + "interval_coverage", "{:.1%}"))
    out.print(churn_table)
    out.print(clv_table)
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

    settings = _settings()
    tracking = _tracking(settings, create=False)
    if tracking is None:
        raise _fail(f"model {settings.model_name!r} has no version {version} (no model "
                    "registry yet: run churnguard train)")
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
    """List the registered model's versions with aliases, gate decisions and key metrics
    with their 95 % bootstrap intervals.

    Example: churnguard models
    """
    from churnguard.training.registry import list_versions

    settings = _settings()
    tracking = _tracking(settings, create=False)
    rows = list_versions(tracking.client(), settings.model_name) if tracking else []
    if as_json:
        out.print_json(json.dumps({"model": settings.model_name, "versions": rows}))
        return
    if not rows:
        out.print(f"no versions of {settings.model_name!r} yet; run churnguard train")
        return
    table = Table(title=f"registered model {settings.model_name}")
    table.add_column("version", no_wrap=True)
    table.add_column("aliases", no_wrap=True)
    table.add_column("churn label")
    for header in ("AUC", "log loss", "ECE", "CLV MAE", "CLV Gini"):
        table.add_column(header, justify="right")
    table.add_column("gate")
    for r in rows:
        mt, ci = r["metrics"], r["intervals"]

        # The 95 % bootstrap interval under each value (README "Reading the model report");
        # versions trained before intervals show the value alone.
        def g(key: str, fmt: str = "{:.3f}", mt: dict[str, float] = mt,
              ci: dict[str, list[float]] = ci) -> str:
            if key not in mt:
                return "-"
            value = fmt.format(mt[key])
            return (f"{value}\n[{fmt.format(ci[key][0])}, {fmt.format(ci[key][1])}]"
                    if key in ci else value)
        table.add_row(r["version"], " ".join(r["aliases"]), r["churn_label"],
                      g("test_churn_roc_auc"), g("test_churn_log_loss"), g("test_churn_ece"),
                      g("test_clv_mae", "{:,.1f}"), g("test_clv_normalized_gini"),
                      r["gate_decision"])
    out.print(table)
    if any(r["intervals"] for r in rows):
        out.print("[low, high]: 95 % bootstrap interval over the test customers "
                  "(README \"Reading the model report\")", highlight=False, markup=False)
    for r in rows:
        if r["gate_reason"]:
            out.print(f"v{r['version']} (as of {r['as_of']}, test cutoff {r['test_cutoff']}): "
                      f"{r['gate_reason']}", highlight=False)


@app.command("score")
def score_cmd(
    data: DataOpt,
    as_of: Annotated[str, typer.Option("--as-of", help="Score every customer signed up before "
                                       "this date, from rows strictly before it.")],
    out_dest: Annotated[str, typer.Option(
        "--out", help="A .parquet or .csv file, a directory (Parquet partitioned by as_of), or "
        "a postgresql:// URL (with --table).")],
    table: Annotated[str | None, typer.Option(
        "--table", help="PostgreSQL table (NAME or SCHEMA.NAME) for a postgresql:// --out; "
        "upserted on (customer_id, as_of, model_version).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Model URI (default: models:/<model name>@<alias> from settings).")
    ] = None,
    engine: Annotated[str, typer.Option("--engine", help="duckdb or spark.")] = "duckdb",
    chunk_size: Annotated[int, typer.Option(
        "--chunk-size", min=1, help="Customers scored and written per chunk.")] = 100_000,
    drivers: Annotated[bool, typer.Option(
        "--drivers/--no-drivers", help="Compute the top drivers of each churn score.")] = True,
    spark_master: Annotated[str | None, typer.Option(
        "--spark-master", help="Spark master for --engine spark (default: the one spark-submit "
        "set, else local[*]).")] = None,
    allow_unknown_customers: AllowUnknownOpt = False,
    prediction_log: Annotated[bool | None, typer.Option(
        "--prediction-log/--no-prediction-log",
        help="Record the run in the prediction log (default: CHURNGUARD_PREDICTION_LOG, on); "
        "a re-run of the same model version and as-of date replaces its rows.")] = None,
) -> None:
    """Batch-score every customer as of a date with the champion (or --model) bundle.

    Output per customer: churn probability, risk tier, CLV, value tier, lifecycle stage, top
    drivers, recommended action(s), model version, as-of and scored-at. Files are written under
    a temporary name and renamed; a database write is one transaction. Re-runs replace.

    Examples:

      churnguard score --data data/demo --as-of 2026-01-01 --out scores.parquet

      churnguard score --data data/demo --as-of 2026-01-01 --out scores/ --engine spark

      churnguard score --data data/demo --as-of 2026-01-01 \\
          --out postgresql://crm@db/crm --table churn.scores --no-drivers
    """
    import os

    from churnguard.serving.batch import (
        BatchInputError,
        BatchJob,
        check_destination,
        fault_checkpoint,
        parse_destination,
        run_batch,
    )
    from churnguard.serving.predlog import (
        batch_log_sink,
        model_name_of,
        prediction_log_location,
    )

    settings = _settings()
    cutoff = _parse_date(as_of, "--as-of")
    assert cutoff
    if engine not in ("duckdb", "spark"):
        raise _fail(f"unknown --engine {engine!r}; available: duckdb, spark")
    try:
        dest = parse_destination(out_dest, table)
        check_destination(dest)
    except BatchInputError as exc:
        raise _fail(str(exc)) from None
    uri = model or f"models:/{settings.model_name}@{settings.model_alias}"
    # Test hook for the fault tests: kill the job at a named point (see serving/batch.py).
    checkpoint = fault_checkpoint(os.environ.get("CHURNGUARD_BATCH_FAULT"))
    # The destination (above) and the source are checked before the model registry is
    # touched: bad input creates nothing, neither a data folder nor an mlflow.db.
    with _Steps("scoring customers") as steps, _score_engine(
            engine, data, settings, spark_master, allow_unknown_customers) as batch_engine:
        bundle, version = _load_model(uri, settings)
        logged = settings.prediction_log if prediction_log is None else prediction_log
        log_sink = batch_log_sink(prediction_log_location(settings), as_of=cutoff,
                                  model_name=model_name_of(uri, settings.model_name),
                                  model_version=version) if logged else None
        try:
            job = BatchJob(bundle, cutoff, version, chunk_size=chunk_size, drivers=drivers)
            summary = run_batch(job, batch_engine, dest, progress=steps.update,
                                checkpoint=checkpoint, prediction_log=log_sink)
        except (BatchInputError, ValueError) as exc:
            raise _fail(str(exc)) from None
    rate = summary.n_scored / summary.seconds if summary.seconds else 0.0
    out.print(f"scored {summary.n_scored:,} customers as of {cutoff} with {uri} (v{version}) "
              f"to {summary.destination} in {summary.seconds:.1f}s ({rate:,.0f}/s, "
              f"{summary.n_chunks} chunk{'s' if summary.n_chunks != 1 else ''}, "
              f"engine {engine})", highlight=False)
    for reason, n in summary.skipped.items():
        out.print(f"skipped {n:,}: {reason}", highlight=False)
    if log_sink is not None:
        out.print(f"prediction log: {log_sink.rows:,} rows in {log_sink.where}",
                  highlight=False)


@contextlib.contextmanager
def _score_engine(engine: str, data: str, settings: Settings, master: str | None,
                  allow_unknown_customers: bool) -> Iterator[Any]:
    """The batch engine over the opened and checked source; contract violations inside the
    block exit 2 and the source's warnings are shown after it."""
    from churnguard.serving.batch import DuckDBEngine, SparkEngine

    if engine == "duckdb":
        with _open(data, settings, allow_unknown_customers=allow_unknown_customers) as source:
            yield DuckDBEngine(source)
        return
    from churnguard.features.sources import DataContractError
    from churnguard.features.spark import open_spark_source, spark_session

    spark = spark_session(master)
    try:
        src = open_spark_source(spark, data, allow_unknown_customers=allow_unknown_customers)
        yield SparkEngine(src)
    except DataContractError as exc:
        raise _fail(str(exc)) from None
    for issue in src.issues:
        err.print(f"[yellow]warning:[/] {issue}", highlight=False)


def _load_model(uri: str, settings: Settings) -> tuple[Any, str]:
    """The bundle behind ``uri`` and its version label. The registry is used (and must exist)
    only for a ``models:/`` or ``runs:/`` URI. A model that cannot be loaded is not bad input
    but a registry or model problem: exit 1, not 2."""
    from churnguard.model.registry import load_bundle

    log.info("loading model %s", uri)
    if uri.startswith(("models:", "runs:")):
        tracking = _tracking(settings, create=False)
        if tracking is None:
            raise _fail(f"cannot load model {uri}: there is no model registry at "
                        f"{Path(settings.data_dir) / 'mlflow.db'} yet (run churnguard train, "
                        "or set MLFLOW_TRACKING_URI)", code=1)
        tracking.activate()
    try:
        return load_bundle(uri)
    except Exception as exc:  # MlflowException, BundleError, OSError
        raise _fail(f"cannot load model {uri}: {exc}", code=1) from None


#: ``churnguard monitor``'s exit code for an ``alert`` verdict (2 stays bad input).
EXIT_ALERT = 3


@app.command("monitor")
def monitor_cmd(
    data: DataOpt,
    as_of: Annotated[str, typer.Option("--as-of", help="Monitor with the rows before this "
                                       "date: the customers as of it, and every logged batch "
                                       "run whose label window has closed by it.")],
    model: Annotated[str | None, typer.Option(
        "--model", help="Model URI (default: models:/<model name>@<alias> from settings).")
    ] = None,
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Folder for monitor.json and monitor.html.")] = Path("monitor"),
    allow_unknown_customers: AllowUnknownOpt = False,
    to_mlflow: Annotated[bool | None, typer.Option(
        "--mlflow/--no-mlflow",
        help="Log the report as a monitoring run in MLflow (experiment "
        "CHURNGUARD_MONITOR_EXPERIMENT). Default: on when the model comes from the registry "
        "(models:/, runs:/), a tracking URI is set or the embedded store exists; off for a "
        "local model with no store (--mlflow then creates the embedded one).")] = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="duckdb or spark: the engine that builds the customers' features "
        "(the same feature SQL; Parquet sources). Feeds and labels are read by DuckDB.")
    ] = "duckdb",
) -> None:
    """Drift, estimated and realized performance of the served model, and a verdict.

    Exit code 0 for ok and warn, 3 for alert (2: bad input), so a scheduler can run
    churnguard train on an alert. Writes DIR/monitor.json and DIR/monitor.html, and logs them
    as an MLflow monitoring run (README, "Monitoring"); a failure to log only warns.

    Example:

      churnguard monitor --data data/demo --as-of 2026-02-01 --out monitor/
    """
    from churnguard.serving.monitor import MONITOR_STEPS, Thresholds, monitor, write_report
    from churnguard.serving.monitor_report import write_html
    from churnguard.serving.monitor_state import record_verdict
    from churnguard.serving.predlog import prediction_log_location

    settings = _settings()
    cutoff = _parse_date(as_of, "--as-of")
    assert cutoff
    if engine not in ("duckdb", "spark"):
        raise _fail(f"unknown --engine {engine!r}; available: duckdb, spark")
    uri = model or f"models:/{settings.model_name}@{settings.model_alias}"
    thresholds = Thresholds(
        psi_warn=settings.monitor_psi_warn, psi_alert=settings.monitor_psi_alert,
        null_rate_change_warn=settings.monitor_null_rate_change_warn,
        auc_drop_alert=settings.monitor_auc_drop_alert, ece_alert=settings.monitor_ece_alert,
        group_gap_warn=settings.monitor_group_gap_warn)
    with _Steps("monitoring", total=len(MONITOR_STEPS)) as steps, _open(
            data, settings, allow_unknown_customers=allow_unknown_customers) as source, \
            tempfile.TemporaryDirectory(prefix="churnguard-monitor-") as staging:
        bundle, version = _load_model(uri, settings)
        chunks = (_spark_feature_chunks(data, bundle, cutoff, Path(staging),
                                        allow_unknown_customers)
                  if engine == "spark" else None)
        try:
            report = monitor(source, bundle, version, as_of=cutoff,
                             log_root=prediction_log_location(settings), thresholds=thresholds,
                             features_as_of=chunks, progress=steps.update)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    path = write_report(report, out_dir)
    page = write_html(report, out_dir)
    record_verdict(report, settings.monitor_state_file, report_path=path.resolve())
    est = report["estimated"]
    out.print(f"{report['verdict']}: v{version} as of {cutoff}, {report['customers']:,} "
              f"customers; score PSI {report['score']['psi']:.3f}, estimated churn rate "
              f"{est['churn_rate']:.1%}, estimated ROC AUC "
              f"{est['roc_auc'] if est['roc_auc'] is None else round(est['roc_auc'], 3)}; "
              f"{len(report['realized'])} scored run(s) with closed label windows",
              highlight=False)
    for r in report["realized"]:
        out.print(f"  scored {r['scored_as_of']} (v{r['model_version']}, {r['n']:,}): ROC AUC "
                  f"{r['roc_auc']:.3f}, log loss {r['log_loss']:.4f}, ECE {r['ece']:.3f}",
                  highlight=False)
    for why in report["reasons"][:20]:
        out.print(f"  {why}", highlight=False)
    out.print(f"wrote {path} and {page}", highlight=False)
    _log_monitoring(report, [path, page], settings, uri, bundle.metadata, to_mlflow)
    if report["verdict"] == "alert":
        raise typer.Exit(EXIT_ALERT)


def _spark_feature_chunks(data: str, bundle: Any, cutoff: date, staging: Path,
                          allow_unknown_customers: bool) -> Iterator[Any]:
    """The bundle's features as of ``cutoff`` built by Spark into ``staging``, read back in
    chunks for ``monitor``."""
    import pyarrow.parquet as pq

    from churnguard.features.sources import DataContractError
    from churnguard.features.spark import open_spark_source, spark_session, write_spark_features

    path = staging / "features.parquet"
    try:
        src = open_spark_source(spark_session(), data,
                                allow_unknown_customers=allow_unknown_customers)
        write_spark_features(src, bundle.spec, cutoff, str(path))
    except DataContractError as exc:
        raise _fail(str(exc)) from None
    yield from pq.ParquetFile(path).iter_batches(batch_size=100_000)


def _log_monitoring(report: dict[str, Any], files: list[Path], settings: Settings, uri: str,
                    metadata: dict[str, Any], wanted: bool | None) -> None:
    """The monitoring run in MLflow (``--mlflow``; None: when a store is there to log to, see
    ``monitor --help``). Never changes the exit code: a failure is a warning."""
    from churnguard.serving.monitor_report import log_monitoring_run

    if wanted is False:
        return
    from_registry = uri.startswith(("models:", "runs:"))
    if wanted is None and not from_registry and _tracking(settings, create=False) is None:
        log.info("monitoring run not logged to MLflow: local model and no tracking store "
                 "(--mlflow creates the embedded one)")
        return
    name = (uri.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
            if uri.startswith("models:/") else settings.model_name)
    extra = {"churnguard.model_uri": uri}
    if metadata.get("run_id"):
        extra["churnguard.training_run_id"] = str(metadata["run_id"])
    tracking = None
    try:
        tracking = _tracking(settings)
        run_id = log_monitoring_run(report, files, tracking,
                                    experiment=settings.monitor_experiment, model_name=name,
                                    extra_tags=extra)
    except Exception as exc:  # MlflowException, OSError, a server that does not answer
        where = tracking.uri if tracking is not None else "the tracking store"
        err.print(f"[yellow]warning:[/] the monitoring run was not logged to MLflow at {where}"
                  f" ({type(exc).__name__}: {exc}); {files[0].parent} has the report",
                  highlight=False)
        return
    out.print(f"logged MLflow run {run_id} (experiment {settings.monitor_experiment})",
              highlight=False)


@app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on "
                                             "(default: CHURNGUARD_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port "
                                             "(default: CHURNGUARD_PORT, 8000).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=64, help="Worker "
                                                "processes (default: CHURNGUARD_WORKERS, 1).")
                       ] = None,
) -> None:
    """Serve the scoring API (OpenAPI docs at /docs).

    Loads models:/<model name>@<alias> (CHURNGUARD_MODEL_NAME / CHURNGUARD_MODEL_ALIAS), polls
    the alias every CHURNGUARD_POLL_SECONDS and swaps in a new champion without a restart.
    Customer ids are looked up in the feature snapshot (CHURNGUARD_FEATURE_SNAPSHOT, default
    <data dir>/features.parquet) kept in memory, or in Redis with
    CHURNGUARD_ONLINE_STORE=redis://host:6379/0. API keys: CHURNGUARD_API_KEYS=key1,key2.

    Example: CHURNGUARD_API_KEYS=change-me-0123456789 churnguard serve --port 8000 --workers 2
    """
    import logging.config
    import os

    import uvicorn

    # Inherited by the worker processes. One OpenMP thread per worker: requests are small, and
    # an OpenMP team per prediction costs more than it saves; scale with --workers instead.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Registry calls fail within seconds instead of MLflow's defaults (120 s per request, 7
    # retries with backoff: about 4 minutes), so /readyz shows a registry outage promptly; each
    # can be overridden in the environment (MLflow's mlflow.environment_variables).
    for var, value in (("MLFLOW_HTTP_REQUEST_TIMEOUT", "5"),
                       ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
                       ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")):
        os.environ.setdefault(var, value)

    settings = _settings()
    level = settings.log_level.upper()
    # A service logs plain lines with times for log collectors, not the CLI's rich console.
    # uvicorn applies log_config in every worker process it spawns (with --workers N the
    # workers do not inherit this process's logging set-up), so the whole set-up is this dict.
    log_config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "churnguard": {"level": "NOTSET", "handlers": [], "propagate": True},
            **{name: {"handlers": [], "propagate": True}
               for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
            # The embedded MLflow store's schema check logs two INFO lines on every start.
            "alembic": {"level": "DEBUG" if level == "DEBUG" else "WARNING"},
        },
    }
    logging.config.dictConfig(log_config)
    n_workers = workers or settings.workers
    with _metrics_dir(n_workers):
        uvicorn.run("churnguard.serving.app:create_app", factory=True,
                    host=host or settings.host, port=port or settings.port,
                    workers=n_workers, log_level=settings.log_level, log_config=log_config,
                    access_log=False, proxy_headers=False)


@contextlib.contextmanager
def _metrics_dir(workers: int) -> Iterator[None]:
    """Several workers share one port, so one scrape must see them all: prometheus_client's
    multiprocess mode, in ``PROMETHEUS_MULTIPROC_DIR`` (emptied first, as its docs require) or a
    temporary directory removed at exit. The worker processes inherit the variable."""
    import os
    import shutil
    import tempfile

    from churnguard.serving.metrics import MULTIPROC_ENV

    if workers <= 1:
        yield
        return
    given = os.environ.get(MULTIPROC_ENV)
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="churnguard-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


def main() -> None:  # pragma: no cover - console entry point wrapper
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()

