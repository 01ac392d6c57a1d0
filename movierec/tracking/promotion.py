"""The promotion gate: the challenger and the current champion, both loaded from the registry with
the one loader (`served_model.load_bundle`), measured by the same code on the same holdout; and
the registry stage of a pipeline run around it (`register_and_promote`).

Each version is measured through its evaluation twin (`evaluation=True`): the configuration it
serves, trained on the holdout's training part only. The served bundle has learned every rating,
the held-out ones included, so it could not be measured on them honestly.

`models.evaluation.holdout_metrics` measures each model as it is served: its own training items
and the holdout's training part are excluded from its rankings, and users it does not know get
its popularity fallback. The holdout is the held-out split of the dataset's current snapshot.

A champion this code cannot load (`IncompatibleModel`: a version logged before the model became
self-contained; `CorruptModel`: its stored files are damaged) cannot be served by this code's API
either; the gate then measures the
challenger alone and says so in its reason, as for the first model.
"""

from __future__ import annotations

from collections.abc import Callable

import mlflow

from features.splits import Split, sample_users
from inference.model import ServingBundle
from models.evaluation import holdout_metrics
from movierec.settings import Settings
from movierec.tracking import reports
from movierec.tracking.registry import CHAMPION, Decision, Registry, beats
from movierec.tracking.served_model import CorruptModel, IncompatibleModel, load_bundle


def holdout_score(settings: Settings, bundle: ServingBundle, held_out: Split, users: set[int] | None = None) -> float:
    """NDCG@k of `bundle` as served on `held_out` (its test part restricted to `users` if given;
    NaN when none of them has a held-out positive)."""
    k = settings.training.k
    test = held_out.test if users is None else held_out.test[held_out.test["user_id"].isin(users)]
    metrics = holdout_metrics(bundle, held_out.train, test, k=k, threshold=settings.training.positive_threshold)
    return metrics[f"ndcg@{k}"] if metrics["n_users_evaluated"] else float("nan")


# How the gate measures a version: (its `models:/name/version` URI, its loaded evaluation twin, the
# held-out user ids to score) -> NDCG@k; by default `holdout_score` on the loaded twin, here.
Scorer = Callable[[str, ServingBundle, set[int]], float]


def gate(
    settings: Settings, registry: Registry, version: str, held_out: Split, score: Scorer | None = None
) -> Decision:
    """Measure `version` and the current champion on `held_out`; decide whether to promote.

    The decision is taken on the held-out users (with a positive; past `training.evaluation_users`
    of them, the seeded sample evaluation scores) the champion knew (its snapshot's users): users
    created since (new accounts, whose feedback is in the holdout) could otherwise buy a
    promotion, e.g. by all rating one movie that a model trained on their feedback then ranks
    first. Both models are measured on the new users too, reported beside the decision.
    `score` measures each (default: in this process; `tasks.register` passes one that shards the
    users over a cluster)."""
    if score is None:

        def score(_uri: str, bundle: ServingBundle, users: set[int]) -> float:
            return holdout_score(settings, bundle, held_out, users)

    metric = f"ndcg@{settings.training.k}"
    challenger = load_bundle(f"models:/{registry.name}/{version}", evaluation=True)
    champion = registry.champion()
    champion_bundle, unloadable = None, None
    if champion is not None:
        if str(champion.version) == str(version):
            raise ValueError(f"version {version} of '{registry.name}' already is the champion")
        try:
            champion_bundle = load_bundle(f"models:/{registry.name}@{CHAMPION}", evaluation=True)
        except (IncompatibleModel, CorruptModel) as error:  # it cannot be served either: absent
            unloadable = str(error)
    # The held-out users with a positive (the only ones a ranking metric counts), or the seeded
    # sample of them evaluation scored too (`training.evaluation_users`).
    training = settings.training
    positives = held_out.test.loc[held_out.test["rating"] >= training.positive_threshold, "user_id"]
    held_users = set(sample_users(positives.to_numpy(), training.evaluation_users, training.seed).tolist())
    known = held_users if champion_bundle is None else held_users & set(champion_bundle.user_ids.tolist())
    new = held_users - known
    challenger_uri = f"models:/{registry.name}/{version}"
    champion_uri = None if champion is None else f"models:/{registry.name}/{champion.version}"
    challenger_score = score(challenger_uri, challenger, known)
    champion_score = None if champion_bundle is None else score(champion_uri, champion_bundle, known)
    new_scores = (None, None)
    if new and champion_bundle is not None:
        new_scores = (score(challenger_uri, challenger, new), score(champion_uri, champion_bundle, new))
    margin = settings.promotion.margin
    return Decision(
        promote=beats(challenger_score, champion_score, margin),
        challenger_version=str(version),
        challenger_score=challenger_score,
        champion_version=None if champion is None else str(champion.version),
        champion_score=champion_score,
        margin=margin,
        metric=metric,
        champion_unloadable=unloadable,
        users=len(known),
        new_users=len(new) if champion_bundle is not None else 0,
        new_users_challenger_score=new_scores[0],
        new_users_champion_score=new_scores[1],
    )


def register_and_promote(
    settings: Settings,
    model_uri: str,
    held_out: Split,
    tags: dict[str, str],
    card: dict,
    score: Scorer | None = None,
) -> dict:
    """Register the logged model as a new version (alias `challenger`), run the gate (with `score`), record the
    decision on the version and the active run (with the model card: `card` holds the keyword
    arguments of `reports.model_card` but the version), and move `champion` last. A failure
    anywhere here deletes the new version, so the registry is left as it was."""
    registry = Registry(settings.registered_model_name)
    with registry.registration(model_uri, tags) as version:
        decision = gate(settings, registry, version.version, held_out, score)
        registry.record(decision)
        run_metrics = {"gate_challenger_score": decision.challenger_score}
        if decision.champion_score is not None:
            run_metrics["gate_champion_score"] = decision.champion_score
        mlflow.log_metrics(run_metrics)
        mlflow.set_tags(
            {
                "registered_version": version.version,
                "gate.decision": decision.tags()["gate.decision"],
                "gate.reason": decision.reason,
            }
        )
        mlflow.log_text(
            reports.model_card(**card, version=version.version) + reports.gate_section(decision), "model_card.md"
        )
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
