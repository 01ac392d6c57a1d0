"""The one typed settings object.

Sources, highest priority first: keyword arguments, ``MOVIEREC_*`` environment variables
(nested keys joined with ``__``), the YAML file (``MOVIEREC_CONFIG`` or ``mlflow.yaml`` in the
working directory, else the one at the repository root), then the defaults below. MLflow's own
environment variables override the ``mlflow`` section, as MLflow users expect.

Strict: an unknown key (a typo in the YAML file or in a nested ``MOVIEREC_SECTION__KEY``
variable) or a value of the wrong type or outside its choices is a `ConfigError` that names the
key and where it came from (the file, the variable), never silently ignored.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from movierec.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "MOVIEREC_"

# Choices, spelled out here so that reading settings imports nothing heavy; tests check each
# against its home (movierec.data.datasets, models.families, features.items / features.users).
DatasetName = Literal["ml-100k", "ml-1m", "ml-latest-small", "ml-25m", "ml-32m", "synthetic"]
BaselineName = Literal["popularity", "item_knn", "ease", "user_knn", "content", "mf", "biased_mf"]
ItemFeatureGroup = Literal["identity", "genre", "year", "tag", "keyword", "cast", "director", "language", "text"]
UserFeatureGroup = Literal["identity", "age", "gender", "occupation", "taste"]
SplitKind = Literal["user_temporal", "global_temporal", "random"]
LightFMLoss = Literal["warp", "bpr", "warp-kos", "logistic"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Section(BaseModel):
    """A section of the settings file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def config_file() -> Path | None:
    """MOVIEREC_CONFIG (which must exist), else ./mlflow.yaml, else the checkout's mlflow.yaml;
    None for an install used outside a checkout (the defaults below are that file's values)."""
    explicit = os.environ.get("MOVIEREC_CONFIG")
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"MOVIEREC_CONFIG names {explicit}, which is not a file")
        return Path(explicit)
    for candidate in (Path("mlflow.yaml"), REPO_ROOT / "mlflow.yaml"):
        if candidate.is_file():
            return candidate
    return None


class MlflowSettings(Section):
    tracking_uri: str | None = None
    registry_uri: str | None = None
    experiment_name: str = "movierec"
    registered_model_name: str = "movierec-lightfm"


class IngestSettings(Section):
    dataset: DatasetName = "ml-latest-small"
    use_tmdb: bool = True
    download_retries: int = Field(4, ge=0)
    download_backoff_seconds: float = Field(2.0, ge=0)
    download_timeout_seconds: float = Field(60.0, gt=0)
    synthetic_ratings: int = Field(100_000, ge=1_000)
    synthetic_seed: int = 42


class ValidationSettings(Section):
    earliest_timestamp: datetime = datetime(1995, 1, 1, tzinfo=UTC)
    max_future_days: int = Field(1, ge=0)
    min_ratings: int = Field(1_000, ge=1)
    min_users: int = Field(20, ge=1)
    min_items: int = Field(20, ge=1)
    mean_rating_min: float = 2.5
    mean_rating_max: float = 4.5
    min_ratings_per_user: int = Field(1, ge=1)
    share_users_with_min_ratings: float = Field(0.5, ge=0, le=1)
    users_min_ratings_threshold: int = Field(5, ge=1)


