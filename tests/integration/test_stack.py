"""`movierec stack up|status|down` with a real PostgreSQL, MLflow and Prefect server, a worker and
the API, as a user runs them (skipped with the reason when PostgreSQL is not installed; `make
test` installs it when it can)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from cli_runs import own_settings
from processes import alive, command, tree

from movierec.stack import StackError, postgres_bin

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


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


def _signal(pids: list[int], signal_number: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a short-lived child may have ended
            os.kill(pid, signal_number)


def _cli(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """`movierec stack ARGS`, or with `program` another program of the venv, with only this home's settings."""
    # The API (started by `up`, inheriting this) looks the champion up every second.
    program = extra.pop("program", None)
    # Workers (inheriting this from `up`) look for flow runs every 2 s, not Prefect's 10.
    env = own_settings(
        home,
        **{
            "MOVIEREC_STACK__WORKERS": "1",
            "MOVIEREC_SERVING__POLL_SECONDS": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            **extra,
        },
    )
    command = [sys.executable, "-m", "movierec.cli", "stack", *args] if program is None else [program, *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _pids(home: Path) -> dict[str, int]:
    pids = {path.stem: json.loads(path.read_text())["pid"] for path in (home / "stack" / "pids").glob("*.pid")}
    pids["postgres"] = int((home / "stack" / "postgres" / "postmaster.pid").read_text().splitlines()[0])
    return pids


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
    assert not any(alive(pid) for pid in pids.values())
    assert (stack_home / "stack" / "postgres" / "PG_VERSION").is_file()  # the data stays

    # Up again: same addresses, same data.
    restarted = _cli(stack_home, "up")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout == started.stdout
    client = mlflow.MlflowClient(tracking_uri=exports["MLFLOW_TRACKING_URI"])
    assert client.get_run(run.info.run_id).data.metrics == {"ndcg": 0.25}


def test_retrains_at_once_run_one_after_the_other(stack_home):
    """The retrain deployment triggered twice on the stack, and `movierec pipeline` from another
    home on the same services (as a worker on another machine) at the same time: the home's run
    lock makes the second deployment run wait, the lock in PostgreSQL the other home's run, and
    the registry ends consistent: no two runs' registrations interleave, each gate measured the
    champion the run before left, one champion."""
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
    elsewhere = stack_home.parent / "elsewhere"
    other = subprocess.Popen(
        [str(bin_dir / "movierec"), "pipeline", "--dataset", "synthetic", "--synthetic-ratings", "4000", "--trials", "1"],
        cwd=REPO, env=own_settings(elsewhere, **QUICK, **{**exports, "MOVIEREC_HOME": str(elsewhere)}),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

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
    output, _ = other.communicate(timeout=600)
    assert other.returncode == 0, output[-3000:]
    # Both deployment runs ran at once as flow runs, but not inside the lock: the later one waited.
    first, second = sorted(finished, key=lambda run: run["end_time"])
    assert second["start_time"] < first["end_time"]
    logs = output + "".join((stack_home / "stack" / "logs" / f"worker-{n}.log").read_text() for n in (1, 2))
    assert "waiting for run 'retrain synthetic'" in logs
    assert "(one retrain at a time per registry: a lock in PostgreSQL)" in logs

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=exports["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("movierec").experiment_id
    parents = [
        run for run in client.search_runs([experiment], order_by=["start_time"]) if "movierec.pid" in run.data.tags
    ]
    assert len(parents) == 3
    for before, after in itertools.pairwise(parents):  # one after the other, never interleaved
        assert before.info.end_time <= after.info.start_time
    versions = sorted(client.search_model_versions("name='movierec-lightfm'"), key=lambda v: int(v.version))
    assert [v.version for v in versions] == ["1", "2", "3"]
    champion = "1"
    for version in versions[1:]:  # each gate measured the champion the run before left
        assert version.tags["gate.champion_version"] == champion
        champion = version.version if version.tags["gate.decision"] == "promoted" else champion
    champions = [v.version for v in versions if "champion" in client.get_model_version(v.name, v.version).aliases]
    assert champions == [champion]


class Faults:
    """A stack with the retrain deployment, and what the fault test reads from it."""

    def __init__(self, home: Path, exports: dict[str, str]) -> None:
        self.home, self.exports = home, exports
        self.api = exports["PREFECT_API_URL"]
        self.bin = Path(sys.executable).parent
        import mlflow

        self.mlflow = mlflow.MlflowClient(tracking_uri=exports["MLFLOW_TRACKING_URI"])

    def trigger(self, **parameters: str) -> str:
        """`prefect deployment run retrain/retrain-manual -p ...`; the flow run's id."""
        options = [part for name, value in parameters.items() for part in ("-p", f"{name}={value}")]
        options += ["-p", "dataset=synthetic", "-p", "synthetic_ratings=4000"]
        ran = _cli(self.home, "deployment", "run", "retrain/retrain-manual", *options,
                   program=str(self.bin / "prefect"), **self.exports)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        return next(line.split()[-1] for line in ran.stdout.splitlines() if "UUID" in line)

    def state(self, flow_run: str) -> str:
        return httpx.get(f"{self.api}/flow_runs/{flow_run}").json()["state_type"]

    def finished(self, flow_run: str, seconds: float = 300) -> str:
        _wait(lambda: self.state(flow_run) in ("COMPLETED", "FAILED", "CRASHED"), seconds)
        return self.state(flow_run)

    def flow_process(self, flow_run: str) -> int:
        """The process the worker runs `flow_run` in (its environment names the run)."""
        marker = f"PREFECT__FLOW_RUN_ID={flow_run}".encode()

        def found() -> list[int]:
            running = []
            for pid in tree(_pids(self.home)["worker-1"])[1:]:
                with contextlib.suppress(OSError):
                    if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                        running.append(pid)
            return running

        _wait(found, 120)
        return max(found(), key=lambda pid: len(tree(pid)))  # the topmost: its children inherit the variable

    def trials(self) -> dict[int, tuple[str, float | None, str]]:
        """Every trial of the stack's studies: number -> (state, value, failure)."""
        port = self.exports["MOVIEREC_TUNING__STORAGE"].rsplit(":", 1)[1].split("/")[0]
        sql = (
            "SELECT t.number, t.state, v.value, a.value_json FROM trials t LEFT JOIN trial_values v USING (trial_id) "
            "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'failure'"
        )
        command = [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", port, "-U", "movierec", "-d", "optuna",
                   "-AtF", "\t", "-c", sql]  # fmt: skip
        listed = subprocess.run(command, env={**os.environ, "PGPASSFILE": self.exports["PGPASSFILE"]},
                                capture_output=True, text=True)  # fmt: skip
        if listed.returncode != 0:  # no study yet
            return {}
        rows = (line.split("\t") for line in listed.stdout.splitlines())
        return {int(n): (state, float(value) if value else None, failure) for n, state, value, failure in rows}

    def versions(self) -> dict[str, dict]:
        found = self.mlflow.search_model_versions("name='movierec-lightfm'")
        return {
            v.version: {"tags": v.tags, "aliases": self.mlflow.get_model_version(v.name, v.version).aliases}
            for v in found
        }

    def champion(self) -> str | None:
        return next((number for number, v in self.versions().items() if "champion" in v["aliases"]), None)


def test_faults_on_the_stack_lose_nothing(stack_home):
    """On the real stack, through the retrain deployment: the worker killed during (parallel)
    tuning, a flow run killed during registration, PostgreSQL stopped during a run. Each time the
    champion stays, nothing half-done stays visible, and the next run succeeds."""
    from cli_runs import QUICK

    # Trials of up to 30 epochs: long enough to be killed while running.
    slow_trials = {**QUICK, "MOVIEREC_TUNING__MAX_EPOCHS": "30"}
    started = _cli(stack_home, "up", **slow_trials)
    assert started.returncode == 0, started.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines())
    deployed = _cli(stack_home, "deploy", program=str(Path(sys.executable).parent / "movierec"), **exports)
    assert deployed.returncode == 0, deployed.stderr
    stack = Faults(stack_home, exports)

    # 1. kill -9 of the worker during tuning (two tuning processes on the PostgreSQL study).
    first = stack.trigger(trials="40", tuning_workers="2")
    worker = _pids(stack_home)["worker-1"]
    stack.flow_process(first)

    def midway() -> bool:
        states = [state for state, _, _ in stack.trials().values()]
        return states.count("COMPLETE") >= 2 and "RUNNING" in states

    # Trials are short: one may end between a look at the study and the kill. The tuning
    # processes are frozen (SIGSTOP) for the last look, so what it sees is what the kill meets.
    deadline = time.monotonic() + 300
    while True:
        _wait(midway, 300)
        worker_tree = tree(worker)
        tuning = [pid for pid in worker_tree if b"multiprocessing" in command(pid)]
        assert len(tuning) >= 2, worker_tree  # two tuning processes (and multiprocessing's resource tracker)
        _signal(tuning, signal.SIGSTOP)
        if midway():
            break
        _signal(tuning, signal.SIGCONT)
        assert time.monotonic() < deadline, "no look at the study found a trial running"
    _signal([pid for pid in worker_tree if pid not in tuning], signal.SIGKILL)  # the worker and its flow run
    _signal(tuning, signal.SIGCONT)
    # The tuning processes notice their run is gone and end: none goes on with its trials.
    _wait(lambda: not any(alive(pid) for pid in worker_tree), 30)
    before = stack.trials()
    finished_before = {number: value for number, (state, value, _) in before.items() if state == "COMPLETE"}
    left_running = {number for number, (state, _, _) in before.items() if state == "RUNNING"}
    assert left_running, "the kill came while trials were running"
    assert "worker-1" in next(line for line in _cli(stack_home, "status").stdout.splitlines() if "not running" in line)
    assert _cli(stack_home, "up", **slow_trials).returncode == 0  # restarts the worker

    second = stack.trigger(trials="2", tuning_workers="2")
    assert stack.finished(second) == "COMPLETED"
    after = stack.trials()
    # The study resumed: every finished trial kept with its value, the dead ones closed, 2 added.
    assert {number: after[number][1] for number in finished_before} == finished_before
    assert all(after[number][0] == "FAIL" and "died" in after[number][2] for number in left_running)
    assert len(after) == len(before) + 2 and "RUNNING" not in {state for state, _, _ in after.values()}
    assert stack.champion() == "1"
    dead = stack.mlflow.search_runs(
        [stack.mlflow.get_experiment_by_name("movierec").experiment_id],
        filter_string=f"attributes.status = 'FAILED' and tags.`prefect.flow_run_id` = '{first}'",
    )
    assert len(dead) == 1 and "died" in dead[0].data.tags["failure.reason"]

    # 2. kill -9 during registration: the moment version 2 exists, before its gate decides.
    third = stack.trigger(trials="0")
    flow_process = stack.flow_process(third)
    deadline = time.monotonic() + 300
    while not any(v.version == "2" for v in stack.mlflow.search_model_versions("name='movierec-lightfm'")):
        assert time.monotonic() < deadline, "no version 2 was registered"
        time.sleep(0.05)
    _signal(tree(flow_process), signal.SIGKILL)
    killed = stack.versions()["2"]
    assert "gate.decision" not in killed["tags"], "the gate decided before the kill"
    assert stack.finished(third) == "CRASHED"  # the worker saw its flow run die
    assert stack.champion() == "1"
    fourth = stack.trigger(trials="0")
    assert stack.finished(fourth) == "COMPLETED"
    versions = stack.versions()
    assert "2" not in versions  # deleted: it never finished the gate
    assert all("gate.decision" in v["tags"] for v in versions.values())
    assert [number for number, v in versions.items() if "champion" in v["aliases"]] == [stack.champion()]

    # 3. PostgreSQL stopped during a run (`movierec pipeline` on the stack's services).
    champion = stack.champion()
    env = own_settings(stack_home, **slow_trials, **exports, PYTHONUNBUFFERED="1")
    pipeline = [sys.executable, "-m", "movierec.cli", "pipeline", "--dataset", "synthetic",
               "--synthetic-ratings", "4000", "--trials", "40"]  # fmt: skip
    count = len(stack.trials())
    run = subprocess.Popen(pipeline, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait(lambda: len(stack.trials()) > count + 1, 300)
    from movierec.settings import Settings
    from movierec.stack import Stack

    Stack(Settings(home=stack_home)).database_down()
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 1, output[-3000:]
    message = output[output.index("error: the run failed because a service it uses failed") :]
    assert "PostgreSQL (the Optuna study storage" in message
    assert _cli(stack_home, "up", **slow_trials).returncode == 0
    assert stack.champion() == champion
    again = _cli(stack_home, "pipeline", "--dataset", "synthetic", "--synthetic-ratings", "4000", "--trials", "1",
                 program=str(Path(sys.executable).parent / "movierec"), **slow_trials, **exports)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    versions = stack.versions()
    assert sum("champion" in v["aliases"] for v in versions.values()) == 1
    assert all("gate.decision" in v["tags"] for v in versions.values())
