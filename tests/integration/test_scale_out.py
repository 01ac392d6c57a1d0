"""Scale-out: the export and the promotion gate's scoring as user shards, Prefect task runs on a
dask.distributed cluster (prefect-dask's DaskTaskRunner at `distributed.dask_address`), giving
exactly what one process gives."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest
from registered import register_champion

from features.splits import user_temporal_split
from movierec.serving.export import export_model, export_recommendations
from movierec.settings import get_settings
from movierec.tracking import promotion
from movierec.tracking.registry import Registry
from movierec.tracking.served_model import load_bundle
from tasks import export as export_stage
from tasks import register as register_stage
from tasks.shards import worker_bundle


@pytest.fixture
def dask_cluster(prefect_api, monkeypatch):
    """`start(n)`: a local cluster of n worker processes, its scheduler address; closed at the end."""
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    # Workers are processes started now: they find the test's Prefect API and home in their environment.
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    clusters = []

    def start(workers: int) -> str:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        clusters.append(cluster)
        return cluster.scheduler_address

    yield start
    for cluster in clusters:
        cluster.close()


def loaded_on_workers(settings) -> dict[str, int]:
    """Per Dask worker, how many bundles it holds (`tasks.shards.worker_bundle`)."""
    from distributed import Client

    with Client(settings.distributed.dask_address) as client:
        return client.run(lambda: __import__("tasks.shards").shards.worker_bundle.cache_info().currsize)


def test_the_export_on_one_or_two_dask_workers_writes_what_one_process_writes(
    home, tmp_path, dask_cluster, monkeypatch
):
    registered = register_champion(n_ratings=8_000)
    model_uri = f"models:/{registered.name}/{registered.version}"
    path, counts = export_model(model_uri, 5, tmp_path / "one-process.parquet")
    assert counts == {"rows": len(pd.read_parquet(path)), "users": registered.bundle.n_users}
    # One process scoring the users in batches of the shards' size: the same product shapes, so
    # the same float32 scores bit for bit (BLAS rounds differently for other batch shapes).
    expected = export_recommendations(load_bundle(model_uri), 5, batch_size=37)

    for workers in (1, 2):
        monkeypatch.setenv("MOVIEREC_DISTRIBUTED__DASK_ADDRESS", dask_cluster(workers))
        monkeypatch.setenv("MOVIEREC_DISTRIBUTED__SHARD_USERS", "37")  # several shards, the last one short
        settings = get_settings()
        out = tmp_path / f"{workers}-workers.parquet"
        export_stage.export_in_shards(settings, model_uri, 5, out)
        pd.testing.assert_frame_equal(pd.read_parquet(out), expected)
        assert sum(loaded_on_workers(settings).values()) >= 1  # the shards ran on the cluster's workers
        assert worker_bundle.cache_info().currsize == 0  # and not in this process
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".parts")] == []  # parts removed
    assert math.ceil(registered.bundle.n_users / 37) > 2


def test_the_gate_scores_shards_on_a_dask_cluster_as_one_process_scores_everyone(home, dask_cluster, monkeypatch):
    first = register_champion(n_ratings=8_000)
    challenger = register_champion(n_ratings=8_000, epochs=2, promote=False)
    registry = Registry(first.name)
    held_out = user_temporal_split(first.tables.ratings)  # the split the versions' twins learned from
    # Without a cluster address the same shards of 41 users run one after the other in this
    # process: the same code and product shapes as on the cluster, so no near-tie can rank
    # differently under another batch shape's BLAS rounding.
    monkeypatch.setenv("MOVIEREC_DISTRIBUTED__SHARD_USERS", "41")
    settings = get_settings()
    with mlflow.start_run():
        local = promotion.gate(
            settings, registry, challenger.version, held_out, register_stage.sharded_scorer(settings, held_out)
        )
    worker_bundle.cache_clear()  # loaded here by the local shards; below, only the workers may load it

    monkeypatch.setenv("MOVIEREC_DISTRIBUTED__DASK_ADDRESS", dask_cluster(2))
    settings = get_settings()
    with mlflow.start_run():
        sharded = promotion.gate(
            settings, registry, challenger.version, held_out, register_stage.sharded_scorer(settings, held_out)
        )
    assert sharded.users == local.users > 41
    assert sharded.challenger_score == pytest.approx(local.challenger_score, rel=1e-12, abs=1e-12)
    assert sharded.champion_score == pytest.approx(local.champion_score, rel=1e-12, abs=1e-12)
    assert sharded.promote == local.promote
    assert sum(loaded_on_workers(settings).values()) >= 1 and worker_bundle.cache_info().currsize == 0
