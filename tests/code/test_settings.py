"""Settings: sources and their priority, defaults under home, and strictness (unknown keys and bad
values name the key and where it came from)."""

import re
from pathlib import Path
from typing import get_args

import pytest

from movierec.errors import ConfigError
from movierec.settings import (
    BaselineName,
    DatasetName,
    ItemFeatureGroup,
    Settings,
    SplitKind,
    UserFeatureGroup,
    get_settings,
)


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


def _bad_config(tmp_path, monkeypatch, text: str) -> Path:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    monkeypatch.setenv("MOVIEREC_CONFIG", str(config))
    return config


def test_an_unknown_key_in_the_file_names_the_key_and_the_file(tmp_path, monkeypatch):
    config = _bad_config(tmp_path, monkeypatch, "training:\n  epoch: 5\n")
    with pytest.raises(ConfigError) as error:
        get_settings()
    message = str(error.value)
    assert f"training.epoch (in {config}): unknown key" in message and "epochs" in message


def test_an_unknown_nested_variable_names_the_variable(tmp_path, monkeypatch):
    _bad_config(tmp_path, monkeypatch, "home: h\n")
    monkeypatch.setenv("MOVIEREC_TUNING__TRIAL", "3")
    with pytest.raises(
        ConfigError, match=r"tuning\.trial \(environment variable MOVIEREC_TUNING__TRIAL\): unknown key"
    ):
        get_settings()


def test_a_value_outside_its_choices_names_the_key_and_the_choices(tmp_path, monkeypatch):
    config = _bad_config(
        tmp_path,
        monkeypatch,
        "training:\n  split: temporal\n  item_feature_groups: {genre: 1.0, genres: 1.0}\n"
        "pipeline:\n  baselines: [popularity, eas]\n",
    )
    with pytest.raises(ConfigError) as error:
        get_settings()
    message = str(error.value)
    assert (
        f"training.split = 'temporal' (in {config}): Input should be 'user_temporal', 'global_temporal' or 'random'"
        in message
    )
    assert (
        f"training.item_feature_groups.genres (in {config}): not a valid key here: Input should be 'identity'"
        in message
    )
    assert f"pipeline.baselines.1 = 'eas' (in {config}): Input should be 'popularity'" in message


def test_the_cli_prints_the_problem_and_exits_1(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from movierec.cli import app

    config = _bad_config(tmp_path, monkeypatch, "serving:\n  prot: 8000\n")
    result = CliRunner().invoke(app, ["snapshots"])
    assert result.exit_code == 1
    assert f"serving.prot (in {config}): unknown key" in result.output


def test_the_choices_agree_with_their_homes():
    from features.items import ITEM_GROUPS
    from features.splits import SPLITTERS
    from features.users import USER_GROUPS
    from models.families import MODEL_NAMES
    from movierec.data.datasets import DATASETS

    assert set(get_args(DatasetName)) == set(DATASETS)
    assert set(get_args(BaselineName)) == set(MODEL_NAMES) - {"hybrid"}
    assert get_args(ItemFeatureGroup) == ITEM_GROUPS and get_args(UserFeatureGroup) == USER_GROUPS
    assert set(get_args(SplitKind)) <= set(SPLITTERS)


def test_the_example_in_the_settings_file_names_real_keys():
    text = (Path(__file__).resolve().parents[2] / "mlflow.yaml").read_text()
    examples = re.findall(r"MOVIEREC_([A-Z_]+)=", text)
    assert examples
    for example in examples:
        section, _, key = example.lower().partition("__")
        assert key in Settings.model_fields[section].annotation.model_fields, example


def test_values_from_variables_name_the_variable(tmp_path, monkeypatch):
    _bad_config(tmp_path, monkeypatch, "home: h\n")
    monkeypatch.setenv("MOVIEREC_PIPELINE__BASELINES", '["popularity", "hybrid"]')
    with pytest.raises(ConfigError) as error:
        get_settings()
    assert "pipeline.baselines.1 = 'hybrid' (environment variable MOVIEREC_PIPELINE__BASELINES)" in str(error.value)
    monkeypatch.setenv("MOVIEREC_PIPELINE__BASELINES", '["popularity"')
    with pytest.raises(ConfigError, match=r"environment variable MOVIEREC_PIPELINE__BASELINES: .*valid JSON"):
        get_settings()


def test_a_misspelt_section_in_a_variable_is_an_error(tmp_path, monkeypatch):
    _bad_config(tmp_path, monkeypatch, "home: h\n")
    monkeypatch.setenv("MOVIEREC_TRAINIG__K", "5")
    with pytest.raises(ConfigError, match=r"trainig \(environment variable MOVIEREC_TRAINIG__K\): unknown section"):
        get_settings()


def test_a_missing_or_broken_settings_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVIEREC_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match=r"MOVIEREC_CONFIG names .*absent\.yaml, which is not a file"):
        get_settings()
    config = _bad_config(tmp_path, monkeypatch, "training:\n  k: [\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(config))}, line 3: not valid YAML"):
        get_settings()


