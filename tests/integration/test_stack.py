"""`movierec stack up|status|down` with a real PostgreSQL, MLflow and Prefect server, a worker and
the API, as a user runs them (skipped with the reason when PostgreSQL is not installed; `make
test` installs it when it can)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from movierec.stack import StackError, postgres_bin

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack_home():
    try:
        postgres_bin()
    except StackError as error:
        pytest.skip(str(error))
    # PostgreSQL runs as the postgres user when we are root: its data must be where it can reach.
    folder = Path(tempfile.mkdtemp(prefix="movierec-stack-", dir="/var/tmp"))
    folder.chmod(0o755)
    home = folder / "home"
    try:
        yield home
    finally:
        _cli(home, "down")
        shutil.rmtree(folder, ignore_errors=True)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MOVIEREC_", "MLFLOW_", "PREFECT_"))}
    env.update(MOVIEREC_HOME=str(home), MOVIEREC_STACK__WORKERS="1")
    command = [sys.executable, "-m", "movierec.cli", "stack", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _pids(home: Path) -> dict[str, int]:
    pids = {path.stem: json.loads(path.read_text())["pid"] for path in (home / "stack" / "pids").glob("*.pid")}
    pids["postgres"] = int((home / "stack" / "postgres" / "postmaster.pid").read_text().splitlines()[0])
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"


def test_up_status_down_and_up_again(stack_home):
    assert _cli(stack_home, "status").returncode == 1  # nothing runs yet

    started = _cli(stack_home, "up")
    assert started.returncode == 0, started.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines())
    assert set(exports) == {
        "MOVIEREC_HOME",
        "MLFLOW_TRACKING_URI",
        "PREFECT_API_URL",
        "MOVIEREC_TUNING__STORAGE",
        "PGPASSFILE",
    }
    assert exports["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert exports["MOVIEREC_TUNING__STORAGE"].startswith("postgresql+psycopg2://movierec@127.0.0.1:")
    password = (stack_home / "stack" / "secrets" / "postgres-password").read_text().strip()
    assert oct((stack_home / "stack" / "secrets" / "postgres-password").stat().st_mode & 0o777) == "0o600"
    pids = _pids(stack_home)
    assert set(pids) == {"postgres", "mlflow", "prefect", "worker-1", "api"}

    # MLflow: runs and artifacts go through the server into PostgreSQL and the stack's folder.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=exports["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment("stack-test")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "ndcg", 0.25)
    client.log_text(run.info.run_id, "hello", "notes/hello.txt")
    env = {**os.environ, "PGPASSFILE": exports["PGPASSFILE"]}
    port = exports["MOVIEREC_TUNING__STORAGE"].rsplit(":", 1)[1].split("/")[0]
    psql = [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", port, "-U", "movierec", "-d", "mlflow", "-Atc"]
    stored = subprocess.run(
        [*psql, "SELECT name FROM experiments ORDER BY name"], env=env, capture_output=True, text=True
    )
    assert "stack-test" in stored.stdout.split(), stored.stderr
    assert list((stack_home / "stack" / "mlartifacts").rglob("hello.txt"))

    # Optuna on the exported storage: the password comes from PGPASSFILE, not the URL.
    import optuna

    os.environ["PGPASSFILE"] = exports["PGPASSFILE"]
    try:
        study = optuna.create_study(study_name="stack-test", storage=exports["MOVIEREC_TUNING__STORAGE"])
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
        assert len(optuna.load_study(study_name="stack-test", storage=exports["MOVIEREC_TUNING__STORAGE"]).trials) == 2
    finally:
        del os.environ["PGPASSFILE"]

    # Prefect: the pool and its worker, which has reported to the server.
    prefect_url = exports["PREFECT_API_URL"]
    assert httpx.get(f"{prefect_url}/health").status_code == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = httpx.post(f"{prefect_url}/work_pools/movierec/workers/filter", json={}).json()
        if any(worker["name"] == "movierec-worker-1" for worker in workers):
            break
        time.sleep(1)
    assert [worker["name"] for worker in workers] == ["movierec-worker-1"]

    # The API answers; no champion is registered in the new tracking server yet.
    api = next(line.split()[3] for line in _cli(stack_home, "status").stdout.splitlines() if line.startswith("api"))
    assert httpx.get(f"{api}/healthz").status_code == 200 and httpx.get(f"{api}/readyz").status_code == 503

    # Idempotent: a second `up` keeps every process; `status` says each is healthy.
    again = _cli(stack_home, "up")
    assert again.returncode == 0 and _pids(stack_home) == pids
    status = _cli(stack_home, "status")
    assert status.returncode == 0 and len(status.stdout.splitlines()) == 5
    # No secret in anything printed or logged.
    logs = "".join(path.read_text(errors="replace") for path in (stack_home / "stack" / "logs").glob("*.log"))
    for text in (started.stdout, started.stderr, again.stderr, status.stdout, logs):
        assert password not in text

    stopped = _cli(stack_home, "down")
    assert stopped.returncode == 0 and "postgres" in stopped.stderr
    assert not any(_alive(pid) for pid in pids.values())
    assert (stack_home / "stack" / "postgres" / "PG_VERSION").is_file()  # the data stays

    # Up again: same addresses, same data.
    restarted = _cli(stack_home, "up")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout == started.stdout
    client = mlflow.MlflowClient(tracking_uri=exports["MLFLOW_TRACKING_URI"])
    assert client.get_run(run.info.run_id).data.metrics == {"ndcg": 0.25}