class TrainingSettings(Section):
    # Ratings at or above this are implicit positives (on a 5-point scale).
    positive_threshold: float = 4.0
    split: SplitKind = "user_temporal"
    test_share: float = Field(0.2, gt=0, lt=1)
    min_user_ratings: int = Field(5, ge=2)
    cold_item_share: float = Field(0.1, gt=0, lt=1)
    cold_user_share: float = Field(0.1, gt=0, lt=1)
    k: int = Field(10, ge=1, le=100)
    seed: int = 42
    # Users whose ratings make the validation split that tunes the hybrid and selects the candidate
    # (a seeded sample when there are more; None: every user). The evaluation twin and the served
    # model still learn every training rating.
    validation_users: int | None = Field(5_000, ge=100)
    # Users the evaluation stage and the promotion gate score (a seeded sample of the held-out
    # users with a positive when there are more; None: all of them).
    evaluation_users: int | None = Field(10_000, ge=100)
    # How the served model's factors are fitted on every rating. None: from scratch, for as many
    # epochs as the evaluation twin's. n: continued from the twin's factors (the twin learned the
    # holdout's training part) for n epochs over every rating, which saves most of a full fit at
    # scale; the served factors then saw the training part for the twin's epochs plus n.
    continue_epochs: int | None = Field(None, ge=1)
    # LightFM defaults (the tuner of the pipeline overrides them).
    no_components: int = 64
    loss: LightFMLoss = "warp"
    learning_rate: float = 0.05
    item_alpha: float = 0.0
    user_alpha: float = 0.0
    max_sampled: int = 10
    epochs: int = 30
    num_threads: int = Field(1, ge=1)
    item_feature_groups: dict[ItemFeatureGroup, float] = {
        "identity": 1.0,
        "genre": 1.0,
        "year": 0.5,
        "tag": 0.5,
        "keyword": 0.5,
        "director": 0.5,
        "text": 0.5,
    }
    user_feature_groups: dict[UserFeatureGroup, float] = {
        "identity": 1.0,
        "age": 0.5,
        "gender": 0.5,
        "occupation": 0.5,
        "taste": 1.0,
    }

    def lightfm_params(self) -> dict:
        """Keyword arguments of models.factorization.LightFMRecommender."""
        names = (
            "no_components",
            "loss",
            "learning_rate",
            "item_alpha",
            "user_alpha",
            "max_sampled",
            "epochs",
            "num_threads",
        )
        return {**{name: getattr(self, name) for name in names}, "random_state": self.seed}


class TuningSettings(Section):
    # Budget per pipeline run: trials and/or seconds (None: no limit on that axis).
    trials: int | None = Field(20, ge=0)
    timeout_seconds: float | None = Field(420.0, gt=0)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    max_epochs: int = Field(30, ge=1)
    seed: int = 42
    # Any SQLAlchemy URL; None: SQLite under `home`. A shared database lets several worker
    # processes run trials of one study.
    storage: str | None = None
    # Processes running this run's trials on the one study (more than 1 needs a database server
    # as `storage`: SQLite takes one writer at a time). Each gets an even share of `trials`.
    workers: int = Field(1, ge=1, le=64)
    # A running trial writes a heartbeat this often; one silent for two periods (its machine died)
    # is marked FAILED when a worker next starts a trial (a database server's storage only).
    # None: no heartbeat.
    heartbeat_seconds: int | None = Field(60, ge=1)

    @field_validator("workers", mode="after")
    @classmethod
    def _parallel_needs_a_server(cls, workers: int, info: ValidationInfo) -> int:
        storage = info.data.get("storage")
        if workers > 1 and (storage is None or storage.startswith("sqlite")):
            raise ValueError(
                f"{workers} tuning workers need a database server as tuning.storage (MOVIEREC_TUNING__STORAGE, "
                "e.g. the one `movierec stack up` exports): SQLite takes one writer at a time"
            )
        return workers


class PromotionSettings(Section):
    # The challenger becomes champion only if its holdout NDCG@k exceeds the champion's
    # (re-measured on the same holdout) by more than this absolute margin.
    margin: float = Field(0.001, ge=0)


class FeedbackSettings(Section):
    """When feedback is held back from the next snapshot (`movierec.data.feedback.screen_feedback`):
    bursts within a sliding window of arrival times. Quarantined events are kept; `movierec
    feedback quarantined` lists them and `movierec feedback release` lets them in."""

    burst_window_minutes: float = Field(60.0, gt=0)
    # More new users (not in the dataset) than this rating one movie within a window.
    movie_burst_new_users: int = Field(30, ge=1)
    # More new users than this arriving within a window, with more than this share of their
    # ratings on a single movie.
    cohort_new_users: int = Field(100, ge=1)
    cohort_top_movie_share: float = Field(0.3, gt=0, le=1)
    # More events than this from one client (address) within a window.
    client_burst_events: int = Field(5_000, ge=1)


