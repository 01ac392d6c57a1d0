"""Servers as real subprocesses on free loopback ports, for end-to-end tests: `movierec serve`
(`Server`) and `mlflow models serve` (`mlflow_models_serve`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m movierec.cli serve` with MOVIEREC_HOME=`home`; output goes to `log`."""

    def __init__(self, home: Path, log: Path, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.home, self.log_path = Path(home), Path(log)
        self.extra_env = dict(env or {})
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> Server:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("MOVIEREC_", "MLFLOW_"))}
        env.update(MOVIEREC_HOME=str(self.home), PYTHONUNBUFFERED="1", MOVIEREC_SERVING__POLL_SECONDS="3600")
        env.update(self.extra_env)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open while the server runs; stop() closes it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "movierec.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready within {timeout:g} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9: no shutdown handler runs."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None


@contextmanager
def mlflow_models_serve(
    bin_dir: Path, model_uri: str, env: dict[str, str], log: Path, timeout: float = 120.0
) -> Iterator[str]:
    """`mlflow models serve` of `model_uri` from the environment whose executables are in `bin_dir`
    (its uvicorn is started through a shell, so `bin_dir` goes first on PATH), on a free loopback
    port; yields its URL once /ping answers and stops its whole process group afterwards.
    Raises RuntimeError (with the server's output) when it does not start within `timeout`."""
    port = free_port()
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    with open(log, "w+") as output:
        process = subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: uvicorn is a child
            cwd=log.parent,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    raise RuntimeError(
                        f"mlflow models serve did not start (exit code {process.poll()}):\n{output.read()[-4000:]}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
