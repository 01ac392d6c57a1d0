"""The installed `movierec` command, as a user runs it: output, exit codes, state on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from published import write_csv_dataset

MOVIEREC = Path(sys.executable).with_name("movierec")


def run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(MOVIEREC), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def env(tmp_path) -> dict:
    return {**os.environ, "MOVIEREC_HOME": str(tmp_path / "home"), "MOVIEREC_DATA_DIR": str(tmp_path / "data")}


def test_help_lists_the_flows(env):
    result = run("--help", env=env)
    assert result.returncode == 0
    for command in ("ingest", "validate", "snapshots", "pipeline"):
        assert command in result.stdout


def test_unknown_dataset_is_a_usage_error(env):
    result = run("ingest", "--dataset", "ml-2m", env=env)
    assert result.returncode == 2
    assert "unknown dataset 'ml-2m'" in result.stderr


@pytest.mark.slow
def test_ingest_then_validate_then_list(env, tmp_path):
    result = run("ingest", "--dataset", "synthetic", "--synthetic-ratings", "3000", "--seed", "5", "--json", env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"]["ratings"] == 3000
    assert Path(summary["path"], "ratings.parquet").is_file()
    assert Path(summary["data_docs"]).is_file()
    assert "Traceback" not in result.stderr

    result = run("validate", "--dataset", "synthetic", env=env)
    assert result.returncode == 0, result.stderr
    assert f"snapshot {summary['snapshot_id']} passed" in result.stderr

    result = run("snapshots", "--dataset", "synthetic", env=env)
    assert summary["snapshot_id"] in result.stderr and "(latest)" in result.stderr


def test_bad_input_exits_1_with_one_readable_error(env, tmp_path, small_raw):
    folder = write_csv_dataset(small_raw, tmp_path / "data" / "ml-latest-small")
    lines = (folder / "ratings.csv").read_bytes().split(b"\r\n")
    user, movie, _, stamp = lines[3].split(b",")
    lines[3] = b",".join([user, movie, b"7.0", stamp])
    (folder / "ratings.csv").write_bytes(b"\r\n".join(lines))

    result = run("ingest", "--dataset", "ml-latest-small", env=env)
    assert result.returncode == 1
    assert "error: validation suite 'raw_ratings' failed" in result.stderr
    assert "e.g. [7.0] at row(s) [3]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "snapshots" / "ml-latest-small").exists()


@pytest.mark.slow
def test_train_prints_held_out_metrics_and_rejects_unknown_models(env):
    assert run("ingest", "--dataset", "synthetic", "--synthetic-ratings", "3000", env=env).returncode == 0
    result = run("train", "--dataset", "synthetic", "--model", "popularity", "--model", "item_knn", env=env)
    assert result.returncode == 0, result.stderr
    assert "NDCG@10" in result.stderr and "item_knn" in result.stderr and "popularity" in result.stderr
    result = run("train", "--dataset", "synthetic", "--model", "magic", env=env)
    assert result.returncode == 2
    assert "unknown model(s) ['magic']" in result.stderr
