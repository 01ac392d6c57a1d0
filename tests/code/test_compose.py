"""docker-compose.yml describes the topology `movierec stack up` runs (Docker cannot run here):
the same commands, ports and URIs as movierec.stack.topology, secrets only in files, pinned
images, loopback ports, health checks."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from movierec.stack import database_url, topology

REPO = Path(__file__).resolve().parents[2]
PORTS = {"postgres": 5432, "mlflow": 5000, "prefect": 4200, "api": 8000}
SERVICES = {"mlflow": "mlflow", "prefect": "prefect-server", "worker": "prefect-worker", "api": "api"}


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_every_service_runs_the_stack_s_command_with_its_environment():
    services = _compose()["services"]
    expected = topology(PORTS, host="0.0.0.0", database_host="postgres", artifacts="/data/mlartifacts")
    for name, service in SERVICES.items():
        command, environment = expected[name]
        assert services[service]["command"] == command, service
        assert environment.items() <= services[service]["environment"].items(), service
        assert services[service]["environment"]["PGPASSFILE"] == "/run/secrets/pgpass"
        assert services[service]["build"] == "." and "pgpass" in services[service]["secrets"]
    # Clients find the servers at the addresses the servers listen on.
    worker, api = services["prefect-worker"]["environment"], services["api"]["environment"]
    assert worker["PREFECT_API_URL"] == f"http://prefect-server:{PORTS['prefect']}/api"
    assert worker["MLFLOW_TRACKING_URI"] == api["MLFLOW_TRACKING_URI"] == f"http://mlflow:{PORTS['mlflow']}"
    assert worker["MOVIEREC_TUNING__STORAGE"] == database_url("postgres", PORTS["postgres"], "optuna")
    # The API serves beyond loopback inside its container: it needs a write token (movierec serve refuses otherwise).
    assert "MOVIEREC_WRITE_TOKEN:?" in api["MOVIEREC_SERVING__WRITE_TOKEN"]


def test_ports_images_health_and_secrets():
    compose = _compose()
    services = compose["services"]
    published = {name: service.get("ports", []) for name, service in services.items()}
    assert published == {
        "postgres": ["127.0.0.1:5432:5432"], "mlflow": ["127.0.0.1:5000:5000"], "prefect-server": ["127.0.0.1:4200:4200"],
        "prefect-worker": [], "api": ["127.0.0.1:8000:8000"],
    }  # fmt: skip
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", services["postgres"]["image"])
    for name in ("postgres", "mlflow", "prefect-server", "api"):
        assert services[name]["healthcheck"]["test"], name
    for name, port in (("mlflow", 5000), ("prefect-server", 4200), ("api", 8000)):
        assert f"127.0.0.1:{port}/" in services[name]["healthcheck"]["test"][-1]
    # The password lives in secret files, never in an environment value or a URL.
    postgres = services["postgres"]["environment"]
    assert (
        postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password" and "POSTGRES_PASSWORD" not in postgres
    )
    text = (REPO / "docker-compose.yml").read_text()
    assert not re.search(r"postgresql\+\w+://movierec:", text)
    assert set(compose["secrets"]) == {"postgres_password", "pgpass"}
    # The databases the stack creates exist in the container too.
    init = (REPO / "docker" / "postgres-init.sql").read_text()
    assert {"prefect", "optuna"} <= set(re.findall(r"CREATE DATABASE (\w+)", init))
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "mlflow"


def test_the_image_installs_from_the_lock():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.MULTILINE)
    assert "uv sync --frozen --no-dev" in dockerfile and "USER movierec" in dockerfile
