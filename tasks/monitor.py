"""Prefect tasks of the monitor flow: read the champion and what a window observed, check the
window's ratings with the ingestion suites, publish a run (MLflow, HTML report, history, alert
log), deliver alerts and act on them. The measures themselves are `movierec.monitoring`'s."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import pandas as pd
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from inference.model import ServingBundle
from movierec import runtime
from movierec.data.feedback import FeedbackStore
from movierec.data.impressions import ImpressionStore
from movierec.data.schema import RatingScale
from movierec.data.snapshot import SnapshotStore, arrow_to_pandas
from movierec.data.validation import validate_fresh_ratings
from movierec.errors import DataError
from movierec.monitoring import alerts as alerting
from movierec.monitoring import history, report
from movierec.monitoring.measures import RATING_COLUMNS, Observed, Window, reference_scale
from movierec.monitoring.reference import REFERENCE_TAG, reference_statistics
from movierec.settings import Settings
from movierec.tracking import runs
from movierec.tracking.registry import Registry
from movierec.tracking.served_model import load_bundle

log = logging.getLogger("movierec")


@dataclass
class Champion:
    name: str
    version: str
    dataset: str
    registered_at: datetime
    reference: dict
    bundle: ServingBundle


@task(name="load the champion", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def load_champion(settings: Settings) -> Champion:
    """The champion's served bundle and the statistics of its training data."""
    registry = Registry(settings.registered_model_name)
    version = registry.champion()
    if version is None:
        raise DataError(f"no champion of '{registry.name}' to monitor yet; run `movierec pipeline` first")
    uri = f"models:/{registry.name}/{version.version}"
    dataset = version.tags.get("dataset", settings.ingest.dataset)
    return Champion(
        registry.name,
        str(version.version),
        dataset,
        datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
        _reference(settings, version.tags, dataset),
        load_bundle(uri),
    )


def _reference(settings: Settings, tags: dict, dataset: str) -> dict:
    """The reference stored with the version; for a version registered before monitoring existed,
    computed from its training snapshot when that is still in the home (no hit rate then)."""
    if REFERENCE_TAG in tags:
        return mlflow.artifacts.load_dict(tags[REFERENCE_TAG])
    store = SnapshotStore(settings.snapshots_dir)
    snapshot = store.get(dataset, tags.get("snapshot_id", ""))
    if snapshot is None:
        raise DataError(
            f"the champion has no monitoring reference (tag {REFERENCE_TAG}) and its snapshot "
            f"{tags.get('snapshot_id')} of {dataset} is not in {settings.snapshots_dir}; "
            "register a new champion with `movierec pipeline`"
        )
    log.warning("the champion predates monitoring references: computing one from snapshot %s", snapshot.id)
    tables = store.load(snapshot)
    k = settings.training.k
    ndcg = tags.get(runs.metric_key(f"test_ndcg@{k}"))
    return reference_statistics(
        tables.ratings,
        tables.items,
        RatingScale(**snapshot.lineage["preprocessing"]["rating_scale"]).values(),
        settings.training.positive_threshold,
        holdout=None if ndcg is None else {f"ndcg@{k}": float(ndcg)},
        k=k,
    )


def monitoring_window(settings: Settings, since: datetime | None, until: datetime, registered_at: datetime) -> Window:
    """From `since` if given, else from where the last monitor run of this home ended, else from
    the champion's registration; until `until`. Never before the champion's registration: what
    arrived before it may be its training data, and other versions served it."""
    if since is not None:
        window = Window(since, until, "--since")
    elif last := history.last_runs(settings.monitoring_dir, 1):
        window = Window(datetime.fromisoformat(last[-1]["window"]["until"]), until, "last monitor run")
    else:
        window = Window(registered_at, until, "champion registration")
    if window.since < registered_at:
        return Window(registered_at, until, f"champion registration (after {window.source})")
    return window


@task(name="read the window", cache_policy=NO_CACHE)
def observe(settings: Settings, champion: Champion, window: Window) -> Observed:
    """Feedback received, the champion's impressions (other versions' are only counted) and
    serving statistics stored in the window, and the newest snapshot's ratings newer than the
    champion's training data."""
    since, until = window.since, window.until
    # Opening a store creates an empty one where the API has not written yet.
    feedback = FeedbackStore(settings.feedback_db)
    events = feedback.events(since, until)
    held = feedback.quarantined(dataset=champion.dataset)
    shown = ImpressionStore(settings.impressions_db)
    impressions = shown.read(since, until)
    champions = impressions["model_version"] == champion.version
    return Observed(
        events,
        impressions[champions].reset_index(drop=True),
        shown.read_stats(since, until),
        _newer_ratings(settings, champion, window),
        quarantined=int(held["event_id"].isin(events["event_id"]).sum()),
        other_impressions=int((~champions).sum()),
    )


def _newer_ratings(settings: Settings, champion: Champion, window: Window) -> pd.DataFrame:
    """Ratings of the dataset's newest snapshot after the champion's last training rating, rated
    within the window (feedback merged by a later ingestion, a newer release of the data)."""
    empty = pd.DataFrame({column: pd.Series(dtype="int64") for column in RATING_COLUMNS})
    snapshot = SnapshotStore(settings.snapshots_dir).latest(champion.dataset)
    last = champion.reference.get("last_rating")
    if snapshot is None or last is None:
        return empty.astype({"rating": "float64", "timestamp": "datetime64[ns, UTC]"})
    after = max(pd.Timestamp(last), pd.Timestamp(window.since))
    try:
        table = pq.read_table(
            snapshot.table_path("ratings"),
            columns=RATING_COLUMNS,
            filters=[("timestamp", ">", after), ("timestamp", "<", pd.Timestamp(window.until))],
        )
    except OSError as error:  # pyarrow's errors are OSErrors: a damaged snapshot must not stop monitoring
        log.warning("cannot read the ratings of snapshot %s: %s", snapshot.id, error)
        return empty.astype({"rating": "float64", "timestamp": "datetime64[ns, UTC]"})
    ratings = arrow_to_pandas(table)
    return ratings.astype({"user_id": "int64", "movie_id": "int64", "rating": "float64"})


