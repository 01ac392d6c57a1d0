"""Load test: our API (`movierec serve`) against `mlflow models serve`, same registered champion.

For each server in turn (one at a time, so they never compete for the CPU): start it on the
champion of the MOVIEREC_HOME given by --home (default .movierec, which `make run` fills), wait
until it answers, warm it up, then run wrk at each concurrency level (default 1, 8, 32; 30 s each)
and stop it.

* ours:   GET /users/{id}/recommendations?k=10
* mlflow: POST /invocations  {"dataframe_records": [{"user_id": <id>, "k": 10}]}

A wrk Lua script rotates over the champion's known user ids (each wrk thread from its own
offset) and reports requests/s, latency p50/p95/p99 and errors: HTTP errors (wrk counts status
>= 400; neither server answers 1xx/3xx) plus socket errors (connect, read, write, timeout).

wrk runs on the same machine and its threads compete with the server for the cores: -t1 at
c=1, -t2 above (wrk needs threads <= connections). On a 2-core machine the figures are therefore
a lower bound for both servers, and the comparison is fair only because both pay the same cost.

Usage: .venv/bin/python bench/load_api.py [--home .movierec] [--duration 30] [--levels 1,8,32]
       [--only ours|mlflow] [--mlflow-workers 1] [--k 10]
Needs wrk (Debian/Ubuntu: apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
MAX_IDS = 5000  # user ids rotated over (a random sample of the known users when there are more)
P99_TARGET_MS = 25.0
THROUGHPUT_TARGET = 3.0

LUA = r"""
-- Rotates over user ids; prints one JSON line of results when done.
local ids = {%(ids)s}
local kind = "%(kind)s"
local k = %(k)d
local threads = {}
local created = 0

function setup(thread)
  thread:set("offset", created * 7919)
  created = created + 1
  table.insert(threads, thread)
end