class PipelineSettings(Section):
    # Models measured next to the tuned hybrid (nested MLflow runs, rows of the model card).
    baselines: list[BaselineName] = ["popularity", "item_knn", "ease", "mf"]
    # Cutoffs of the metric@k curves logged as a plot.
    curve_ks: list[int] = [1, 5, 10, 20, 50]


class ServingSettings(Section):
    # Loopback by default; `movierec serve` refuses any other address without `write_token`.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # How often the API checks the registry's `champion` alias for a new version.
    poll_seconds: float = Field(10.0, gt=0)
    # k of batch exports and of the retrain flow's export after promotion.
    export_k: int = Field(20, ge=1, le=100)
    # Known users' recommendation requests scored together at most (`movierec.serving.batching`):
    # one product for the requests that arrived while the last batch was scored; 1 scores each alone.
    batch_users: int = Field(64, ge=1, le=1024)
    # Write endpoints (POST /feedback, POST /recommendations): requests per minute per client
    # address, with bursts up to `write_burst` (a token bucket); 0 disables the limit.
    write_requests_per_minute: int = Field(600, ge=0)
    write_burst: int = Field(100, ge=1)
    # Largest request body accepted (413 beyond).
    max_body_bytes: int = Field(65_536, ge=1_024)
    # Impressions (what the API showed) are kept this many days, and at most this many rows.
    impressions_retention_days: float = Field(90.0, gt=0)
    impressions_max_rows: int = Field(5_000_000, ge=1)
    # How often the API stores its request counts and latencies (kept as long as impressions).
    stats_seconds: float = Field(60.0, gt=0)
    # When set, POST /feedback needs `Authorization: Bearer <token>` (401 otherwise); required
    # to serve on an address other than loopback. Give it in MOVIEREC_SERVING__WRITE_TOKEN rather
    # than in the file; it is never printed.
    write_token: SecretStr | None = Field(None, min_length=16)


class MonitoringSettings(Section):
    """`movierec monitor`: where its runs go, and when a measure raises an alert (null: never).
    A measure raises no alert when it rests on fewer than `min_sample` observations (events,
    impressions, requests or users: whichever it counts)."""

    experiment_name: str = "movierec-monitoring"
    min_sample: int = Field(50, ge=1)
    # Feedback answers an impression when the same user sends it within this many hours after
    # it was shown (or names its impression_id).
    attribution_hours: float = Field(24.0, gt=0)
    # Data drift against the champion's training data.
    rating_psi_max: float | None = Field(0.2, gt=0)
    genre_psi_max: float | None = Field(0.2, gt=0)
    unknown_user_share_max: float | None = Field(0.5, ge=0, le=1)
    unknown_movie_share_max: float | None = Field(0.2, ge=0, le=1)
    ratings_per_day_min_ratio: float | None = Field(None, ge=0)
    ratings_per_day_max_ratio: float | None = Field(None, gt=0)
    schema_failures_max: int | None = Field(0, ge=0)
    # Serving health.
    fallback_share_max: float | None = Field(0.3, ge=0, le=1)
    error_rate_max: float | None = Field(0.01, ge=0, le=1)
    latency_p99_ms_max: float | None = Field(500.0, gt=0)
    # Quality, as a share of what the champion measured on its holdout when registered.
    online_hit_rate_min_ratio: float | None = Field(0.5, ge=0)
    offline_ndcg_min_ratio: float | None = Field(0.5, ge=0)
    champion_max_age_days: float | None = Field(30.0, gt=0)
    # Alerts are POSTed as JSON here too (retried with backoff; a failure never fails the run).
    webhook_url: str | None = Field(None, pattern=r"^https?://\S+$")
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    webhook_retries: int = Field(3, ge=0)
    webhook_backoff_seconds: float = Field(1.0, ge=0)
    # On an alert, trigger this deployment when a Prefect server is configured (else print the
    # command to run).
    retrain_on_alert: bool = False
    retrain_deployment: str = "retrain/retrain-manual"
    # Monitor runs the web page charts.
    page_runs: int = Field(30, ge=1, le=1000)