@task(name="check the window's ratings", cache_policy=NO_CACHE)
def check_ratings(settings: Settings, champion: Champion, observed: Observed) -> list[str] | None:
    """The failed expectations of the ingestion suites on the window's ratings; None without ratings."""
    ratings = observed.ratings(reference_scale(champion.reference))
    if ratings.empty:
        return None
    return validate_fresh_ratings(
        ratings,
        champion.bundle.items[["movie_id"]],
        reference_scale(champion.reference),
        settings,
        dataset=champion.dataset,
    )


@task(name="publish the monitor run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def publish(settings: Settings, champion: Champion, result: dict, distributions: dict) -> dict:
    """Log the run to MLflow (experiment `monitoring.experiment_name`, one run per monitor run),
    write the HTML report, append to the history and the alert log. Returns the run id and the
    report's path."""
    folder = settings.monitoring_dir
    k = int(champion.reference.get("k", settings.training.k))
    earlier = history.last_runs(folder, settings.monitoring.page_runs - 1)
    page = report.render(result, distributions, earlier, k)
    until = datetime.fromisoformat(result["window"]["until"])
    path = folder / f"monitor-{until.strftime('%Y%m%dT%H%M%SZ')}-v{champion.version}.html"
    history.write_text(path, page)
    history.write_text(folder / history.LATEST_REPORT, page)

    experiment_id = runs.experiment(settings, settings.monitoring.experiment_name)
    tags = {
        "champion_version": champion.version,
        "registered_model": champion.name,
        "dataset": champion.dataset,
        "window.since": result["window"]["since"],
        "window.until": result["window"]["until"],
        "window.source": result["window"]["source"],
        "alerts": str(len(result["alerts"])),
        "alerted_metrics": ", ".join(alert["metric"] for alert in result["alerts"]) or "none",
    }
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"monitor v{champion.version} {until:%Y-%m-%d %H:%M}", tags=tags
    ) as run:
        # Stamped with the window's end: the MLflow UI charts each measure over time.
        mlflow.log_metrics(runs.finite_metrics(result["metrics"]), timestamp=int(until.timestamp() * 1000))
        mlflow.log_dict(result, "monitoring/result.json")
        mlflow.log_dict(distributions, "monitoring/distributions.json")
        mlflow.log_text(page, "monitoring/report.html")
    record = {**result, "run_id": run.info.run_id, "report": str(path)}
    history.append(folder, record)
    alerting.append_alert_log(
        folder / history.ALERT_LOG,
        result["alerts"],
        {
            "at": result["window"]["until"],
            "champion_version": champion.version,
            "run_id": run.info.run_id,
        },
    )
    return {"run_id": run.info.run_id, "report": str(path)}


@task(name="deliver alerts", cache_policy=NO_CACHE)
def deliver_alerts(settings: Settings, result: dict) -> bool | None:
    """Each alert to the log; all of them to the webhook if one is set (whether it was delivered;
    None without a webhook or an alert)."""
    for alert in result["alerts"]:
        log.warning("ALERT %s: %s", alert["metric"], alert["message"])
    url = settings.monitoring.webhook_url
    if not url or not result["alerts"]:
        return None
    payload = {"source": "movierec", **{key: result[key] for key in ("champion_version", "window", "alerts")}}
    payload["report"] = result.get("report")
    return alerting.post_webhook(
        url,
        payload,
        retries=settings.monitoring.webhook_retries,
        backoff_seconds=settings.monitoring.webhook_backoff_seconds,
        timeout_seconds=settings.monitoring.webhook_timeout_seconds,
    )


@task(name="retrain on alert", cache_policy=NO_CACHE)
def retrain_on_alert(settings: Settings, champion: Champion, result: dict) -> str | None:
    """With `monitoring.retrain_on_alert` and an alert: trigger the retrain deployment on the
    configured Prefect server, or say which command retrains. What was done, or None."""
    if not settings.monitoring.retrain_on_alert or not result["alerts"]:
        return None
    deployment = settings.monitoring.retrain_deployment
    command = f"movierec pipeline --dataset {champion.dataset}"
    server = runtime.prefect_server_url()
    if server is None:
        message = f"no Prefect server is configured to run deployment {deployment}; to retrain, run: {command}"
        log.warning("%s", message)
        return message
    from prefect.deployments import run_deployment

    try:
        flow_run = run_deployment(deployment, parameters={"dataset": champion.dataset}, timeout=0, as_subflow=False)
    except Exception as error:  # the monitor run has done its work: a failed trigger is reported, not raised
        message = (
            f"could not trigger {deployment} on {server} ({type(error).__name__}: {error}); to retrain, run: {command}"
        )
        log.warning("%s", message)
        return message
    message = f"triggered deployment {deployment} on {server}: flow run {flow_run.name} ({flow_run.id})"
    log.warning("%s", message)
    return message