function init(args)
  counter = offset or 0
  headers = {}
  headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local id = ids[(counter %% #ids) + 1]
  if kind == "ours" then
    return wrk.format("GET", "/users/" .. id .. "/recommendations?k=" .. k)
  end
  return wrk.format("POST", "/invocations", headers,
                    '{"dataframe_records":[{"user_id":' .. id .. ',"k":' .. k .. '}]}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%%d,"duration_us":%%d,"bytes":%%d,"p50_us":%%d,"p95_us":%%d,"p99_us":%%d,"max_us":%%d,' ..
    '"status_errors":%%d,"connect":%%d,"read":%%d,"write":%%d,"timeout":%%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass
class Level:
    connections: int
    threads: int
    requests: int
    rps: float
    p50: float
    p95: float
    p99: float
    http_errors: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.http_errors + self.socket_errors


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def known_user_ids(home: Path) -> tuple[str, list[int]]:
    """The champion's model URI and (a sample of) its known user ids."""
    os.environ["MOVIEREC_HOME"] = str(home)
    from movierec.settings import get_settings
    from movierec.tracking import runs
    from movierec.tracking.registry import Registry
    from movierec.tracking.served_model import load_bundle

    settings = get_settings()
    runs.configure(settings)
    registry = Registry(settings.registered_model_name)
    champion = registry.champion()
    if champion is None:
        sys.exit(
            f"no champion of '{registry.name}' in {settings.tracking_uri}; run `make run` (or movierec pipeline) first"
        )
    uri = f"models:/{registry.name}/{champion.version}"
    ids = [int(user) for user in load_bundle(uri).user_ids]
    if len(ids) > MAX_IDS:
        ids = random.Random(0).sample(ids, MAX_IDS)
    return uri, ids


class Server:
    """A server subprocess in its own process group (mlflow's uvicorn is a grandchild)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict,
        ready_url: str,
        ready_body: dict | None,
        log: Path,
        cwd: Path = REPO,
    ) -> None:
        self.cwd = cwd
        self.name, self.command, self.env, self.ready_url, self.ready_body, self.log_path = (
            name,
            command,
            env,
            ready_url,
            ready_body,
            log,
        )
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.log = open(self.log_path, "w+")
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.cwd
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                data = json.dumps(self.ready_body).encode() if self.ready_body is not None else None
                request = urllib.request.Request(
                    self.ready_url, data=data, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        self.answer = json.loads(response.read())
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.log.seek(0)
        output = self.log.read()[-3000:]
        self.__exit__()
        raise RuntimeError(
            f"{self.name} did not answer {self.ready_url} within 120 s (exit code "
            f"{self.process.poll()}); its output:\n{output}"
        )

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> Level:
    threads = 1 if connections == 1 else 2
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next((line for line in output.splitlines() if line.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    result = json.loads(line.removeprefix("WRK_RESULT "))
    return Level(
        connections=connections,
        threads=threads,
        requests=result["requests"],
        rps=result["requests"] / (result["duration_us"] / 1e6),
        p50=result["p50_us"] / 1000,
        p95=result["p95_us"] / 1000,
        p99=result["p99_us"] / 1000,
        http_errors=result["status_errors"],
        socket_errors=sum(result[key] for key in ("connect", "read", "write", "timeout")),
    )


def bench(server: Server, url: str, script: Path, levels: list[int], seconds: float, warmup: float) -> list[Level]:
    with server:
        print(
            f"{server.name}: up ({' '.join(server.command[:3])} ...); a response: {json.dumps(server.answer)[:160]}...",
            flush=True,
        )
        if warmup > 0:
            run_wrk(url, script, min(8, max(levels)), warmup)
        results = []
        for connections in levels:
            level = run_wrk(url, script, connections, seconds)
            print(
                f"  c={level.connections:<3} t={level.threads}  {level.rps:9.1f} req/s   p50 {level.p50:7.2f} ms   "
                f"p95 {level.p95:7.2f} ms   p99 {level.p99:7.2f} ms   errors {level.errors} "
                f"(HTTP {level.http_errors}, socket {level.socket_errors})   requests {level.requests:,}",
                flush=True,
            )
            results.append(level)
        return results


def ours_available() -> bool:
    result = subprocess.run([str(BIN / "movierec"), "serve", "--help"], capture_output=True, text=True)
    return result.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--home", type=Path, default=REPO / ".movierec", help="MOVIEREC_HOME with a registered champion"
    )
    parser.add_argument("--duration", type=float, default=30, help="seconds per concurrency level")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of unreported load before measuring")
    parser.add_argument("--levels", default="1,8,32", help="comma-separated concurrency levels")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--only", choices=("ours", "mlflow"), help="benchmark one server only")
    parser.add_argument(
        "--mlflow-workers", type=int, default=1, help="uvicorn workers of mlflow models serve (its default: 1)"
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    home = args.home.expanduser().resolve()

    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu) or build it from github.com/wg/wrk")
    model_uri, ids = known_user_ids(home)
    print(
        f"champion {model_uri} in {home}: rotating over {len(ids):,} known user ids; k={args.k}; "
        f"{args.duration:g} s per level, levels {levels}; wrk -t1 at c=1, -t2 above, on the same {os.cpu_count()} cores"
    )

    env = {**os.environ, "MOVIEREC_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(variable, None)
    from movierec.settings import get_settings

    env["MLFLOW_TRACKING_URI"] = get_settings().tracking_uri
    results: dict[str, list[Level]] = {}
    answers: dict[str, list[int]] = {}  # each server's movie ids for user ids[0]
    with tempfile.TemporaryDirectory(prefix="movierec-load-") as folder:
        folder = Path(folder)
        scripts = {}
        for kind in ("ours", "mlflow"):
            scripts[kind] = folder / f"{kind}.lua"
            scripts[kind].write_text(LUA % {"ids": ",".join(map(str, ids)), "kind": kind, "k": args.k})

        if args.only in (None, "ours"):
            if ours_available():
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                server = Server(
                    "movierec serve",
                    [str(BIN / "movierec"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                    env,
                    f"{url}/users/{ids[0]}/recommendations?k={args.k}",
                    None,
                    folder / "ours.log",
                )
                results["ours"] = bench(server, url, scripts["ours"], levels, args.duration, args.warmup)
                answers["ours"] = [item["movie_id"] for item in server.answer["items"]]
            else:
                print("movierec serve: not available (`movierec serve --help` fails); skipped")
        if args.only in (None, "mlflow"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            command = [
                str(BIN / "mlflow"),
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
                "--workers",
                str(args.mlflow_workers),
            ]
            server = Server(
                "mlflow models serve",
                command,
                env,
                f"{url}/invocations",
                {"dataframe_records": [{"user_id": ids[0], "k": args.k}]},
                folder / "mlflow.log",
            )
            results["mlflow"] = bench(server, url, scripts["mlflow"], levels, args.duration, args.warmup)
            answers["mlflow"] = [row["movie_id"] for row in server.answer["predictions"]]

    if "ours" in results and "mlflow" in results:
        print("\ncomparison (ours / mlflow models serve):")
        ratios = {}
        for ours, theirs in zip(results["ours"], results["mlflow"], strict=True):
            ratios[ours.connections] = ours.rps / theirs.rps if theirs.rps else float("inf")
            print(
                f"  c={ours.connections:<3} throughput x{ratios[ours.connections]:.2f}   "
                f"p99 {ours.p99:.2f} ms vs {theirs.p99:.2f} ms   errors {ours.errors} vs {theirs.errors}"
            )
        top = max(levels)
        ours_top = next(level for level in results["ours"] if level.connections == top)
        print(
            f"  p99 < {P99_TARGET_MS:g} ms at c={top}: {'yes' if ours_top.p99 < P99_TARGET_MS else 'NO'} ({ours_top.p99:.2f} ms)"
        )
        print(
            f"  throughput >= {THROUGHPUT_TARGET:g}x at c={top}: {'yes' if ratios[top] >= THROUGHPUT_TARGET else 'NO'} "
            f"(x{ratios[top]:.2f}); at every level: {'yes' if min(ratios.values()) >= THROUGHPUT_TARGET else 'NO'} "
            f"(lowest x{min(ratios.values()):.2f})"
        )
        same = answers["ours"] == answers["mlflow"]
        print(f"  same top-{args.k} for user {ids[0]} from both servers: {'yes' if same else 'NO'}")
        print(
            f"  errors: ours {sum(level.errors for level in results['ours'])}, mlflow {sum(level.errors for level in results['mlflow'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
