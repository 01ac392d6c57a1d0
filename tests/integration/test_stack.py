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
from cli_runs import own_settings

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


def _cli(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """`movierec stack ARGS`, or with `program` another program of the venv, with only this home's settings."""
    # The API (started by `up`, inheriting this) looks the champion up every second.
    program = extra.pop("program", None)
    env = own_settings(home, **{"MOVIEREC_STACK__WORKERS": "1", "MOVIEREC_SERVING__POLL_SECONDS": "1", **extra})
    command = [sys.executable, "-m", "movierec.cli", "stack", *args] if program is None else [program, *args]
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


def _wait(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_up_status_down_and_up_again(stack_home, monkeypatch):
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

    # The tracking server dies while serving: the API serves the loaded champion, says the
    # registry is unreachable, and recovers by itself once the server is back (`up` restarts it).
    from registered import register_champion

    monkeypatch.setenv("MOVIEREC_HOME", str(stack_home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", exports["MLFLOW_TRACKING_URI"])
    champion = register_champion()
    _wait(lambda: httpx.get(f"{api}/readyz").json().get("model_version") == champion.version)
    user = int(champion.bundle.user_ids[0])
    os.killpg(_pids(stack_home)["mlflow"], 9)
    _wait(lambda: not httpx.get(f"{api}/readyz").json()["registry"]["reachable"])
    ready = httpx.get(f"{api}/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == champion.version
    assert "Connection" in ready.json()["registry"]["detail"] or "connect" in ready.json()["registry"]["detail"]
    served = httpx.get(f"{api}/users/{user}/recommendations")
    assert served.status_code == 200 and served.json()["model_version"] == champion.version
    down = _cli(stack_home, "status")
    assert down.returncode == 1 and "mlflow" in next(line for line in down.stdout.splitlines() if "not running" in line)
    assert _cli(stack_home, "up").returncode == 0
    _wait(lambda: httpx.get(f"{api}/readyz").json()["registry"]["reachable"])
    assert httpx.get(f"{api}/metrics").text.count("movierec_registry_reachable 1.0") == 1
    pids = _pids(stack_home)

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


def test_two_retrains_triggered_at_once_run_one_after_the_other(stack_home):
    """The retrain deployment triggered twice on the stack: both flow runs start, the home's run
    lock makes the second wait, and the registry ends consistent with one champion."""
    from cli_runs import QUICK

    started = _cli(stack_home, "up", MOVIEREC_STACK__WORKERS="2", **QUICK)
    assert started.returncode == 0, started.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines())
    bin_dir = Path(sys.executable).parent
    deployed = _cli(stack_home, "deploy", program=str(bin_dir / "movierec"), **exports)
    assert deployed.returncode == 0, deployed.stderr
    parameters = ["-p", "dataset=synthetic", "-p", "trials=1", "-p", "synthetic_ratings=4000"]
    for _ in range(2):
        triggered = _cli(stack_home, "deployment", "run", "retrain/retrain-manual", *parameters,
                         program=str(bin_dir / "prefect"), **exports)  # fmt: skip
        assert triggered.returncode == 0, triggered.stderr

    api = exports["PREFECT_API_URL"]
    deployment = httpx.get(f"{api}/deployments/name/retrain/retrain-manual").json()["id"]

    def runs() -> list[dict]:
        """The two triggered runs (not their subflows, nor the schedules' future runs)."""
        query = {"deployments": {"id": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return httpx.post(f"{api}/flow_runs/filter", json=query).json()

    _wait(
        lambda: all(run["state_type"] in ("COMPLETED", "FAILED", "CRASHED") for run in runs()) and len(runs()) == 2, 600
    )
    finished = runs()
    assert [run["state_type"] for run in finished] == ["COMPLETED", "COMPLETED"], finished
    # Both ran at once as flow runs, but not inside the lock: the later one waited for the first.
    first, second = sorted(finished, key=lambda run: run["end_time"])
    assert second["start_time"] < first["end_time"]
    logs = "".join((stack_home / "stack" / "logs" / f"worker-{n}.log").read_text() for n in (1, 2))
    assert "waiting for run 'retrain synthetic'" in logs

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=exports["MLFLOW_TRACKING_URI"])
    versions = sorted(client.search_model_versions("name='movierec-lightfm'"), key=lambda v: int(v.version))
    assert [v.version for v in versions] == ["1", "2"]
    assert versions[1].tags["gate.champion_version"] == "1"  # the second gate measured the first run's champion
    champions = [v.version for v in versions if "champion" in client.get_model_version(v.name, v.version).aliases]
    assert len(champions) == 1
