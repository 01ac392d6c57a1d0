"""Process set-up (movierec.runtime): the Prefect defaults `configure` gives never override a value
the user set, under any name Prefect reads it from, and Prefect reads the names it sets."""

from __future__ import annotations

import os

import pytest

from movierec import runtime
from movierec.settings import Settings

NAMES = [name for names in runtime.PREFECT_SERVER_DEFAULTS for name in names]


@pytest.fixture
def environ(monkeypatch, tmp_path) -> dict[str, str]:
    """A private copy of the environment, without any of the names configure gives a default."""
    monkeypatch.setenv("MOVIEREC_HOME", str(tmp_path / "home"))
    copy = {key: value for key, value in os.environ.items() if key not in NAMES}
    monkeypatch.setattr(os, "environ", copy)
    return copy


def prefect_settings():
    from prefect.settings import Settings as PrefectSettings

    return PrefectSettings()


def test_configure_sets_the_prefect_server_defaults(environ):
    runtime.configure(Settings())
    assert environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "60"
    server = prefect_settings().server
    assert server.ephemeral.startup_timeout_seconds == 60
    assert server.register_blocks_on_start is False
    assert server.memoize_block_auto_registration is False


def test_a_value_the_user_set_under_any_name_wins(environ):
    environ["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "true"  # Prefect's older name
    environ["PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION"] = "true"
    environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "7"
    runtime.configure(Settings())
    assert "PREFECT_SERVER_REGISTER_BLOCKS_ON_START" not in environ
    assert "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION" not in environ
    server = prefect_settings().server
    assert server.register_blocks_on_start is True
    assert server.memoize_block_auto_registration is True
    assert server.ephemeral.startup_timeout_seconds == 7


def test_no_early_server_once_prefect_is_imported():
    """A process that imported Prefect already (tests, bench/ingest.py) keeps Prefect's own start."""
    import prefect  # noqa: F401

    runtime.start_prefect_api()
    assert runtime._TemporaryServer.process is None
    runtime.use_prefect_api()  # nothing started: nothing to wait for, Prefect's settings untouched
    assert not runtime._TemporaryServer.in_use
