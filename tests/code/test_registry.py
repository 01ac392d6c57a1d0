"""The promotion gate's rule and the registry bookkeeping (aliases, history, clean-up)."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from movierec.tracking.registry import CHALLENGER, CHAMPION, Decision, Registry, beats


@pytest.mark.parametrize(
    ("challenger", "champion", "margin", "expected"),
    [
        (0.20, None, 0.001, True),  # first model: nothing to beat
        (0.20, 0.18, 0.001, True),  # better by more than the margin
        (0.1805, 0.18, 0.001, False),  # better, but within the margin
        (0.18, 0.18, 0.0, False),  # a tie keeps the champion
        (0.17, 0.18, 0.0, False),  # worse
        (0.181, 0.18, 0.0, True),  # zero margin: strictly better is enough
    ],
)
def test_gate_rule(challenger, champion, margin, expected):
    assert beats(challenger, champion, margin) is expected


def test_decision_explains_itself():
    first = Decision(True, "1", 0.2, None, None, 0.001, "ndcg@10")
    assert "first model" in first.reason
    assert first.tags()["gate.champion_score"] == ""
    worse = Decision(False, "2", 0.17, "1", 0.18, 0.001, "ndcg@10")
    assert "does not beat champion v1" in worse.reason and "-0.0100" in worse.reason
    assert worse.tags()["gate.decision"] == "rejected"


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture
def registry(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.create_experiment("registry-test", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    return Registry("movierec-test")


def _logged_model() -> str:
    with mlflow.start_run():
        return mlflow.pyfunc.log_model(name="model", python_model=Constant()).model_uri


def test_registration_sets_challenger_and_promotion_keeps_history(registry):
    uris = [_logged_model() for _ in range(3)]
    for uri in uris:
        with registry.registration(uri, {"dataset": "synthetic"}) as version:
            assert str(registry.version_by_alias(CHALLENGER).version) == str(version.version)
            registry.promote(version.version, reason="test")
    assert str(registry.champion().version) == "3"
    assert registry.history() == ["1", "2", "3"]
    assert set(registry.aliases()["3"]) == {CHALLENGER, CHAMPION}
    assert registry.rollback() == ("3", "2")
    assert str(registry.champion().version) == "2"
    assert registry.rollback() == ("2", "1")
    with pytest.raises(LookupError, match="no earlier champion"):
        registry.rollback()
    assert str(registry.champion().version) == "1"


def test_failure_inside_registration_deletes_the_new_version(registry):
    with registry.registration(_logged_model(), {}) as version:
        registry.promote(version.version, reason="first")
    with pytest.raises(RuntimeError, match="injected"), registry.registration(_logged_model(), {}) as version:
        registry.record(Decision(True, version.version, 0.3, "1", 0.2, 0.0, "ndcg@10"))
        raise RuntimeError("injected failure before the alias moved")
    assert [str(v.version) for v in registry.versions()] == ["1"]
    assert str(registry.champion().version) == "1"
    assert registry.history() == ["1"]
    assert registry.version_by_alias(CHALLENGER) is None  # the alias went with the deleted version


def test_history_ignores_versions_deleted_after_it_was_written(registry, monkeypatch):
    with registry.registration(_logged_model(), {}) as version:
        registry.promote(version.version, reason="first")

    def alias_fails(*args, **kwargs):
        raise RuntimeError("registry unreachable")

    with pytest.raises(RuntimeError, match="unreachable"), registry.registration(_logged_model(), {}) as version:
        monkeypatch.setattr(registry.client, "set_registered_model_alias", alias_fails)
        registry.promote(version.version, reason="second")  # history tag written, alias move fails
    monkeypatch.undo()
    assert str(registry.champion().version) == "1"
    assert registry.history() == ["1"]


def test_the_experiment_is_tagged_as_model_training_so_the_ui_opens_the_runs_view(tmp_path, monkeypatch):
    from movierec.settings import get_settings
    from movierec.tracking.runs import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, configure

    monkeypatch.setenv("MOVIEREC_HOME", str(tmp_path / "home"))
    settings = get_settings()
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment_id = configure(settings)
    assert (
        client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG]
        == MODEL_TRAINING_KIND
        == "custom_model_development"
    )
    # An experiment made before the tag existed gets it on the next configure.
    client.delete_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG)
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags
    assert configure(settings) == experiment_id
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    mlflow.set_tracking_uri(None)
