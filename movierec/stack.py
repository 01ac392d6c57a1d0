"""`movierec stack up|down|status`: the shared services of a production set-up, as processes on
loopback that this module starts, watches and stops (no Docker needed; docker-compose.yml
describes the same topology for those who have it).

  postgres    PostgreSQL initdb'd into <home>/stack/postgres, run as the `postgres` system user
              when this process is root (initdb and postgres refuse root); databases mlflow,
              prefect and optuna owned by role `movierec`, whose password lives in
              <home>/stack/secrets (mode 0600) and reaches clients through a pgpass file
              (PGPASSFILE), never through a URL, a log line or `status`
  mlflow      `mlflow server` on the mlflow database, serving the artifacts it stores under
              <home>/stack/mlartifacts
  prefect     `prefect server start` on the prefect database (PREFECT_HOME <home>/stack/prefect),
              work pool `movierec` (type process) and `stack.workers` process workers
  api         `movierec serve` over the tracking server's registry

Ports come from the `stack` settings; 0 means a free port chosen at the first `up` and kept in
<home>/stack/ports.json, so the addresses stay put across `down` and `up`. Each process runs in
its own session, logs to <home>/stack/logs/<name>.log and has its pid file in
<home>/stack/pids; `down` stops exactly those processes (a pid is trusted only while its command
line is still the one `up` started), PostgreSQL by `pg_ctl stop`, and leaves every file in place.
Workers and the API inherit the caller's environment (MOVIEREC_HOME, MOVIEREC_DATA_DIR, ...)
plus the stack's variables, so a deployment run finds the same data as `movierec pipeline`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from movierec.deploy import ensure_work_pool
from movierec.settings import REPO_ROOT, Settings

HOST = "127.0.0.1"
ROLE = "movierec"
DATABASES = ("mlflow", "prefect", "optuna")
WORK_POOL = "movierec"
BIN = Path(sys.executable).parent


class StackError(RuntimeError):
    """A service cannot be started or reached; the message names it and says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    address: str
    health: str  # "healthy", or what is wrong

    def line(self) -> str:
        return f"{self.name:10s} pid {self.pid or '-':>7}  {self.address:28s} {self.health}"


