"""`movierec`: the commands users run, grouped as they work: data (`ingest`, `validate`,
`snapshots`), models (`train`, `evaluate`, `pipeline`), the registry (`models`, `promote`,
`rollback`), serving (`serve`, `export-recs`), operations (`monitor`, `feedback`) and
orchestration (`deploy`, `stack`). Run `movierec --help`."""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from movierec.console import console, interactive
from movierec.data.datasets import DATASETS
from movierec.errors import ConfigError, DataError
from movierec.services import service_failure
from movierec.settings import get_settings

app = typer.Typer(
    help="movierec: a movie recommender pipeline (MovieLens + TMDB, Prefect, MLflow, LightFM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

DatasetOption = Annotated[
    str,
    typer.Option("--dataset", "-d", help=f"One of: {', '.join(DATASETS)}.", show_default=True),
]


@app.callback()
def _check_settings() -> None:
    """Every command reads the settings: an invalid file or variable stops it here, readably."""
    try:
        get_settings()
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None


def _check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise typer.BadParameter(
            f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}", param_hint="--dataset"
        )
    return name


def _run(step: str, flow: Callable[..., Any], **parameters: Any) -> Any:
    """Run a flow with a spinner on a terminal; a data error, or a service failing the run (which
    it names), becomes a message and exit code 1."""
    from movierec import runtime

    runtime.hide_data_error_tracebacks()
    runtime.warm_imports("great_expectations")
    runtime.use_prefect_api()
    try:
        if interactive():
            with console.status(f"{step}…"):
                return flow(**parameters)
        return flow(**parameters)
    except DataError as error:
        console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as error:
        failure = service_failure(error)
        if failure is None:
            raise
        console.print(f"[bold red]error:[/] {escape(failure)}", soft_wrap=True)
        raise typer.Exit(1) from None


def _prepare(flow: bool = False) -> None:
    """Process set-up; for a command that runs a flow (`flow`), Prefect's temporary API server is
    started now, to boot while the flow's modules import (see runtime.start_prefect_api)."""
    from movierec import runtime

    runtime.configure(get_settings())
    if flow:
        runtime.start_prefect_api()


@contextmanager
def _home_lock(label: str, *, wait: bool = True) -> Iterator[None]:
    """`movierec.runlock.run_lock` on the settings' home, saying what it waits for; exit code 1
    when busy and not waiting."""
    from movierec.runlock import RunLocked, describe, run_lock

    def waiting(holder: dict | None) -> None:
        console.print(f"waiting for {escape(describe(holder))} to finish…", soft_wrap=True)

    try:
        with run_lock(get_settings().home, label, wait=wait, on_wait=waiting):
            yield
    except RunLocked as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None


_PROCESS_LOCKS: list = []


def _flow_process(label: str, *, wait: bool = True) -> None:
    """Set up a process that runs a flow on the home: take the home's run lock and keep it until
    the process exits (after Prefect's temporary server has stopped at exit: a waiting run must
    not start its own server on the same database beside it), then `_prepare(flow=True)`, which
    starts that server."""
    held = _home_lock(label, wait=wait)
    held.__enter__()
    _PROCESS_LOCKS.append(held)  # referenced until exit: a dropped context manager would release it now
    _prepare(flow=True)


def _print_snapshot(summary: dict) -> None:
    state = "unchanged, reused" if summary["reused"] else "written"
    console.print(f"[bold green]snapshot {summary['snapshot_id']}[/] of {summary['dataset']} ({state})")
    table = Table(show_header=True, header_style="bold")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in summary["rows"].items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    scale = summary["rating_scale"]
    console.print(f"rating scale: {scale['min']:g}–{scale['max']:g} in steps of {scale['step']:g}")
    tmdb = summary.get("tmdb")
    if tmdb:
        console.print(
            f"TMDB match rate: {tmdb['match_rate']:.1%} ({tmdb['matched']:,} of {tmdb['items']:,} movies, by {tmdb['method']})"
        )
    else:
        console.print("TMDB: not joined (no tmdb-5000 copy in MOVIEREC_DATA_DIR)")
    console.print(f"path: {summary['path']}")
    console.print(f"validation report: {summary['data_docs']}")


