"""Two `movierec pipeline` runs started together on an empty home: they take turns (one says it
is waiting), the second's gate compares against the first's champion, the registry ends with
exactly one champion and no "first model" twice; `--no-wait` fails fast while a run is going."""

from __future__ import annotations

import time

import pytest
from cli_runs import start_pipeline
from mlflow.tracking import MlflowClient

from movierec.runlock import holder

pytestmark = pytest.mark.slow


def test_two_runs_on_one_home_take_turns_and_leave_one_champion(tmp_path):
    home = tmp_path / "home"
    runs = [start_pipeline(home, "--trials", "1"), start_pipeline(home, "--trials", "1")]
    # While one of them runs, a third that will not wait fails at once, naming the holder.
    deadline = time.monotonic() + 120
    while holder(home) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    impatient = start_pipeline(home, "--trials", "1", "--no-wait")
    out, _ = impatient.communicate(timeout=120)
    assert impatient.returncode == 1, out
    assert "is using" in out and "pipeline synthetic" in out and "--no-wait" in out

    outputs = []
    for run in runs:
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0, out[-3000:]
        outputs.append(out)
    assert sum("waiting for run 'pipeline synthetic'" in out for out in outputs) == 1, outputs

    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    versions = sorted(client.search_model_versions("name = 'movierec-lightfm'"), key=lambda v: int(v.version))
    assert [str(v.version) for v in versions] == ["1", "2"]
    reasons = [v.tags["gate.reason"] for v in versions]
    assert sum("first model" in reason for reason in reasons) == 1 and "first model" in reasons[0]
    assert versions[1].tags["gate.champion_version"] == "1"
    champion = client.get_model_version_by_alias("movierec-lightfm", "champion")
    assert str(champion.version) in {"1", "2"}
