"""`movierec`: one subcommand per flow. Run `movierec --help`."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from movierec.console import console, interactive
from movierec.datasets import DATASETS
from movierec.errors import DataError
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


def _check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise typer.BadParameter(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}", param_hint="--dataset")
    return name


def _run(step: str, flow: Callable[..., Any], **parameters: Any) -> Any:
    """Run a flow with a spinner on a terminal; a data error becomes a message and exit code 1."""
    from movierec import runtime

    runtime.hide_data_error_tracebacks()
    runtime.warm_imports("great_expectations")
    try:
        if interactive():
            with console.status(f"{step}…"):
                return flow(**parameters)
        return flow(**parameters)
    except DataError as error:
        console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        raise typer.Exit(1) from None


def _prepare() -> None:
    from movierec import runtime

    runtime.configure(get_settings())


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
    _prepare()
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
    _prepare()
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
    from movierec.snapshot import SnapshotStore

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
        table.add_row(row["model"], *(f"{row[key.format(k=k)]:.4f}" for key, _ in METRIC_COLUMNS), f"{row['train_seconds']:.1f}")
    console.print(f"[bold]{result['dataset']}[/] snapshot {result['snapshot_id']}, split {result['split']}: "
                  f"{result['metrics'][0]['n_users_evaluated']:,} test users, train items excluded from rankings")
    console.print(table)
    segment_keys = [key for key in result["metrics"][0] if key.startswith(f"ndcg@{k} users with ")]
    if segment_keys:
        labels = [key.removeprefix(f"ndcg@{k} users with ").removesuffix(" train ratings") for key in segment_keys]
        segments = Table("model", *labels, header_style="bold", title=f"NDCG@{k} by the user's number of training ratings")
        for row in result["metrics"]:
            segments.add_row(row["model"], *("–" if math.isnan(row[key]) else f"{row[key]:.4f}" for key in segment_keys))
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
            users.add_row(row["model"], f"{row[f'ndcg@{k}']:.4f}", f"{row[f'recall@{k}']:.4f}", f"{row['n_users_evaluated']:,}")
        console.print("cold users (no training ratings; demographics only):")
        console.print(users)
    console.print(f"features: {result['features']}")


def _train(dataset: str, models: list[str] | None, snapshot: str | None, cold_start: bool) -> None:
    from models.compare import MODEL_NAMES

    unknown = [name for name in models or [] if name not in MODEL_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}", param_hint="--model")
    _check_dataset(dataset)
    _prepare()
    from flows.train import train as train_flow

    result = _run(f"training on {dataset}", train_flow, dataset=dataset, models=models, snapshot_id=snapshot, cold_start=cold_start)
    _print_metrics(result, get_settings().training.k)


@app.command()
def train(
    dataset: DatasetOption = "ml-latest-small",
    model: Annotated[list[str], typer.Option("--model", "-m", help="Model to fit (repeatable).")] = ["hybrid"],
    snapshot: Annotated[str | None, typer.Option(help="Snapshot id; default: the latest.")] = None,
) -> None:
    """Fit the given model(s) on the latest snapshot's training split and report held-out metrics."""
    _train(dataset, model, snapshot, cold_start=False)


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
) -> None:
    """Run the pipeline end to end. So far: ingest and validate."""
    _check_dataset(dataset)
    _prepare()
    from flows.ingest import ingest as ingest_flow

    summary = _run(f"ingesting {dataset}", ingest_flow, dataset=dataset)
    _print_snapshot(summary)


if __name__ == "__main__":
    app()