@app.command()
def ingest(
    dataset: DatasetOption = "ml-latest-small",
    synthetic_ratings: Annotated[
        int | None, typer.Option(min=1000, help="Ratings to generate for --dataset synthetic.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for --dataset synthetic.")] = None,
    tmdb: Annotated[bool, typer.Option(help="Join TMDB 5000 metadata when a local copy exists.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest a dataset: locate or download, parse, validate, write a Parquet snapshot."""
    _check_dataset(dataset)
    _flow_process(f"ingest {dataset}")
    from flows.ingest import ingest as ingest_flow

    summary = _run(
        f"ingesting {dataset}",
        ingest_flow,
        dataset=dataset,
        synthetic_ratings=synthetic_ratings,
        seed=seed,
        use_tmdb=tmdb,
    )
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        _print_snapshot(summary)


@app.command()
def validate(
    dataset: DatasetOption = "ml-latest-small",
    snapshot: Annotated[str | None, typer.Option(help="Snapshot id; default: the latest.")] = None,
) -> None:
    """Re-validate a stored snapshot against the expectation suites in expectations/."""
    _check_dataset(dataset)
    _flow_process(f"validate {dataset}")
    from flows.validate import validate as validate_flow

    result = _run(f"validating {dataset}", validate_flow, dataset=dataset, snapshot_id=snapshot)
    passed = sum(suite["evaluated"] - suite["failed"] for suite in result["suites"].values())
    console.print(
        f"[bold green]snapshot {result['snapshot_id']} passed[/] {len(result['suites'])} suites, {passed} expectations"
    )
    console.print(f"validation report: {result['data_docs']}")


@app.command()
def snapshots(dataset: DatasetOption = "ml-latest-small") -> None:
    """List the stored snapshots of a dataset, newest last."""
    from movierec.data.snapshot import SnapshotStore

    store = SnapshotStore(get_settings().snapshots_dir)
    latest = store.latest(dataset)
    table = Table("snapshot", "created", "ratings", "users", "items", "source", header_style="bold")
    for snap in store.list(dataset):
        rows = {name: meta["rows"] for name, meta in snap.lineage["tables"].items()}
        marker = " (latest)" if latest and latest.id == snap.id else ""
        origin = snap.lineage.get("source", {})
        table.add_row(
            snap.id + marker,
            snap.lineage["created_at"],
            f"{rows['ratings']:,}",
            f"{rows['users']:,}",
            f"{rows['items']:,}",
            str(origin.get("path") or origin.get("url") or origin.get("kind")),
        )
    console.print(table)


METRIC_COLUMNS = [
    ("ndcg@{k}", "NDCG@{k}"),
    ("recall@{k}", "Recall@{k}"),
    ("precision@{k}", "Precision@{k}"),
    ("map@{k}", "MAP@{k}"),
    ("coverage@{k}", "Coverage@{k}"),
    ("auc", "AUC"),
]


def _print_metrics(result: dict, k: int) -> None:
    table = Table(header_style="bold")
    table.add_column("model", no_wrap=True)
    for column in [*(label.format(k=k) for _, label in METRIC_COLUMNS), "train s"]:
        table.add_column(column, justify="right")
    for row in result["metrics"]:
        table.add_row(
            row["model"], *(f"{row[key.format(k=k)]:.4f}" for key, _ in METRIC_COLUMNS), f"{row['train_seconds']:.1f}"
        )
    console.print(
        f"[bold]{result['dataset']}[/] snapshot {result['snapshot_id']}, split {result['split']}: "
        f"{result['metrics'][0]['n_users_evaluated']:,} test users, train items excluded from rankings"
    )
    console.print(table)
    segment_keys = [key for key in result["metrics"][0] if key.startswith(f"ndcg@{k} users with ")]
    if segment_keys:
        labels = [key.removeprefix(f"ndcg@{k} users with ").removesuffix(" train ratings") for key in segment_keys]
        segments = Table(
            "model", *labels, header_style="bold", title=f"NDCG@{k} by the user's number of training ratings"
        )
        for row in result["metrics"]:
            segments.add_row(
                row["model"], *("–" if math.isnan(row[key]) else f"{row[key]:.4f}" for key in segment_keys)
            )
        console.print(segments)
    for row in result["metrics"]:
        if not math.isnan(row.get("rmse", math.nan)):  # NaN for the ranking-only models
            console.print(f"{row['model']}: rating MAE {row['mae']:.4f}, RMSE {row['rmse']:.4f}")
    if result.get("cold_items"):
        cold = Table("model", "cold-item AUC", "cold items", "users", header_style="bold")
        for row in result["cold_items"]:
            cold.add_row(row["model"], f"{row['cold_item_auc']:.4f}", f"{row['cold_items']:,}", f"{row['users']:,}")
        console.print("cold items (no training interactions):")
        console.print(cold)
    if result.get("cold_users"):
        users = Table("model", f"NDCG@{k}", f"Recall@{k}", "users", header_style="bold")
        for row in result["cold_users"]:
            users.add_row(
                row["model"], f"{row[f'ndcg@{k}']:.4f}", f"{row[f'recall@{k}']:.4f}", f"{row['n_users_evaluated']:,}"
            )
        console.print("cold users (no training ratings; demographics only):")
        console.print(users)
    console.print(f"features: {result['features']}")


def _train(dataset: str, models: list[str] | None, snapshot: str | None, cold_start: bool) -> None:
    from models.families import MODEL_NAMES

    unknown = [name for name in models or [] if name not in MODEL_NAMES]
    if unknown:
        raise typer.BadParameter(
            f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}", param_hint="--model"
        )
    _check_dataset(dataset)
    _flow_process(f"train {dataset}")
    from flows.train import train as train_flow

    result = _run(
        f"training on {dataset}",
        train_flow,
        dataset=dataset,
        models=models,
        snapshot_id=snapshot,
        cold_start=cold_start,
    )
    _print_metrics(result, get_settings().training.k)


@app.command()
def train(
    dataset: DatasetOption = "ml-latest-small",
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Model to fit (repeatable; default: hybrid).")
    ] = None,
    snapshot: Annotated[str | None, typer.Option(help="Snapshot id; default: the latest.")] = None,
) -> None:
    """Fit the given model(s) on the latest snapshot's training split and report held-out metrics."""
    _train(dataset, model or ["hybrid"], snapshot, cold_start=False)


@app.command()
def evaluate(
    dataset: DatasetOption = "ml-latest-small",
    snapshot: Annotated[str | None, typer.Option(help="Snapshot id; default: the latest.")] = None,
    cold_start: Annotated[bool, typer.Option(help="Also measure cold items and cold users.")] = True,
) -> None:
    """Fit every model family on the same split and print one comparison table (and cold start)."""
    _train(dataset, None, snapshot, cold_start)


@app.command()
def pipeline(
    dataset: DatasetOption = "ml-latest-small",
    trials: Annotated[int | None, typer.Option(min=0, help="Optuna trials this run (default: tuning.trials).")] = None,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="Seconds of tuning this run (default: tuning.timeout_seconds).")
    ] = None,
    synthetic_ratings: Annotated[
        int | None, typer.Option(min=1000, help="Ratings to generate for --dataset synthetic.")
    ] = None,
    tuning_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Processes running the trials on one study (default: tuning.workers; >1 needs tuning.storage).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Fail at once when another run is using MOVIEREC_HOME.")
    ] = False,
) -> None:
    """Run the whole pipeline (flow `retrain`): ingest, validate, tune, train, evaluate, register, promote.
    One run at a time per MOVIEREC_HOME: a second one waits for the first (or fails with --no-wait)."""
    _check_dataset(dataset)
    if tuning_workers is not None:  # refused before any work, as the flow would refuse it
        try:
            get_settings().with_tuning_workers(tuning_workers)
        except ConfigError as error:
            raise typer.BadParameter(str(error), param_hint="--tuning-workers") from None
    _flow_process(f"pipeline {dataset}", wait=not no_wait)
    from flows.retrain import retrain

    result = _run(
        f"retraining on {dataset}",
        retrain,
        dataset=dataset,
        trials=trials,
        timeout=timeout,
        synthetic_ratings=synthetic_ratings,
        tuning_workers=tuning_workers,
    )
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        return
    _print_snapshot(result["snapshot"])
    _print_pipeline(result, get_settings())


