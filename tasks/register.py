"""Prefect tasks of the registry stage: log the served model, register it as `challenger`, and
promote it to `champion` when the gate (`movierec.promotion`) says so."""

from __future__ import annotations

import mlflow
from mlflow.models.model import ModelInfo
from prefect import task
from prefect.cache_policies import NO_CACHE

from features.splits import Split
from models import compare
from models.factorization import LightFMRecommender
from models.serving import ServingBundle
from movierec import pyfunc, report
from movierec.promotion import gate
from movierec.registry import Decision, Registry
from movierec.schema import CanonicalTables
from movierec.settings import Settings


@task(name="log model to MLflow", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_model(
    settings: Settings, model: LightFMRecommender, prepared: compare.Prepared, tables: CanonicalTables, user_groups: dict[str, float]
) -> ModelInfo:
    bundle = ServingBundle.from_model(model, prepared, tables.users, tables.items, user_groups)
    return pyfunc.log_model(bundle, model.model, name="model")


@task(name="register challenger and run promotion gate", cache_policy=NO_CACHE)
def register_and_promote(
    settings: Settings, model_info: ModelInfo, held_out: Split, tags: dict[str, str], card: dict
) -> dict:
    """Register the logged model as a new version (alias `challenger`), run the gate, record the
    decision on the version and the run (with the model card: `card` holds the keyword arguments
    of `report.model_card` but the version), and move `champion` last. A failure anywhere here
    deletes the new version, so the registry is left as it was."""
    registry = Registry(settings.registered_model_name)
    with registry.registration(model_info.model_uri, tags) as version:
        decision = gate(settings, registry, version.version, held_out)
        registry.record(decision)
        run_metrics = {"gate_challenger_score": decision.challenger_score}
        if decision.champion_score is not None:
            run_metrics["gate_champion_score"] = decision.champion_score
        mlflow.log_metrics(run_metrics)
        mlflow.set_tags({"registered_version": version.version, "gate.decision": decision.tags()["gate.decision"],
                         "gate.reason": decision.reason})
        mlflow.log_text(report.model_card(**card, version=version.version) + gate_section(decision), "model_card.md")
        if decision.promote:
            registry.promote(version.version, reason=decision.reason)
    champion = registry.champion()
    return {
        "name": registry.name,
        "version": version.version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "challenger_score": decision.challenger_score,
        "champion_score": decision.champion_score,
        "champion_version": str(champion.version) if champion else None,
        "metric": decision.metric,
    }


def gate_section(decision: Decision) -> str:
    return (
        "\n\n## Promotion gate\n\n"
        f"- Metric: {decision.metric} on the current held-out split, both models as served.\n"
        f"- Challenger v{decision.challenger_version}: {decision.challenger_score:.4f}\n"
        + (f"- Champion v{decision.champion_version}: {decision.champion_score:.4f}\n" if decision.champion_version else "")
        + f"- Margin: {decision.margin:g}\n- Decision: {'promoted to champion' if decision.promote else 'not promoted'} ({decision.reason})\n"
    )