class DistributedSettings(Section):
    # A running dask.distributed scheduler (e.g. tcp://10.0.0.5:8786) whose workers score the
    # export's and the gate's user shards; None: the shards run in the pipeline's process.
    dask_address: str | None = Field(None, pattern=r"^(tcp|tls|inproc|ucx)://\S+$")
    # Users per shard of the export and of the gate's scoring.
    shard_users: int = Field(50_000, ge=1)


class StackSettings(Section):
    """`movierec stack`: the shared services on loopback (movierec/stack.py). A port of 0 is a
    free one, chosen at the first `up` and kept in <home>/stack/ports.json."""

    postgres_port: int = Field(0, ge=0, le=65535)
    mlflow_port: int = Field(0, ge=0, le=65535)
    prefect_port: int = Field(0, ge=0, le=65535)
    api_port: int = Field(0, ge=0, le=65535)
    # Prefect process workers of work pool `movierec`.
    workers: int = Field(2, ge=0, le=16)
    startup_timeout_seconds: float = Field(180.0, gt=0)


class LoggingSettings(Section):
    prefect_level: LogLevel = "WARNING"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    home: Path = Path(".movierec")
    data_dir: Path | None = None
    mlflow: MlflowSettings = MlflowSettings()
    ingest: IngestSettings = IngestSettings()
    validation: ValidationSettings = ValidationSettings()
    training: TrainingSettings = TrainingSettings()
    tuning: TuningSettings = TuningSettings()
    promotion: PromotionSettings = PromotionSettings()
    pipeline: PipelineSettings = PipelineSettings()
    serving: ServingSettings = ServingSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    distributed: DistributedSettings = DistributedSettings()
    stack: StackSettings = StackSettings()
    logging: LoggingSettings = LoggingSettings()

    @field_validator("home", "data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_file()
        if path is None:
            return init_settings, env_settings
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=path)

    # Derived locations: everything stateful lives under `home`.
    @cached_property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @cached_property
    def downloads_dir(self) -> Path:
        return self.home / "downloads"

    @cached_property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @cached_property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def tracking_uri(self) -> str:
        return (
            os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"
        )

    @property
    def registry_uri(self) -> str:
        return os.environ.get("MLFLOW_REGISTRY_URI") or self.mlflow.registry_uri or self.tracking_uri

    @property
    def experiment_name(self) -> str:
        return os.environ.get("MLFLOW_EXPERIMENT_NAME") or self.mlflow.experiment_name

    @property
    def impressions_db(self) -> Path:
        """SQLite file of the impressions the API recorded (`movierec.data.impressions`)."""
        return self.home / "impressions.db"

    @property
    def feedback_db(self) -> Path:
        """SQLite file of the feedback events the API acknowledged."""
        return self.home / "feedback.db"

    @property
    def monitoring_dir(self) -> Path:
        """Monitoring reports, the history of monitor runs and the append-only alert log."""
        return self.reports_dir / "monitoring"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def optuna_storage(self) -> str:
        return self.tuning.storage or f"sqlite:///{self.home / 'optuna.db'}"

    def with_tuning_workers(self, workers: int) -> Settings:
        """These settings with `workers` tuning processes (a run's override of `tuning.workers`),
        validated as the setting is; a `ConfigError` saying why they cannot be."""
        try:
            tuning = TuningSettings.model_validate({**self.tuning.model_dump(), "workers": workers})
        except ValidationError as error:
            raise ConfigError(
                f"tuning.workers = {workers}: {error.errors()[0]['msg'].removeprefix('Value error, ')}"
            ) from None
        return self.model_copy(update={"tuning": tuning})

    @property
    def registered_model_name(self) -> str:
        return self.mlflow.registered_model_name