def test_the_defaults_are_the_settings_files_values(tmp_path, monkeypatch):
    """An install used outside a checkout has no mlflow.yaml: it must behave as with the file."""
    import yaml

    _bad_config(tmp_path, monkeypatch, "{}\n")
    repo_config = Path(__file__).resolve().parents[2] / "mlflow.yaml"
    from_file = Settings.model_validate(yaml.safe_load(repo_config.read_text()))
    assert Settings().model_dump() == from_file.model_dump()


def test_parallel_tuning_needs_a_database_server(tmp_path, monkeypatch):
    _bad_config(tmp_path, monkeypatch, "home: h\n")
    monkeypatch.setenv("MOVIEREC_TUNING__WORKERS", "2")
    with pytest.raises(ConfigError, match=r"tuning\.workers = '2' \(environment variable MOVIEREC_TUNING__WORKERS\)"):
        get_settings()
    monkeypatch.setenv("MOVIEREC_TUNING__STORAGE", "postgresql+psycopg2://movierec@127.0.0.1:5432/optuna")
    settings = get_settings()
    assert settings.tuning.workers == 2
    # A run's override (flow parameter tuning_workers) is held to the same rules.
    assert settings.with_tuning_workers(3).tuning.workers == 3 and settings.tuning.workers == 2
    with pytest.raises(ConfigError, match=r"tuning\.workers = 0: .*greater than or equal to 1"):
        settings.with_tuning_workers(0)
    monkeypatch.delenv("MOVIEREC_TUNING__STORAGE")
    monkeypatch.setenv("MOVIEREC_TUNING__WORKERS", "1")
    with pytest.raises(ConfigError, match=r"tuning\.workers = 2: 2 tuning workers need a database server"):
        get_settings().with_tuning_workers(2)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MOVIEREC_DISTRIBUTED__DASK_ADDRESS", "localhost:8786", r"distributed\.dask_address = 'localhost:8786'"),
        ("MOVIEREC_DISTRIBUTED__SHARD_USERS", "0", r"distributed\.shard_users = '0'.*greater than or equal to 1"),
        (
            "MOVIEREC_TRAINING__VALIDATION_USERS",
            "50",
            r"training\.validation_users = '50'.*greater than or equal to 100",
        ),
        (
            "MOVIEREC_TRAINING__EVALUATION_USERS",
            "-1",
            r"training\.evaluation_users = '-1'.*greater than or equal to 100",
        ),
        ("MOVIEREC_SERVING__BATCH_USERS", "0", r"serving\.batch_users = '0'.*greater than or equal to 1"),
        (
            "MOVIEREC_TRAINING__CONTINUE_EPOCHS",
            "0",
            r"training\.continue_epochs = '0'.*greater than or equal to 1",
        ),
        ("MOVIEREC_SERVING__BATCH_USERS", "2000", r"serving\.batch_users = '2000'.*less than or equal to 1024"),
    ],
)
def test_scale_settings_out_of_bounds_name_the_key_and_variable(tmp_path, monkeypatch, variable, value, message):
    _bad_config(tmp_path, monkeypatch, "home: h\n")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message) as error:
        get_settings()
    assert f"environment variable {variable}" in str(error.value)