class Stack:
    def __init__(self, settings: Settings, say: Callable[[str], None] = lambda _: None) -> None:
        self.settings, self.say = settings, say
        self.folder = settings.home / "stack"
        self.logs, self.pids, self.secrets = self.folder / "logs", self.folder / "pids", self.folder / "secrets"
        self.data = self.folder / "postgres"
        self.pgpass = self.secrets / "pgpass"

    # ------------------------------------------------------------------ addresses and environment

    def ports(self) -> dict[str, int]:
        """Each service's port: the setting, else the one chosen at the first `up`."""
        path = self.folder / "ports.json"
        kept = json.loads(path.read_text()) if path.is_file() else {}
        configured = self.settings.stack
        wanted = {
            "postgres": configured.postgres_port,
            "mlflow": configured.mlflow_port,
            "prefect": configured.prefect_port,
            "api": configured.api_port,
        }
        ports = {name: port or kept.get(name) or _free_port() for name, port in wanted.items()}
        if ports != kept:
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ports, indent=2) + "\n")
        return ports

    def exports(self) -> dict[str, str]:
        """What a shell needs to use the stack (no secret: the password is in PGPASSFILE)."""
        ports = self.ports()
        return {
            "MOVIEREC_HOME": str(self.settings.home),
            "MLFLOW_TRACKING_URI": f"http://{HOST}:{ports['mlflow']}",
            "PREFECT_API_URL": f"http://{HOST}:{ports['prefect']}/api",
            "MOVIEREC_TUNING__STORAGE": self.database_url("optuna"),
            "PGPASSFILE": str(self.pgpass),
        }

    def database_url(self, database: str, driver: str = "psycopg2") -> str:
        return database_url(HOST, self.ports()["postgres"], database, driver)

    def _environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API_")}
        env.update(self.exports())
        env.update(
            PREFECT_HOME=str(self.folder / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            MLFLOW_DISABLE_TELEMETRY="true",
            PYTHONUNBUFFERED="1",
        )
        return env

    # ------------------------------------------------------------------ up, down, status

    def up(self) -> dict[str, str]:
        """Start what is not running, wait until each answers; the variables to export."""
        self.database_up()
        ports, env = self.ports(), self._environment()
        commands = topology(ports, host=HOST, database_host=HOST, artifacts=str(self.folder / "mlartifacts"))
        local = {name: [str(BIN / command[0]), *command[1:]] for name, (command, _) in commands.items()}
        variables = {name: {**env, **extra} for name, (_, extra) in commands.items()}
        health = health_urls(ports)
        self._service("mlflow", local["mlflow"], variables["mlflow"], health["mlflow"])
        self._service("prefect", local["prefect"], variables["prefect"], health["prefect"])
        if ensure_work_pool(WORK_POOL, env["PREFECT_API_URL"]):
            self.say(f"created work pool {WORK_POOL} (type process)")
        for number in range(1, self.settings.stack.workers + 1):
            name = f"worker-{number}"
            self._service(name, [*local["worker"], "--name", f"movierec-{name}"], variables["worker"], None)
        self._service("api", local["api"], variables["api"], health["api"])
        return self.exports()

    def down(self) -> list[str]:
        """Stop what `up` started, the API first and PostgreSQL last; what was stopped."""
        stopped = []
        names = ["api", *sorted(path.stem for path in self.pids.glob("worker-*.pid")), "prefect", "mlflow"]
        for name in names:
            pid = self._running(name)
            if pid is not None:
                _terminate(pid)
                stopped.append(f"{name} (pid {pid})")
            (self.pids / f"{name}.pid").unlink(missing_ok=True)
        pid = self.database_down()
        if pid is not None:
            stopped.append(f"postgres (pid {pid})")
        return stopped

    def database_up(self) -> str:
        """PostgreSQL alone (initialised at the first call), with the stack's databases; the Optuna
        storage URL (its password in PGPASSFILE: export `exports()["PGPASSFILE"]`)."""
        for folder in (self.logs, self.pids, self.secrets, self.folder / "mlartifacts", self.folder / "prefect"):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets, 0o700)
        self._postgres_up(self.ports()["postgres"])
        return self.database_url("optuna")

    def database_down(self) -> int | None:
        """Stop PostgreSQL (a fast shutdown: open sessions are cut); the pid it had, or None."""
        pid = self._postgres_pid()
        if pid is not None:
            self._pg(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])
        return pid

    def status(self) -> list[ServiceStatus]:
        ports = self.ports()
        lines = [
            ServiceStatus(
                "postgres",
                self._postgres_pid(),
                f"{HOST}:{ports['postgres']}",
                "healthy" if self._postgres_ready(ports["postgres"]) else "not answering",
            )
        ]
        health = health_urls(ports)
        workers = sorted(path.stem for path in self.pids.glob("worker-*.pid")) if self.pids.is_dir() else []
        expected = [f"worker-{number}" for number in range(1, self.settings.stack.workers + 1)]
        names = ["mlflow", "prefect", *sorted(set(workers) | set(expected)), "api"]
        for name in names:
            url = health.get(name)
            pid = self._running(name)
            if pid is None:
                state = "not running"
            elif url is None:
                state = "running"
            else:
                state = "healthy" if _answers(url) else "not answering"
            address = f"http://{HOST}:{ports[name]}" if url is not None else f"pool {WORK_POOL}"
            lines.append(ServiceStatus(name, pid, address, state))
        return lines

    # ------------------------------------------------------------------ processes

    def _service(self, name: str, command: list[str], env: dict[str, str], health_url: str | None) -> None:
        pid = self._running(name)
        process = None
        if pid is None:
            log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child, closed below
            try:
                process = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, cwd=REPO_ROOT,
                )  # fmt: skip
            finally:
                log.close()
            pid = process.pid
            (self.pids / f"{name}.pid").write_text(json.dumps({"pid": pid, "command": command}) + "\n")
            self.say(f"started {name} (pid {pid}, log {self.logs / f'{name}.log'})")
        else:
            self.say(f"{name} is running (pid {pid})")

        # Until its first answer, a process just started is watched through its handle (its
        # command line is the parent's until it has exec'd).
        def alive() -> bool:
            return process.poll() is None if process is not None else self._running(name) is not None

        deadline = time.monotonic() + self.settings.stack.startup_timeout_seconds
        while health_url is not None and not _answers(health_url):
            if not alive():
                raise StackError(
                    f"{name} exited before answering; see {self.logs / f'{name}.log'}:\n{self._tail(name)}"
                )
            if time.monotonic() > deadline:
                raise StackError(f"{name} did not answer {health_url} in time; see {self.logs / f'{name}.log'}")
            time.sleep(0.5)
        if health_url is None:
            time.sleep(2.0)  # a worker that cannot start (bad pool, no server) exits at once
            if not alive():
                raise StackError(f"{name} exited at once; see {self.logs / f'{name}.log'}:\n{self._tail(name)}")

    def _running(self, name: str) -> int | None:
        """The pid of service `name` if the process `up` started is still that process."""
        path = self.pids / f"{name}.pid"
        if not path.is_file():
            return None
        try:
            recorded = json.loads(path.read_text())
            arguments = Path(f"/proc/{recorded['pid']}/cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError, KeyError):
            return None
        # A console script runs as `python <script> ...`: its own arguments must all be there.
        return recorded["pid"] if all(argument in arguments for argument in recorded["command"][1:]) else None

    def _tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""

    # ------------------------------------------------------------------ PostgreSQL

    def _postgres_up(self, port: int) -> None:
        if not (self.data / "PG_VERSION").is_file():
            self._initdb()
        if self._postgres_pid() is None:
            # Keepalives: a client whose machine died (holding the retrain lock) is dropped in ~1 min.
            options = (
                f"-c listen_addresses={HOST} -p {port} -c unix_socket_directories={self.data} "
                "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
            )
            self._pg(["pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-w", "-t", "60",
                      "-o", options, "start"])  # fmt: skip
            self.say(f"started postgres on {HOST}:{port} (data {self.data})")
        else:
            self.say(f"postgres is running (pid {self._postgres_pid()})")
        self._write_pgpass(port)
        deadline = time.monotonic() + self.settings.stack.startup_timeout_seconds
        while not self._postgres_ready(port):
            if time.monotonic() > deadline:
                raise StackError(f"PostgreSQL does not answer on {HOST}:{port}; see {self.data / 'server.log'}")
            time.sleep(0.5)
        existing = self._psql(port, "SELECT datname FROM pg_database").split()
        for database in DATABASES:
            if database not in existing:
                self._psql(port, f'CREATE DATABASE "{database}" OWNER {ROLE}')
                self.say(f"created database {database}")

    def _initdb(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data, 0o700)
        password = secrets.token_urlsafe(24)
        secret = self.secrets / "postgres-password"
        secret.write_text(password + "\n")
        os.chmod(secret, 0o600)
        initial = self.folder / ".initdb-password"  # initdb reads it (as the postgres user); removed after
        initial.write_text(password + "\n")
        os.chmod(initial, 0o600)
        if os.geteuid() == 0:
            self._check_reachable()
            shutil.chown(self.data, "postgres", "postgres")
            shutil.chown(initial, "postgres", "postgres")
        try:
            self._pg(["initdb", "-D", str(self.data), "-U", ROLE, f"--pwfile={initial}", "--auth=scram-sha-256",
                      "-E", "UTF8", "--locale=C"])  # fmt: skip
        finally:
            initial.unlink(missing_ok=True)
        self.say(f"initialised a PostgreSQL cluster in {self.data}")

    def _check_reachable(self) -> None:
        """The postgres user must be able to walk down to the data folder."""
        for folder in reversed(self.data.parents):
            mode = folder.stat()
            if not mode.st_mode & stat.S_IXOTH:
                raise StackError(
                    f"PostgreSQL runs as the postgres user, which cannot enter {folder} (mode "
                    f"{stat.filemode(mode.st_mode)}): allow it (chmod o+x {folder}) or choose a MOVIEREC_HOME "
                    "it can reach (e.g. under /srv or /var/tmp)"
                )

    def _pg(self, command: list[str]) -> str:
        binary = postgres_bin() / command[0]
        full = [str(binary), *command[1:]]
        if os.geteuid() == 0:
            full = ["runuser", "-u", "postgres", "--", *full]
        result = subprocess.run(full, capture_output=True, text=True, cwd="/")
        if result.returncode != 0:
            raise StackError(f"{command[0]} failed: {(result.stderr or result.stdout).strip()}")
        return result.stdout

    def _psql(self, port: int, sql: str) -> str:
        command = [str(postgres_bin() / "psql"), "-h", HOST, "-p", str(port), "-U", ROLE, "-d", "postgres", "-Atc", sql]
        result = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "PGPASSFILE": str(self.pgpass)}
        )
        if result.returncode != 0:
            raise StackError(f"PostgreSQL on {HOST}:{port}: {result.stderr.strip()}")
        return result.stdout

    def _write_pgpass(self, port: int) -> None:
        password = (self.secrets / "postgres-password").read_text().strip()
        self.pgpass.write_text(f"{HOST}:{port}:*:{ROLE}:{password}\n")
        os.chmod(self.pgpass, 0o600)  # libpq ignores a password file others can read

    def _postgres_pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def _postgres_ready(self, port: int) -> bool:
        try:
            binary = postgres_bin() / "pg_isready"
        except StackError:
            return False
        return subprocess.run([str(binary), "-h", HOST, "-p", str(port), "-q"], check=False).returncode == 0


