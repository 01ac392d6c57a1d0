"""Work split by user range, run as Prefect task runs on a distributed task runner: the export's
and the promotion gate's scoring, the two stages whose cost grows with the number of users.

With `distributed.dask_address` set, the shards are submitted to that dask.distributed cluster
through prefect-dask's `DaskTaskRunner`: each worker process loads the model it scores once
(`worker_bundle`, from the registry, so the workers need the tracking server and its artifact
store, not this machine's memory) and keeps it for the shards that follow. Without an address
the shards run one after the other in this process. Either way the results are combined in user
order, so a cluster of any size gives the result of one process.
"""

from __future__ import annotations

from functools import lru_cache

from prefect import Task
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from inference.model import ServingBundle
from movierec.settings import Settings
from movierec.tracking.served_model import load_bundle


def shard_runner(settings: Settings) -> TaskRunner:
    """The task runner the shards go to: the settings' Dask cluster, or this process."""
    address = settings.distributed.dask_address
    if address is None:
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner  # imported only when a cluster is used

    return DaskTaskRunner(address=address)


def run_shards(settings: Settings, task: Task, shards: list[dict]) -> list:
    """`task` run once per parameter set of `shards` on `shard_runner`; the results in order."""
    with shard_runner(settings) as runner:
        futures = [runner.submit(task, parameters) for parameters in shards]
        return [future.result() for future in futures]


@lru_cache(maxsize=2)
def worker_bundle(model_uri: str, evaluation: bool, tracking_uri: str, registry_uri: str) -> ServingBundle:
    """The bundle of a registered version (a `models:/name/version` URI, which never changes), loaded
    once per worker process."""
    return load_bundle(model_uri, evaluation=evaluation, tracking_uri=tracking_uri, registry_uri=registry_uri)
