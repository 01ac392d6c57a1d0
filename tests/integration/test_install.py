"""A non-editable install of the project (what `pip install .` gives a user) works away from the
repository: expectation suites, the page's static files and every dependency come with it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fresh_env import clean_environment, fresh_venv

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_an_installed_movierec_ingests_synthetic_data_outside_the_repository(tmp_path):
    python = fresh_venv(tmp_path / "venv", packages=(str(REPO),))
    site = subprocess.run(
        [str(python), "-c", "import movierec, expectations; print(movierec.__file__, expectations.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_environment(),
        cwd=tmp_path,  # not the repository: `python -c` puts the working directory first on sys.path
    ).stdout.split()
    assert all(not Path(path).resolve().is_relative_to(REPO) for path in site), site  # not the working tree
    assert (Path(site[0]).parent / "serving" / "static" / "index.html").is_file()

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**clean_environment(), "MOVIEREC_HOME": str(work / "home"), "PREFECT_HOME": str(work / "prefect")}
    done = subprocess.run(
        [str(python.parent / "movierec"), "ingest", "--dataset", "synthetic", "--synthetic-ratings", "3000", "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert summary["rows"]["ratings"] > 2000 and summary["validation"]["canonical"]
    assert all(suite["success"] for stage in summary["validation"].values() for suite in stage.values())