def database_url(host: str, port: int, database: str, driver: str = "psycopg2") -> str:
    """A SQLAlchemy URL of a stack database, without password (clients read PGPASSFILE)."""
    return f"postgresql+{driver}://{ROLE}@{host}:{port}/{database}"


def topology(
    ports: dict[str, int], *, host: str, database_host: str, artifacts: str
) -> dict[str, tuple[list[str], dict]]:
    """Each service's command (program name first) and its own environment variables: what `up`
    runs here and what docker-compose.yml runs in containers (tests/code/test_compose.py holds
    them to it). `host`: the address services bind; `database_host`: where PostgreSQL is."""
    return {
        "mlflow": (
            ["mlflow", "server", "--host", host, "--port", str(ports["mlflow"]),
             "--backend-store-uri", database_url(database_host, ports["postgres"], "mlflow"),
             "--artifacts-destination", artifacts, "--workers", "1"],
            # Its job runner (GenAI evaluation jobs, unused here) would add eight processes.
            {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        ),
        "prefect": (
            ["prefect", "server", "start", "--host", host, "--port", str(ports["prefect"])],
            {"PREFECT_API_DATABASE_CONNECTION_URL": database_url(database_host, ports["postgres"], "prefect", "asyncpg")},
        ),
        "worker": (["prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process"], {}),
        "api": (["movierec", "serve", "--host", host, "--port", str(ports["api"])], {}),
    }  # fmt: skip


def health_urls(ports: dict[str, int]) -> dict[str, str]:
    """The health check of each HTTP service of the stack (workers have none)."""
    return {
        "mlflow": f"http://{HOST}:{ports['mlflow']}/health",
        "prefect": f"http://{HOST}:{ports['prefect']}/api/health",
        "api": f"http://{HOST}:{ports['api']}/healthz",
    }


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs (Debian keeps them out of PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
    for folder in [*reversed(candidates), *(Path(p) for p in os.environ.get("PATH", "").split(os.pathsep))]:
        if (folder / "pg_ctl").is_file() and (folder / "initdb").is_file():
            return folder
    raise StackError(
        "PostgreSQL is not installed: run scripts/install-postgresql.sh as root (apt-get install -y postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _terminate(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM to the service's process group (its children too), SIGKILL after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