def _print_pipeline(result: dict, settings) -> None:
    k = settings.training.k
    tuning = result["tuning"]
    counts = ", ".join(f"{count} {state}" for state, count in tuning["counts"].items())
    console.print(
        f"tuning: {tuning['trials_this_run']} trials this run; study {tuning['study']} holds {counts}; "
        f"best validation NDCG@{k} {tuning['best_value']:.4f} (trial {tuning['best_trial']})"
    )
    table = Table(
        header_style="bold",
        title=f"held-out test split ({result['split']}, {result['users_evaluated']:,} users, train items excluded)",
    )
    table.add_column("model", no_wrap=True)
    for _, label in METRIC_COLUMNS:
        table.add_column(label.format(k=k), justify="right")
    for row in result["metrics"]:
        name = "hybrid (tuned, registered)" if row["model"] == "hybrid" else row["model"]
        table.add_row(
            name,
            *(f"{row[key.format(k=k)]:.4f}" for key, _ in METRIC_COLUMNS),
            style="bold" if row["model"] == "hybrid" else None,
        )
    console.print(table)
    registration = result["registration"]
    console.print(
        f"[bold green]registered {registration['name']} version {registration['version']}[/] (alias challenger)"
    )
    console.print(f"promotion gate: {registration['reason']}")
    console.print(f"champion: version {registration['champion_version']}")
    console.print(f"export: {result.get('export') or 'not written (see the run tag export.error)'}", soft_wrap=True)
    uri = result["tracking_uri"]
    console.print("next:")
    # A tracking server is its own UI; a local store needs one started on it.
    shown = (
        uri if uri.startswith(("http://", "https://")) else f".venv/bin/mlflow ui --backend-store-uri {uri} --port 5000"
    )
    console.print(f"  MLflow UI:  {shown}", soft_wrap=True)
    console.print(
        f"  API + page: .venv/bin/movierec serve   (http://{settings.serving.host}:{settings.serving.port}/)",
        soft_wrap=True,
    )
    # `mlflow models serve` starts uvicorn through a shell: the venv's bin must be on PATH.
    console.print(
        f"  MLflow serving: PATH=$PWD/.venv/bin:$PATH MLFLOW_TRACKING_URI={uri} .venv/bin/mlflow models serve "
        f"-m models:/{registration['name']}@champion --env-manager local --port 5001",
        soft_wrap=True,
    )
    seconds = result["stage_seconds"]
    console.print("stage seconds: " + ", ".join(f"{stage} {value:.1f}" for stage, value in seconds.items()))


