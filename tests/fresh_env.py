"""A fresh virtual environment with only the given requirements: the served model must need
nothing else. Installed with uv when present (from its cache), else with pip; every package is
pinned to the version this test environment has, so the new environment resolves like this one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# The project itself, under any of its names, must never be in the fresh environment.
PROJECT = {"movierec"}


def constraints(folder: Path) -> Path:
    pins = sorted(
        {f"{dist.metadata['Name']}=={dist.version}" for dist in metadata.distributions() if dist.metadata["Name"]}
    )
    path = folder / "constraints.txt"
    path.write_text("\n".join(pin for pin in pins if pin.split("==")[0].lower() not in PROJECT) + "\n")
    return path


def clean_environment() -> dict[str, str]:
    """os.environ without what would point a child at this project's environment."""
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(
        part for part in env.get("PATH", "").split(os.pathsep) if Path(part) != Path(sys.executable).parent
    )
    return env


def fresh_venv(folder: Path, requirements: Path | None = None, *, packages: tuple[str, ...] = ()) -> Path:
    """Create a virtualenv in `folder` with exactly `requirements` (a requirements file) and/or
    `packages` (pip arguments: names, paths), and their dependencies; return its python."""
    env = clean_environment()
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    python = folder / "bin" / "python"
    if Path(uv).is_file():
        subprocess.run(
            [uv, "venv", "--quiet", "--python", sys.executable, str(folder)], check=True, env=env, capture_output=True
        )
        install = [uv, "pip", "install", "--quiet", "--python", str(python)]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, env=env, capture_output=True)
        install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    wanted = [*(["-r", str(requirements)] if requirements else []), *packages]
    done = subprocess.run(
        [*install, *wanted, "-c", str(constraints(folder.parent))], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"installing {wanted} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return python
