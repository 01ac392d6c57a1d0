"""What recording impressions and serving statistics costs the API: `movierec serve` of this
working tree against the same command from a git revision before they existed (default
5195d82, the commit before impressions), on the same champion, with wrk at one concurrency level.

Runs alternate (before, after, before, after, ...) so that drift in the machine's speed hits both
alike; each run starts its server, warms it up, measures `--duration` seconds, and stops it.
Prints every run and then, per side, the median requests/s and p50/p99 latency, and the change
of the median p99 (the target: no more than +10% at c=32).

Usage: .venv/bin/python bench/serving_overhead.py [--home .movierec] [--before 5195d82]
       [--connections 32] [--duration 60] [--repeat 3]
Needs wrk (apt-get install -y wrk) and git.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_api import BIN, LUA, REPO, Server, free_port, known_user_ids, run_wrk

TARGET = 0.10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=REPO / ".movierec", help="MOVIEREC_HOME with a champion")
    parser.add_argument("--before", default="5195d82", help="git revision serving without impressions")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="runs per side")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    home = args.home.expanduser().resolve()
    _, ids = known_user_ids(home)
    from movierec.settings import get_settings

    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "MOVIEREC_"))}
    env.update(MOVIEREC_HOME=str(home), MLFLOW_TRACKING_URI=get_settings().tracking_uri)
    print(
        f"champion of {home}: {len(ids):,} user ids; c={args.connections}, {args.duration:g} s per run, "
        f"{args.repeat} runs per side, alternating; before = {args.before}, after = this working tree"
    )
    with tempfile.TemporaryDirectory(prefix="movierec-overhead-") as folder:
        folder = Path(folder)
        tree = folder / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before], cwd=REPO, check=True,
                       capture_output=True)  # fmt: skip
        try:
            script = folder / "ours.lua"
            script.write_text(LUA % {"ids": ",".join(map(str, ids)), "kind": "ours", "k": args.k})
            sides = {"before": tree, "after": REPO}
            results: dict[str, list] = {side: [] for side in sides}
            for run in range(args.repeat):
                for side, code in sides.items():
                    port = free_port()
                    url = f"http://127.0.0.1:{port}"
                    # `python -m` from the checkout's folder imports that checkout's movierec.
                    command = [str(BIN / "python"), "-m", "movierec.cli", "serve", "--port", str(port)]
                    ready = f"{url}/users/{ids[0]}/recommendations"
                    server = Server(side, command, env, ready, None, folder / f"{side}.log", cwd=code)
                    with server:
                        run_wrk(url, script, args.connections, args.warmup)
                        level = run_wrk(url, script, args.connections, args.duration)
                    results[side].append(level)
                    print(
                        f"  run {run + 1} {side:6s} {level.rps:8.1f} req/s   p50 {level.p50:6.2f} ms   "
                        f"p99 {level.p99:6.2f} ms   errors {level.errors}",
                        flush=True,
                    )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    medians = {
        side: {key: statistics.median(getattr(level, key) for level in levels) for key in ("rps", "p50", "p99")}
        for side, levels in results.items()
    }
    for side, values in medians.items():
        print(
            f"median {side:6s} {values['rps']:8.1f} req/s   p50 {values['p50']:6.2f} ms   p99 {values['p99']:6.2f} ms"
        )
    change = medians["after"]["p99"] / medians["before"]["p99"] - 1
    print(
        f"p99 at c={args.connections}: {medians['before']['p99']:.2f} -> {medians['after']['p99']:.2f} ms "
        f"({change:+.1%}); within +{TARGET:.0%}: {'yes' if change <= TARGET else 'NO'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