def _registry():
    from movierec.tracking import runs
    from movierec.tracking.registry import Registry

    settings = get_settings()
    runs.configure(settings)
    return settings, Registry(settings.registered_model_name)


@app.command()
def models() -> None:
    """List the registered model's versions with their aliases, data snapshot and metrics."""
    settings, registry = _registry()
    versions = registry.versions()
    if not versions:
        console.print(f"no versions of '{registry.name}' registered yet; run `movierec pipeline`")
        return
    aliases = registry.aliases()
    k = settings.training.k
    table = Table(
        "version",
        "aliases",
        "created (UTC)",
        "dataset",
        "snapshot",
        "model",
        "served: trained on",
        f"test NDCG@{k}",
        "gate",
        "holdout score",
        header_style="bold",
        caption="served: the bundle the API and exports use, refit on every rating; the test NDCG and the gate's "
        "holdout score are its evaluation twin's, trained on the holdout's training part (its rating count in brackets)",
        title=f"registered model {registry.name}",
    )
    for version in versions:
        tags = version.tags
        created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            str(version.version),
            ", ".join(sorted(aliases.get(str(version.version), []))) or "–",
            created,
            tags.get("dataset", "?"),
            tags.get("snapshot_id", "?"),
            tags.get("model", "–"),
            _trained_on(tags),
            _score(tags.get(f"test_ndcg_at_{k}")),
            tags.get("gate.decision", "–"),
            _score(tags.get("gate.challenger_score")),
        )
    console.print(table)


