"""`movierec.deploy` registers the deployments of prefect.yaml with the Prefect API."""

from __future__ import annotations

from pathlib import Path

import pytest

from movierec.deploy import DeployError, api_url, deploy

REPO = Path(__file__).resolve().parents[2]
PREFECT_FILE = REPO / "prefect.yaml"
FULL_NAMES = ["retrain/retrain-weekly", "retrain/retrain-manual", "monitor/monitor-daily"]


def _read_back() -> tuple[object, dict[str, object]]:
    """The `movierec` pool and the deployments of flows `retrain` and `monitor` in it, by name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, WorkPoolFilter, WorkPoolFilterName
    from prefect.client.schemas.sorting import DeploymentSort

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("movierec")
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain", "monitor"])),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=["movierec"])),
            limit=50,  # the sync client sends null otherwise, which the server refuses (422)
            sort=DeploymentSort.NAME_ASC,
        )
    by_name = {d.name: d for d in deployments}
    assert len(by_name) == len(deployments)
    return pool, by_name


@pytest.mark.usefixtures("prefect_api")
def test_deploy_registers_every_deployment_idempotently(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the file's directory, not the caller's, anchors the entrypoints
    assert deploy(PREFECT_FILE) == FULL_NAMES
    assert Path.cwd() == tmp_path

    pool, deployments = _read_back()
    assert pool.type == "process"
    assert set(deployments) == {"retrain-weekly", "retrain-manual", "monitor-daily"}

    weekly, manual, daily = deployments["retrain-weekly"], deployments["retrain-manual"], deployments["monitor-daily"]
    for deployment in (weekly, manual):
        assert deployment.entrypoint == "flows/retrain.py:retrain"
        assert deployment.work_pool_name == "movierec"
        assert set(deployment.tags) == {"movierec", "retrain"}
        assert deployment.description
        # The worker changes into this checkout before each run.
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        assert {"dataset", "trials", "timeout"} <= set(deployment.parameter_openapi_schema["properties"])
    assert weekly.parameters == {"dataset": "ml-latest-small", "trials": 20}
    assert manual.parameters == {}

    assert len(weekly.schedules) == 1
    schedule = weekly.schedules[0]
    assert schedule.active
    assert schedule.schedule.cron == "0 3 * * 1"
    assert schedule.schedule.timezone == "UTC"
    assert manual.schedules == []

    assert daily.entrypoint == "flows/monitor.py:monitor" and daily.work_pool_name == "movierec"
    assert set(daily.tags) == {"movierec", "monitoring"} and daily.parameters == {}
    assert "since" in daily.parameter_openapi_schema["properties"]
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in daily.schedules] == [("0 6 * * *", "UTC", True)]

    # Again: the same deployments, updated in place, still one schedule each.
    ids = {name: d.id for name, d in deployments.items()}
    assert deploy(PREFECT_FILE) == FULL_NAMES
    _, again = _read_back()
    assert {name: d.id for name, d in again.items()} == ids
    assert len(again["retrain-weekly"].schedules) == len(again["monitor-daily"].schedules) == 1
    assert again["retrain-manual"].schedules == []


@pytest.mark.usefixtures("prefect_api")
def test_deploy_selects_by_name_and_rejects_unknown_names():
    assert deploy(PREFECT_FILE, names=["retrain/retrain-manual"]) == ["retrain/retrain-manual"]
    with pytest.raises(
        DeployError, match="no deployment named retrain-daily; it defines retrain-weekly, retrain-manual, monitor-daily"
    ):
        deploy(PREFECT_FILE, names=["retrain-daily"])


@pytest.mark.usefixtures("prefect_api")
def test_work_pool_override_creates_the_pool_and_code_comes_from_the_files_directory(tmp_path):
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(PREFECT_FILE.read_text().replace("- name: retrain-manual", "- name: retrain-elsewhere"))
    (tmp_path / "flows").symlink_to(REPO / "flows")
    assert deploy(prefect_file, work_pool="movierec-other", names=["retrain-elsewhere"]) == [
        "retrain/retrain-elsewhere"
    ]

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert client.read_work_pool("movierec-other").type == "process"
        deployment = client.read_deployment_by_name("retrain/retrain-elsewhere")
    assert deployment.work_pool_name == "movierec-other"
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(tmp_path)}}]


def test_without_an_api_url_the_error_says_to_start_a_server(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(RuntimeError, match="no Prefect API URL") as caught,
    ):
        deploy(PREFECT_FILE)
    message = str(caught.value)
    assert "scripts/prefect-server.sh" in message and "export PREFECT_API_URL=" in message


def test_api_url_is_returned_when_configured():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert api_url() == "http://127.0.0.1:9/api"


def test_an_unreachable_server_is_reported():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    unreachable = pytest.raises(DeployError, match=r"the Prefect API at http://127\.0\.0\.1:9/api does not answer")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}), unreachable:
        deploy(PREFECT_FILE)


def test_a_bad_file_is_named(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    bad = tmp_path / "prefect.yaml"
    bad.write_text("deployments:\n  - name: x\n")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with pytest.raises(DeployError, match=r"deployments\[0\]: `entrypoint` is missing"):
            deploy(bad)
        with pytest.raises(DeployError, match="no such file"):
            deploy(tmp_path / "missing.yaml")
