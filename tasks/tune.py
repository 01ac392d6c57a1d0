"""Prefect tasks of the tuning stage: the Optuna study of the LightFM hybrid
(`movierec.training.tuning`), run by this process or by `tuning.workers` processes at once.

One worker runs the trials here, featurising through the cached `build features` task. Several
run as `tuning worker N` task runs on Prefect's process pool: each opens the study the stage
created, runs its share of the trial budget with the whole timeout, and featurises in memory
(the cache's result files are written in place, which concurrent writers of one key would tear).
"""

from __future__ import annotations

import os

import mlflow
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.task_runners import ProcessPoolTaskRunner

from features.splits import Split
from features.tables import CanonicalTables
from movierec import runtime
from movierec.settings import Settings
from movierec.tracking import runs
from movierec.training import tuning
from tasks.features import build_features


@task(name="tune hybrid with Optuna", cache_policy=NO_CACHE)
def tune_hybrid(
    settings: Settings,
    dataset: str,
    snapshot_id: str,
    tables: CanonicalTables,
    held_out: Split,
    validation: Split,
    trials: int | None,
    timeout: float | None,
) -> tuning.Tuned:
    name = tuning.open_study(settings, dataset, snapshot_id, tables, held_out, trials, timeout)
    parent_run_id = mlflow.active_run().info.run_id
    workers = settings.tuning.workers
    if workers == 1 or trials == 0:

        def features(item_groups: dict[str, float], user_groups: dict[str, float]):
            return build_features(settings, snapshot_id, tables, validation, "validation", item_groups, user_groups)

        ran = tuning.run_worker(settings, name, tables, validation, trials, timeout, parent_run_id, features=features)
        return tuning.finish(settings, name, ran)

    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    with ProcessPoolTaskRunner(
        max_workers=workers, initializer=_join, initargs=(settings, api_url, os.getpid())
    ) as runner:
        futures = [
            runner.submit(
                tuning_worker,
                {
                    "settings": settings,
                    "name": name,
                    "tables": tables,
                    "validation": validation,
                    "trials": share,
                    "timeout": timeout,
                    "parent_run_id": parent_run_id,
                    "worker": worker,
                },
            )
            for worker, share in enumerate(tuning.shares(trials, workers))
        ]
        ran = sum(future.result() for future in futures)
    return tuning.finish(settings, name, ran)


# One worker's loop, as a task run of its own on the process pool.
tuning_worker = task(name="tuning worker", task_run_name="tuning worker {worker}", cache_policy=NO_CACHE)(
    tuning.run_worker
)


def _join(settings: Settings, api_url: str, parent: int) -> None:
    """Set-up of a worker process: the run's Prefect API (not a temporary server of its own), the
    run's MLflow stores and logging, and an exit when the run's process dies (`kill -9`
    included), so no worker goes on adding trials for a dead run."""
    os.environ["PREFECT_API_URL"] = api_url
    runtime.configure(settings)
    runtime.exit_with_parent(parent)
    runs.configure(settings)