def _score(tag: str | None) -> str:
    return f"{float(tag):.4f}" if tag else "–"


def _trained_on(tags: dict) -> str:
    """'all 100,836 ratings (twin 80,419)' from a version's tags; a dash for versions without them."""
    served, twin = tags.get("served_ratings"), tags.get("evaluation_ratings")
    return f"all {int(served):,} ratings (twin {int(twin):,})" if served and twin else "–"


def _locked(label: str) -> Callable:
    """A command that moves `champion` holds the home's run lock and the registry's lock in a
    shared PostgreSQL (`movierec.runlock.registry_lock`), waiting for a running pipeline here or
    on another home, so it never interleaves with a run's gate."""
    from movierec.runlock import registry_lock

    def waiting(holders: str) -> None:
        console.print(f"waiting for {escape(holders)} to finish…", soft_wrap=True)

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with _home_lock(label), registry_lock(get_settings(), label, waiting):
                return command(*args, **kwargs)

        return locked

    return decorate


@app.command()
@_locked("promote")
def promote(
    version: Annotated[str, typer.Option("--version", "-v", help="Version to make champion.")],
    force: Annotated[bool, typer.Option(help="Promote even when the gate says no.")] = False,
) -> None:
    """Promote a version to champion by hand if it beats the champion on the current holdout (or --force)."""
    from movierec.tracking.promotion import gate
    from movierec.tracking.served_model import IncompatibleModel, NotAMovierecModel, check_servable
    from movierec.training.protocol import current_holdout

    settings, registry = _registry()
    try:
        chosen = registry.get(version)
    except LookupError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from None
    champion = registry.champion()
    if champion is not None and str(champion.version) == str(version):
        console.print(f"version {version} already is the champion")
        return
    try:  # a version this code cannot serve is never made champion, --force or not
        check_servable(f"models:/{registry.name}/{version}")
    except (IncompatibleModel, NotAMovierecModel) as error:
        console.print(f"[bold red]not promoted:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    try:
        held_out = current_holdout(settings, chosen.tags.get("dataset", settings.ingest.dataset))
    except DataError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from None
    decision = gate(settings, registry, str(version), held_out)
    console.print(f"gate: {decision.reason}")
    if not decision.promote and not force:
        console.print("[bold red]not promoted[/]: the gate says no; pass --force to promote anyway")
        raise typer.Exit(1)
    reason = decision.reason if decision.promote else f"forced by hand: {decision.reason}"
    registry.promote(str(version), reason=reason)
    console.print(f"[bold green]champion: version {version}[/]")


@app.command()
@_locked("rollback")
def rollback() -> None:
    """Move `champion` back to the version that held it before the current one."""
    from movierec.tracking.served_model import IncompatibleModel, NotAMovierecModel, check_servable

    _, registry = _registry()
    try:
        check_servable(f"models:/{registry.name}/{registry.rollback_target()[1]}")
        was, now = registry.rollback()
    except (IncompatibleModel, NotAMovierecModel) as error:
        console.print(f"[bold red]not rolled back:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except LookupError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from None
    console.print(f"[bold green]champion: version {now}[/] (was version {was})")


@app.command()
def deploy(
    work_pool: Annotated[str | None, typer.Option(help="Work pool (default: the one in prefect.yaml).")] = None,
) -> None:
    """Register prefect.yaml's deployments (weekly and manual retraining, daily monitoring) with the Prefect server."""
    _prepare()
    from movierec.deploy import DEFAULT_PREFECT_FILE, api_url
    from movierec.deploy import deploy as deploy_all

    try:
        names = deploy_all(DEFAULT_PREFECT_FILE, work_pool=work_pool)
    except RuntimeError as error:
        console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    for name in names:
        console.print(f"[bold green]deployed[/] {name}")
    console.print(
        f"server {api_url()}; start a worker: scripts/prefect-server.sh --worker (or prefect worker start --pool movierec)"
    )
    console.print("trigger a run: .venv/bin/prefect deployment run 'retrain/retrain-manual' -p trials=5")


stack_app = typer.Typer(
    help="The shared services on loopback: PostgreSQL, MLflow and Prefect servers, workers, the API."
)
app.add_typer(stack_app, name="stack")


def _stack():
    from movierec.stack import Stack

    return Stack(get_settings(), say=lambda text: console.print(escape(text), soft_wrap=True))


@stack_app.command("up")
def stack_up() -> None:
    """Start PostgreSQL, the MLflow tracking server, the Prefect server and workers and the API
    (what is running already is kept), wait until each answers, and print the variables that
    point movierec, MLflow and Prefect at them: eval "$(movierec stack up | grep ^export)"."""
    from movierec.stack import StackError

    stack = _stack()
    try:
        exports = stack.up()
    except StackError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    for line in stack.status():
        console.print(escape(line.line()), soft_wrap=True)
    for name, value in exports.items():
        sys.stdout.write(f"export {name}={shlex.quote(value)}\n")


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `movierec stack up` started (data stays under MOVIEREC_HOME/stack)."""
    from movierec.stack import StackError

    try:
        stopped = _stack().down()
    except StackError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack_app.command("status")
def stack_status() -> None:
    """One line per service: pid, address, health. Exit code 1 when one is not healthy."""
    lines = _stack().status()
    for line in lines:
        sys.stdout.write(line.line() + "\n")
    if any(line.health not in ("healthy", "running") for line in lines):
        raise typer.Exit(1)


MONITOR_JSON_KEYS = ("champion_version", "window", "metrics", "alerts")


def _since(text: str | None, now: datetime) -> datetime | None:
    """--since: an ISO date or date-time (UTC unless it names a zone) or a span back from now
    (90m, 24h, 7d, 2w)."""
    if text is None:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    span = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", text.strip().lower())
    if span:
        return now - timedelta(**{units[span.group(2)]: float(span.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an ISO date/time (2026-11-30, 2026-11-30T06:00) nor a span (90m, 24h, 7d, 2w)",
            param_hint="--since",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command()
def monitor(
    since: Annotated[
        str | None,
        typer.Option(
            help="Start of the window: an ISO date/time (UTC unless it names a zone) or a span back from now "
            "(90m, 24h, 7d). Default: where the last monitor run ended (the champion's registration at first)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    fail_on_alert: Annotated[
        bool, typer.Option("--fail-on-alert", help="Exit with code 3 when an alert fired.")
    ] = False,
) -> None:
    """Monitor the champion (flow `monitor`): data drift, serving health, online and offline
    quality, beyond-accuracy measures; alerts; an MLflow run, an HTML report and the history.
    Like every flow command it waits for a pipeline running on the same MOVIEREC_HOME."""
    start = _since(since, datetime.now(UTC))
    _flow_process("monitor")
    from flows.monitor import monitor as monitor_flow

    result = _run("monitoring", monitor_flow, since=start)
    if as_json:
        sys.stdout.write(json.dumps({key: result[key] for key in MONITOR_JSON_KEYS}, indent=2) + "\n")
    else:
        _print_monitor(result)
    if fail_on_alert and result["alerts"]:
        raise typer.Exit(3)


def _print_monitor(result: dict) -> None:
    from movierec.monitoring.report import shown

    window = result["window"]
    console.print(
        f"[bold]champion version {result['champion_version']}[/], window {window['since']} to {window['until']} "
        f"({window['days']:.2f} days, start: {window['source']})",
        soft_wrap=True,
    )
    table = Table("measure", "value", header_style="bold")
    alerted = {alert["metric"] for alert in result["alerts"]}
    for name, value in result["metrics"].items():
        table.add_row(name, shown(value), style="bold red" if name in alerted else None)
    console.print(table)
    for alert in result["alerts"]:
        console.print(f"[bold red]ALERT[/] {escape(alert['metric'])}: {escape(alert['message'])}", soft_wrap=True)
    if not result["alerts"]:
        console.print("[bold green]no alert[/]")
    console.print(f"report: {result['report']}", soft_wrap=True)
    console.print(f"MLflow run: {result['run_id']} (experiment {get_settings().monitoring.experiment_name})")
    if result.get("retrain"):
        console.print(escape(result["retrain"]), soft_wrap=True)


QUARANTINE_COLUMNS = (
    "event_id", "dataset", "user_id", "movie_id", "kind", "value", "client", "rule", "quarantined_at", "released_at",
)  # fmt: skip
QuarantineDataset = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Only this dataset's quarantine (default: every dataset).")
]
feedback_app = typer.Typer(help="Feedback held back from training: list and release quarantined events.")
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("quarantined")
def feedback_quarantined(
    released: Annotated[bool, typer.Option("--released", help="Include events released already.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    dataset: QuarantineDataset = None,
) -> None:
    """Feedback events kept out of training (invalid, or part of a burst), with the reason."""
    from movierec.data.feedback import FeedbackStore

    settings = get_settings()
    if not settings.feedback_db.is_file():
        console.print(f"no feedback store at {settings.feedback_db}")
        return
    frame = FeedbackStore(settings.feedback_db).quarantined(include_released=released, dataset=dataset)
    if as_json:
        for record in frame.to_dict(orient="records"):
            sys.stdout.write(json.dumps(record, default=str) + "\n")
        return
    if frame.empty:
        console.print("no quarantined feedback")
        return
    table = Table(show_header=True, header_style="bold")
    for column in QUARANTINE_COLUMNS:
        table.add_column(column)
    for record in frame.head(200).to_dict(orient="records"):
        table.add_row(*(escape(str(record[column] or "")) for column in QUARANTINE_COLUMNS))
    console.print(table)
    counts = frame.groupby("rule").size()
    console.print(
        f"{len(frame):,} event(s): "
        + ", ".join(f"{rule} {count:,}" for rule, count in counts.items())
        + ("" if len(frame) <= 200 else " (first 200 shown; --json for all)")
    )
    for reason in sorted(set(frame["reason"]))[:5]:
        console.print(f"  {escape(reason)}", soft_wrap=True)


@feedback_app.command("release")
def feedback_release(
    event_ids: Annotated[list[str] | None, typer.Argument(help="Event ids to release.")] = None,
    rule: Annotated[str | None, typer.Option(help="Release every held event of this rule.")] = None,
    dataset: QuarantineDataset = None,
) -> None:
    """Let quarantined events into the next snapshot (never an invalid one)."""
    from movierec.data.feedback import FeedbackStore

    settings = get_settings()
    if not event_ids and rule is None:
        console.print("[bold red]error:[/] give event ids or --rule")
        raise typer.Exit(2)
    store = FeedbackStore(settings.feedback_db)
    chosen = list(event_ids or [])
    if rule is not None:
        held = store.quarantined(dataset=dataset)
        chosen += held.loc[held["rule"] == rule, "event_id"].tolist()
    if not chosen:
        console.print(f"nothing held under rule {rule!r}")
        return
    try:
        released = store.release(list(dict.fromkeys(chosen)), dataset=dataset)
    except ValueError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"[bold green]released {len(released):,} event(s)[/]; the next ingestion merges them")


@app.command("export-recs")
def export_recs(
    out: Annotated[str, typer.Option("--out", "-o", help="Parquet file to write (atomically; folders are created).")],
    k: Annotated[
        int | None, typer.Option("--k", min=1, max=1000, help="Movies per user (default: serving.export_k).")
    ] = None,
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="Model to export (default: models:/<registered name>@champion).")
    ] = None,
) -> None:
    """Write every known user's top-k recommendations (user_id, movie_id, rank, score) as Parquet."""
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from movierec.serving.export import export_model
    from movierec.tracking import runs
    from movierec.tracking.served_model import IncompatibleModel

    settings = get_settings()
    runs.configure(settings)
    k = settings.serving.export_k if k is None else k
    model_uri = model_uri or f"models:/{settings.registered_model_name}@champion"
    try:
        path, counts = export_model(model_uri, k, Path(out))
    except (MlflowException, OSError, ValueError, IncompatibleModel, DataError) as error:
        message = error.message if isinstance(error, MlflowException) else str(error)
        console.print(f"[bold red]error:[/] cannot export {model_uri}: {message}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(
        f"[bold green]exported[/] {counts['rows']:,} rows, {counts['users']:,} users, top {k} of {model_uri}: {path}",
        soft_wrap=True,
    )


@app.command("predict-ratings")
def predict_ratings(
    pairs: Annotated[str, typer.Option("--pairs", help="CSV or Parquet file with columns user_id, movie_id.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Parquet file to write (atomically; folders are created).")],
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="Model to use (default: models:/<registered name>@champion).")
    ] = None,
) -> None:
    """Predict the rating of each (user_id, movie_id) pair with the champion's rating predictor."""
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from movierec.errors import DataError
    from movierec.serving.ratings import predict_file
    from movierec.tracking import runs
    from movierec.tracking.served_model import IncompatibleModel, load_bundle

    settings = get_settings()
    runs.configure(settings)
    model_uri = model_uri or f"models:/{settings.registered_model_name}@champion"
    try:
        frame = predict_file(load_bundle(model_uri), Path(pairs), Path(out), model_uri)
    except (MlflowException, OSError, ValueError, IncompatibleModel, DataError) as error:
        message = error.message if isinstance(error, MlflowException) else str(error)
        console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        raise typer.Exit(1) from None
    counts = frame["basis"].value_counts()
    fallbacks = ", ".join(f"{count:,} {basis}" for basis, count in counts.items() if basis != "user and movie")
    console.print(
        f"[bold green]predicted[/] {len(frame):,} ratings with {model_uri}: {out}"
        + (f" (fallbacks: {fallbacks})" if fallbacks else ""),
        soft_wrap=True,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default: serving.port).")] = None,
) -> None:
    """Serve the champion model: recommendation API, web page and /metrics (hot-swaps new champions).
    On an address other than loopback only with a write token (MOVIEREC_SERVING__WRITE_TOKEN)."""
    _prepare()
    import uvicorn

    from movierec.serving.app import UVICORN_OPTIONS, create_app

    settings = get_settings()
    host = host or settings.serving.host
    port = port or settings.serving.port
    if not _loopback(host) and settings.serving.write_token is None:
        console.print(
            f"[bold red]error:[/] serving on {escape(host)} would let anyone reach POST /feedback: set a write token "
            "(MOVIEREC_SERVING__WRITE_TOKEN, at least 16 characters) that clients send as `Authorization: Bearer`, "
            "or serve on 127.0.0.1",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    # A tracking server that is down fails the watcher's lookup fast (MLflow retries for minutes
    # by default); the loaded model is served meanwhile and the next poll tries again.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    application = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"[bold green]movierec[/] serving {settings.registered_model_name}@champion on http://{shown}:{port}/ "
        f"(API docs /docs, metrics /metrics)",
        soft_wrap=True,
    )
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False, **UVICORN_OPTIONS)


if __name__ == "__main__":
    app()
