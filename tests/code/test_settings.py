from pathlib import Path

from movierec.settings import Settings


def test_defaults_put_all_state_under_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.home == tmp_path / ".movierec"
    assert settings.snapshots_dir == tmp_path / ".movierec" / "snapshots"
    assert settings.tracking_uri == f"sqlite:///{tmp_path / '.movierec' / 'mlflow.db'}"
    assert settings.optuna_storage.startswith("sqlite:///") and str(tmp_path) in settings.optuna_storage
    assert settings.data_dir is None


def test_environment_overrides_yaml(tmp_path, monkeypatch):
    config = tmp_path / "custom.yaml"
    config.write_text("home: from-yaml\ningest:\n  synthetic_seed: 5\nmlflow:\n  experiment_name: yaml-exp\n")
    monkeypatch.setenv("MOVIEREC_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    assert Settings().home == tmp_path / "from-yaml"
    assert Settings().ingest.synthetic_seed == 5
    monkeypatch.setenv("MOVIEREC_HOME", str(tmp_path / "from-env"))
    monkeypatch.setenv("MOVIEREC_DATA_DIR", "data")
    monkeypatch.setenv("MOVIEREC_INGEST__SYNTHETIC_SEED", "9")
    settings = Settings()
    assert settings.home == tmp_path / "from-env"
    assert settings.data_dir == tmp_path / "data"
    assert settings.ingest.synthetic_seed == 9


def test_mlflow_variables_override_the_mlflow_section(tmp_path, monkeypatch):
    config = tmp_path / "m.yaml"
    config.write_text("mlflow:\n  tracking_uri: sqlite:///yaml.db\n  experiment_name: yaml-exp\n")
    monkeypatch.setenv("MOVIEREC_CONFIG", str(config))
    settings = Settings()
    assert settings.tracking_uri == "sqlite:///yaml.db"
    assert settings.registry_uri == "sqlite:///yaml.db"
    assert settings.experiment_name == "yaml-exp"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "env-exp")
    assert settings.tracking_uri == "http://127.0.0.1:5000"
    assert settings.experiment_name == "env-exp"


def test_repository_config_is_valid():
    repo_config = Path(__file__).resolve().parents[2] / "mlflow.yaml"
    import yaml

    Settings.model_validate(yaml.safe_load(repo_config.read_text()))