def get_settings(**overrides: object) -> Settings:
    """The settings; a `ConfigError` naming each bad key and its source when they are invalid."""
    path = config_file()
    _check_sections(Settings)
    try:
        return Settings(**overrides)
    except yaml.YAMLError as error:
        raise _not_yaml(path, error) from None
    except ValidationError as error:  # the file is read again only to tell where each value came from
        raise ConfigError(describe(error, path, _read_document(path), overrides)) from None
    except SettingsError as error:  # a variable whose value is not the JSON its field needs
        field = re.search(r'field "(\w+)"', str(error))
        prefix = ENV_PREFIX + (field.group(1).upper() if field else "")
        variables = ", ".join(sorted(name for name in os.environ if name.startswith(prefix))) or prefix + "*"
        raise ConfigError(
            f"invalid settings:\n  - environment variable {variables}: {error} (is it valid JSON?)"
        ) from None


def _read_document(path: Path | None) -> Any:
    """The settings file's content (a ConfigError naming the file and line when it is not YAML)."""
    if path is None:
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise _not_yaml(path, error) from None


def _not_yaml(path: Path | None, error: yaml.YAMLError) -> ConfigError:
    mark = getattr(error, "problem_mark", None)
    where = f", line {mark.line + 1}" if mark is not None else ""
    return ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', None) or error})")


def _check_sections(settings_cls: type[BaseSettings]) -> None:
    """`MOVIEREC_<SECTION>__<KEY>` variables name a known section (pydantic ignores the others)."""
    for name in sorted(os.environ):
        rest = name[len(ENV_PREFIX) :] if name.startswith(ENV_PREFIX) else ""
        section = rest.split("__", 1)[0].lower()
        if "__" in rest and section not in settings_cls.model_fields:
            raise ConfigError(
                f"invalid settings:\n  - {section} (environment variable {name}): unknown section; "
                f"known: {', '.join(settings_cls.model_fields)}"
            )


def describe(error: ValidationError, path: Path | None, document: Any, overrides: dict) -> str:
    """One line per problem: the dotted key, where its value came from, what is wrong."""
    lines = []
    for problem in error.errors():
        location = list(problem["loc"])
        is_key = bool(location) and location[-1] == "[key]"  # a dict key (a feature group name)
        if is_key:
            location = location[:-1]
        key = ".".join(str(part) for part in location)
        if location and location[0] in overrides:
            source = "given in code"
        elif (variable := _variable(location)) is not None:
            source = f"environment variable {variable}"
        elif path is not None and _in_document(document, location):
            source = f"in {path}"
        else:
            source = "default"
        if problem["type"] == "extra_forbidden":
            known = _known_keys([str(part) for part in location[:-1]])
            lines.append(f"  - {key} ({source}): unknown key" + (f"; known here: {', '.join(known)}" if known else ""))
        elif is_key:
            lines.append(f"  - {key} ({source}): not a valid key here: {problem['msg']}")
        else:
            shown = "(hidden)" if _is_secret(location) else repr(problem.get("input"))
            lines.append(f"  - {key} = {shown} ({source}): {problem['msg']}")
    return "invalid settings:\n" + "\n".join(lines)


def _is_secret(location: list) -> bool:
    """Whether the settings field at `location` holds a secret (its value is never shown)."""
    model: Any = Settings
    for part in location:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return False
        model = field.annotation
    return SecretStr in (model, *get_args(model))


def _variable(location: list) -> str | None:
    """The MOVIEREC_ variable that set `location` or a section holding it (a JSON value), if any."""
    for end in range(len(location), 0, -1):
        if not all(isinstance(part, str) for part in location[:end]):
            continue
        name = ENV_PREFIX + "__".join(location[:end]).upper()
        if name in os.environ:
            return name
    return None


def _in_document(document: Any, location: list) -> bool:
    for part in location:
        in_dict = isinstance(document, dict) and part in document
        in_list = isinstance(document, list) and isinstance(part, int) and 0 <= part < len(document)
        if not (in_dict or in_list):
            return False
        document = document[part]
    return True


def _known_keys(location: list[str]) -> list[str]:
    """The field names of the settings section at `location` (empty when it is not a section)."""
    model: Any = Settings
    for part in location:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    if get_origin(model) is dict:
        key = get_args(model)[0]
        return [str(value) for value in get_args(key)] if get_origin(key) is Literal else []
    return []
