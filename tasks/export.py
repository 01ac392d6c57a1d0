"""Prefect task of the retrain flow's last stage: the champion's batch export.

After the registry stage the flow makes sure `exports_dir/<name>-v<champion>-top<k>.parquet`
exists: every known user's top-k from the champion's bundle (`movierec.serving.export`). The file name
holds the version and k and a version's bundle never changes, so an existing file is complete
(written atomically) and current: it is computed only when the champion changed (or was
promoted by hand, or k changed, or the file was removed); a run whose challenger was rejected
keeps the existing file. The path is a tag of the run (`export_path`), not an artifact (it can be
large).

A failed export does not fail the run: the registry writes are done by then, and a failed run
must never have moved the champion. The error becomes tag `export.error` and a warning; the flow
reports no path, and `movierec export-recs` writes the file by hand.
"""

from __future__ import annotations

import logging

import mlflow
from prefect import task
from prefect.cache_policies import NO_CACHE

from movierec.serving.export import export_model, export_path
from movierec.settings import Settings

log = logging.getLogger("movierec")


@task(name="export recommendations", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def export_recommendations(settings: Settings, name: str, version: str) -> str:
    """Write the champion's top-k export unless the file for this version and k exists; its path."""
    k = settings.serving.export_k
    out = export_path(settings.exports_dir, name, version, k)
    if not out.exists():
        export_model(f"models:/{name}/{version}", k, out)
    return str(out)


def export_champion(settings: Settings, registration: dict) -> str | None:
    """The export stage of the retrain flow (inside its MLflow run): the champion's export path,
    or None (with a warning and tag `export.error`) when there is no champion or the export fails."""
    version = registration.get("champion_version")
    if version is None:
        return None
    try:
        path = export_recommendations(settings, registration["name"], str(version))
    except Exception as error:
        log.warning("batch export of %s v%s failed: %s", registration["name"], version, error)
        mlflow.set_tag("export.error", f"{type(error).__name__}: {error}"[:4000])
        return None
    mlflow.set_tag("export_path", path)
    return path
