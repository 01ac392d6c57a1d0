"""The MLflow model registry: versions, the `challenger` / `champion` aliases and the gate.

Every version the pipeline registers gets alias `challenger`. The gate compares it with the
current `champion`, both measured on the same current holdout, and moves `champion` only when
the challenger is better by more than the configured margin; the first version is promoted as
there is nothing to beat. Each version carries its gate result as tags; the registered model
keeps the order of promotions (tag `champion_history`) so `rollback` can step back.

A failed pipeline run must leave the registry as it found it: `Registry.registration` deletes
a version it created when anything after its creation fails, and moving `champion` is always
the last registry write of a run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"


@dataclass(frozen=True)
class Decision:
    promote: bool
    challenger_version: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    margin: float
    metric: str
    # Why the champion could not be measured (a version this code cannot load), if so.
    champion_unloadable: str | None = None
    # Held-out users the decision was measured on (those the champion knew), and those created
    # since the champion, on whom both were measured apart (not part of the decision).
    users: int | None = None
    new_users: int = 0
    new_users_challenger_score: float | None = None
    new_users_champion_score: float | None = None

    @property
    def reason(self) -> str:
        if self.champion_version is None:
            return "no champion yet: the first model is promoted"
        if self.champion_unloadable is not None:
            return (
                f"champion v{self.champion_version} cannot be loaded by this code, so it cannot be served either "
                f"({self.champion_unloadable}); challenger v{self.challenger_version} {self.metric} "
                f"{self.challenger_score:.4f} is promoted in its place"
            )
        difference = self.challenger_score - self.champion_score
        verdict = "beats" if self.promote else "does not beat"
        reason = (
            f"challenger v{self.challenger_version} {self.metric} {self.challenger_score:.4f} {verdict} champion "
            f"v{self.champion_version} {self.champion_score:.4f} by more than {self.margin:g} (difference {difference:+.4f})"
        )
        if self.users is not None:
            reason += f" on the {self.users:,} held-out users champion v{self.champion_version} knew"
        if self.new_users and self.new_users_challenger_score is not None:
            reason += (
                f"; on the {self.new_users:,} users new since then (not part of the decision): challenger "
                f"{self.new_users_challenger_score:.4f}, champion {self.new_users_champion_score:.4f}"
            )
        return reason

    def tags(self) -> dict[str, str]:
        return {
            "gate.decision": "promoted" if self.promote else "rejected",
            "gate.metric": self.metric,
            "gate.challenger_score": f"{self.challenger_score:.6f}",
            "gate.champion_version": self.champion_version or "",
            "gate.champion_score": "" if self.champion_score is None else f"{self.champion_score:.6f}",
            "gate.margin": f"{self.margin:g}",
            "gate.reason": self.reason,
            "gate.users": "" if self.users is None else str(self.users),
            "gate.new_users": str(self.new_users),
            "gate.new_users.challenger_score": _score(self.new_users_challenger_score),
            "gate.new_users.champion_score": _score(self.new_users_champion_score),
        }


def _score(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6f}"


def beats(challenger_score: float, champion_score: float | None, margin: float) -> bool:
    """The gate: no champion, or better by strictly more than `margin`. A tie keeps the champion."""
    if champion_score is None:
        return True
    return challenger_score - champion_score > margin


class Registry:
    def __init__(self, name: str, client: MlflowClient | None = None) -> None:
        self.name = name
        self.client = client or MlflowClient()

    def version_by_alias(self, alias: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def champion(self) -> ModelVersion | None:
        return self.version_by_alias(CHAMPION)

    def get(self, version: str) -> ModelVersion:
        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as error:
            raise LookupError(f"registered model '{self.name}' has no version {version}") from error

    def versions(self) -> list[ModelVersion]:
        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException:
            return []
        return sorted(found, key=lambda version: int(version.version))

    def aliases(self) -> dict[str, list[str]]:
        """version -> its aliases."""
        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException:
            return {}
        by_version: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        return by_version

    @contextmanager
    def registration(self, model_uri: str, tags: dict[str, str]) -> Iterator[ModelVersion]:
        """Register `model_uri` as a new version with alias `challenger`; delete the version
        again if the body raises, so a failed run leaves no half-registered version."""
        version = mlflow.register_model(model_uri, self.name, tags=tags)
        try:
            self.client.set_registered_model_alias(self.name, CHALLENGER, version.version)
            yield version
        except BaseException:
            self.client.delete_model_version(self.name, version.version)
            raise

    def record(self, decision: Decision) -> None:
        for key, value in decision.tags().items():
            self.client.set_model_version_tag(self.name, decision.challenger_version, key, value)

    def history(self) -> list[str]:
        """Versions in the order they were promoted, oldest first; deleted versions left out
        (a run that failed after writing the tag deletes its version)."""
        try:
            tags = self.client.get_registered_model(self.name).tags
        except MlflowException:
            return []
        existing = {str(version.version) for version in self.versions()}
        return [version for version in json.loads(tags.get(HISTORY_TAG, "[]")) if version in existing]

    def promote(self, version: str, *, reason: str) -> None:
        """Point `champion` at `version` (the one registry write that changes what is served)."""
        history = [v for v in self.history() if v != str(version)] + [str(version)]
        self.client.set_model_version_tag(self.name, str(version), "promoted_at", datetime.now(UTC).isoformat())
        self.client.set_model_version_tag(self.name, str(version), "promotion_reason", reason)
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))

    def rollback_target(self) -> tuple[str, str]:
        """(current champion, the version promoted before it): what `rollback` would do."""
        current = self.champion()
        history = self.history()
        if current is None or len(history) < 2 or history[-1] != str(current.version):
            raise LookupError(f"registered model '{self.name}' has no earlier champion to roll back to")
        return str(current.version), history[-2]

    def rollback(self) -> tuple[str, str]:
        """Move `champion` back to the version promoted before the current one: (from, to)."""
        current, previous = self.rollback_target()
        history = self.history()
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history[:-1]))
        self.client.set_model_version_tag(self.name, current, "rolled_back_at", datetime.now(UTC).isoformat())
        self.client.set_registered_model_alias(self.name, CHAMPION, previous)
        return current, previous
